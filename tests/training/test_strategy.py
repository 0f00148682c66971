import json
import time

import pytest
import tensorflow as tf

from keras_transformer.training import STRATEGY_NAMES
from keras_transformer.training import get_strategy
from keras_transformer.training import local_tpu_evidence
from keras_transformer.training import strategy as strategy_module
from tests.training.conftest import free_port


@pytest.fixture
def no_tpu_environment(monkeypatch):
    for name in strategy_module.TPU_ENVIRONMENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if local_tpu_evidence() is not None:
        pytest.skip(f"This machine has a TPU: {local_tpu_evidence()}")


def test_unknown_name_lists_the_allowed_names():
    with pytest.raises(ValueError, match="auto.*tpu.*mirrored.*multiworker.*default"):
        get_strategy("bogus")
    assert set(STRATEGY_NAMES) == {"auto", "tpu", "mirrored", "multiworker", "default"}
    with pytest.raises(ValueError, match="only applies to the 'mirrored'"):
        get_strategy("default", devices=["/cpu:0"])


def test_tpu_without_a_tpu_fails_fast(no_tpu_environment):
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="No TPU found on this machine"):
        get_strategy("tpu")
    assert time.monotonic() - start < 30  # measured: ~1 ms


def test_unreachable_tpu_address_fails_fast():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="Cannot reach the TPU worker"):
        get_strategy("tpu", tpu=f"grpc://127.0.0.1:{free_port()}")
    assert time.monotonic() - start < 30
    with pytest.raises(ValueError, match="grpc://host:port"):
        get_strategy("tpu", tpu="grpc://nohostport")


def test_named_tpu_that_cannot_be_resolved_fails_fast():
    # Resolved through the GCE metadata server: no DNS name here, a 10 s
    # socket timeout on GCE-like networks that do not answer.
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="Could not initialize.*tpu='no-such-tpu'"):
        get_strategy("tpu", tpu="no-such-tpu")
    assert time.monotonic() - start < 30


def test_tpu_claimed_by_the_environment_but_absent_fails_fast(workers):
    # The real TensorFlow path: resolver, connect, initialize_tpu_system.
    result = workers.result("mirrored")["tpu"]
    assert "Could not initialize the TPU system" in result["error"]
    assert result["seconds"] < 30  # measured: ~0.6 s


def test_default_and_auto_without_accelerators(no_tpu_environment):
    assert get_strategy("default") is tf.distribute.get_strategy()
    strategy = get_strategy("auto")
    if len(tf.config.list_logical_devices("GPU")) <= 1:
        assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync >= 1


def test_multiworker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the `TF_CONFIG`"):
        get_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        get_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {}}))
    with pytest.raises(ValueError, match='"task" object'):
        get_strategy("multiworker")


def test_multiworker_from_tf_config(workers):
    result = workers.result("multiworker")
    assert result == {"replicas": 1, "type": "CollectiveAllReduceStrategy"}


def test_mirrored_on_two_logical_cpus_matches_one_device(workers):
    result = workers.result("mirrored")
    assert result["type"] == "MirroredStrategy" and result["replicas"] == 2
    assert "Unknown devices ['/cpu:7']" in result["unknown_device_error"]
    # Global token mean: same losses, metrics and weights as on one device,
    # although one replica holds 4 tokens and the other 24.
    assert result["ours"]["loss"] < 1e-5
    assert result["ours"]["accuracy"] < 1e-6
    assert result["ours"]["weights"] < 1e-5
    # The same for a tiny Transformer (dropout 0: replicas draw their own
    # dropout masks; SGD: see distributed_worker.py on Adam and key biases).
    assert result["transformer"]["loss"] < 1e-5
    assert result["transformer"]["weights"] < 1e-5
    # Again with 640 target rows per replica (the feed-forward networks skip
    # the padded ones there; measured 2e-7 and 6e-8).
    assert result["transformer_long"]["loss"] < 1e-5
    assert result["transformer_long"]["weights"] < 1e-5
    # Keras's masked loss averages per-replica means: it drifts (measured 0.17).
    assert result["keras"]["weights"] > 1e-2


def test_trainer_under_mirrored_on_two_logical_cpus(workers):
    """`train --strategy mirrored` end to end, validation included: its last
    batch is split unevenly across the 2 replicas (Keras 3.15 alone fails
    there, see `models.replica_build.symbolic_build_from_one_replica`)."""
    trainer = workers.result("mirrored_trainer")
    assert (trainer["strategy"], trainer["replicas"]) == ("MirroredStrategy", 2)
    assert trainer["steps"] > 0
    assert trainer["valid_loss"] == trainer["valid_loss"]  # not NaN


def test_bleu_callback_under_mirrored_on_two_logical_cpus(workers):
    """The BLEU callback translates with the bucketed XLA path while the model's
    variables are mirrored on 2 replicas: its hypotheses are the saved
    model's on one device without XLA, and `valid_bleu` is their BLEU."""
    trainer = workers.result("mirrored_trainer")
    bleu = trainer["bleu"]
    assert bleu["sources"] == 2  # demo:150 has 2 validation pairs (8 asked)
    assert len(bleu["hypotheses"]) == 2
    assert bleu["hypotheses"] == bleu["expected"]
    assert 0 <= trainer["valid_bleu"] <= 100  # False for NaN: it was computed
    assert trainer["valid_bleu"] == pytest.approx(bleu["expected_bleu"], abs=1e-9)
