"""examples/wmt end to end, offline: prepare, train, resume, average, evaluate, export.

The real scripts' `main(argv)` run in-process on `tfds.testing.mock_data`
(random strings in place of WMT 2014) with a one-layer model, a ~100-piece
vocabulary and a few steps.
"""

import math
import sys
import types
import uuid

import h5py
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_transformer.training.checkpoints import checkpoint_step
from keras_transformer.training.checkpoints import list_step_checkpoints
from keras_transformer.training.trainer import SetupError
from tests.examples import EXAMPLES_DIR
from tests.examples import load_example

sys.path.insert(0, str(EXAMPLES_DIR / "wmt"))
import wmt_common  # noqa: E402

prepare = load_example("wmt/prepare")
train = load_example("wmt/train")
average = load_example("wmt/average")
evaluate = load_example("wmt/evaluate")
export = load_example("wmt/export")

DATA = ["--vocab-size", "100", "--vocab-sample", "400", "--batch-tokens", "96",
        "--max-length", "24"]  # fmt: skip
TINY = ["--preset", "tiny", "--num-layers", "1", "--d-model", "32", "--d-ff",
        "64", "--num-heads", "2", *DATA, "--no-jit-compile", "--verbose", "0",
        "--steps-per-checkpoint", "1"]  # fmt: skip
MOCK_EXAMPLES = 48


def listed_checkpoints(model_dir):
    """`[(step, path)]` of DIR/checkpoints/ckpt-N.weights.h5, as the scripts list them."""
    return list_step_checkpoints(
        wmt_common.checkpoint_dir(model_dir), wmt_common.CHECKPOINT_PATTERN
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Runs every script once on one model directory; returns their results."""
    model_dir = str(tmp_path_factory.mktemp("wmt") / "model")
    results = {"model_dir": model_dir}
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        results["prepare"] = prepare.main(
            ["--model-dir", model_dir, *DATA, "--report-batches", "10"]
        )
        results["train"] = train.main(
            ["--model-dir", model_dir, *TINY, "--train-steps", "2"]
        )
        results["weights_2"] = [
            np.array(w) for w in results["train"]["model"].get_weights()
        ]
        # Re-running the same command with more steps resumes at step 2;
        # here on the mirrored strategy (one CPU replica), in mixed_bfloat16.
        results["resume"] = train.main(
            [
                "--model-dir",
                model_dir,
                *TINY,
                "--train-steps",
                "4",
                "--strategy",
                "mirrored",
                "--bf16",
                "--no-validation",
                "--keep-checkpoints",
                "3",
            ]  # fmt: skip
        )
        results["again"] = train.main(
            ["--model-dir", model_dir, *TINY, "--train-steps", "4"]
        )
    results["average"] = average.main(["--model-dir", model_dir, "--last", "3"])
    results["evaluate"] = evaluate.main(
        ["--model-dir", model_dir, "--max-sentences", "5", "--mock-examples", "8"]
    )
    results["export"] = export.main(["--model-dir", model_dir])
    return results


def test_prepare_writes_the_shared_vocabulary(run):
    from keras_transformer.text import load_vocabularies

    result = run["prepare"]
    source, target = load_vocabularies(result["vocabulary"])
    assert source is target  # shared, as the paper's
    assert 4 < source.vocab_size <= 100 and result["vocab_size"] == source.vocab_size
    ids = source.encode(["abc def"])[0]
    assert ids and source.decode([ids]) == ["abc def"]
    report = result["batches"]
    assert report["batches"] == 10 and report["max_padded_tokens"] <= 96
    assert 0.0 <= report["padding_source"] < 1.0
    config = wmt_common.load_config(run["model_dir"])
    assert config["direction"] == "en-de" and config["vocab_size"] == 100


def test_training_writes_checkpoints_and_logs(run):
    result, model_dir = run["train"], run["model_dir"]
    assert result["start_step"] == 0 and result["step"] == 2
    assert all(math.isfinite(v) for v in result["history"]["loss"])
    assert len(result["history"]["val_loss"]) == 2  # newstest2013 loss
    assert [checkpoint_step(p) for p in result["checkpoints"]] == [1, 2]
    logs = wmt_common.join(model_dir, "logs")
    assert tf.io.gfile.glob(wmt_common.join(logs, "train", "events.out.*"))
    config = wmt_common.load_config(model_dir)
    assert config["preset"] == "tiny" and config["model"]["d_model"] == 32


def test_rerun_resumes_from_the_latest_checkpoint(run):
    resumed = run["resume"]
    assert resumed["start_step"] == 2 and resumed["step"] == 4
    assert len(resumed["history"]["loss"]) == 2  # steps 3 and 4 only
    steps = [step for step, _ in listed_checkpoints(run["model_dir"])]
    assert steps == [2, 3, 4]  # --keep-checkpoints 3 removed ckpt-1
    # Step 2's checkpoint holds the weights the first run ended with.
    model = wmt_common.inference_model(
        wmt_common.load_config(run["model_dir"]), resumed["tokenizer"]
    )
    wmt_common.load_weights(model, wmt_common.checkpoint_path(run["model_dir"], 2))
    for loaded, trained in zip(model.get_weights(), run["weights_2"]):
        np.testing.assert_array_equal(loaded, trained)
    # Nothing left to do at --train-steps 4.
    assert run["again"]["start_step"] == 4 and run["again"]["history"] == {}


def test_rerun_with_another_model_is_refused(run, tmp_path):
    with pytest.raises(SetupError, match="d_model"):
        train.main(["--model-dir", run["model_dir"], *TINY, "--d-model", "16"])


def test_average_of_the_last_checkpoints(run):
    result, model_dir = run["average"], run["model_dir"]
    assert result["steps"] == [2, 3, 4]
    paths = [wmt_common.checkpoint_path(model_dir, s) for s in (2, 3, 4)]
    with h5py.File(result["weights"]) as averaged:
        name = next(
            n for n in _datasets(averaged) if "embedding" in n and "optimizer" not in n
        )
        values = []
        for path in paths:
            with h5py.File(path) as checkpoint:
                values.append(checkpoint[name][()])
        expected = np.mean(values, axis=0)
        np.testing.assert_allclose(averaged[name][()], expected, rtol=1e-6)
    import keras

    loaded = keras.saving.load_model(result["model"])  # the averaged model
    assert loaded.count_params() == run["train"]["model"].count_params()


def _datasets(file):
    names = []
    file.visititems(lambda n, item: names.append(n) if hasattr(item, "shape") else None)
    return names


def test_evaluate_reports_both_bleu_scores(run):
    scores = run["evaluate"]
    assert scores["sentences"] == 5 and scores["test_set"] == "newstest2014"
    for key in ("sacrebleu", "tokenized_bleu", "chrf"):
        assert math.isfinite(scores[key]) and 0.0 <= scores[key] <= 100.0
    assert "tok:13a" in scores["sacrebleu_signature"]
    assert "tok:none" in scores["tokenized_bleu_signature"]
    assert scores["weights"].endswith("averaged.weights.h5")
    with tf.io.gfile.GFile(scores["translations_file"]) as f:
        assert len(f.read().splitlines()) == 5
    assert wmt_common.read_json(scores["scores_file"])["beam_size"] == 4


def test_exported_translator_loads_and_translates(run):
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops)

    path = run["export"]["path"]
    assert tf.io.gfile.exists(wmt_common.join(path, "saved_model.pb"))
    assert tf.io.gfile.exists(
        wmt_common.join(path, "assets.extra", "tf_serving_warmup_requests")
    )
    loaded = tf.saved_model.load(path)
    outputs = loaded.signatures["serving_default"](
        sentences=tf.constant(["abc def", "", "ghij a b"])
    )
    translations = outputs["translations"].numpy()
    assert translations.shape == (3,) and translations[1] == b""
    assert np.isfinite(outputs["scores"].numpy()).all()


def test_no_tpu_fails_fast_with_one_line(tmp_path, capsys):
    status = wmt_common.run_cli(
        train.main,
        ["--model-dir", str(tmp_path), "--strategy", "tpu", *TINY],
        prog="train.py",
    )
    if status == 0:  # pragma: no cover - only on a machine with a TPU
        pytest.skip("this machine has a TPU")
    assert status == 2
    assert "TPU" in capsys.readouterr().err


def test_average_and_evaluate_need_a_trained_directory(tmp_path, capsys):
    assert wmt_common.run_cli(average.main, ["--model-dir", str(tmp_path)]) == 2
    assert "train.py" in capsys.readouterr().err


@pytest.mark.parametrize(
    "start, train_steps, interval, expected",
    [
        (0, 100_000, 1000, (0, 100, 1000)),
        (2, 4, 1, (2, 2, 1)),
        (4, 5, 2, (2, 1, 1)),  # one short interval: steps 5
        (3, 10, 4, (0, 2, 3)),  # resumed off an interval boundary: 4..7, 8..10
    ],
)
def test_plan_epochs(start, train_steps, interval, expected):
    assert train.plan_epochs(start, train_steps, interval) == expected


def test_stop_at_step_ends_the_short_last_interval():
    stop = train.StopAtStep(epoch=3, steps=2)
    model = types.SimpleNamespace(stop_training=False)
    stop.set_model(model)
    stop.on_epoch_begin(2)
    stop.on_train_batch_end(4)
    assert not model.stop_training
    stop.on_epoch_begin(3)
    stop.on_train_batch_end(0)
    assert not model.stop_training
    stop.on_train_batch_end(1)
    assert model.stop_training


def test_a_model_directory_on_another_file_system(run):
    # `ram://` stands in for `gs://`: every file goes through tf.io.gfile,
    # and what the library only reads or writes locally is copied.
    remote = f"ram://wmt-test-{uuid.uuid4().hex}/model"
    wmt_common.upload_tree(run["model_dir"], remote)
    steps = [step for step, _ in listed_checkpoints(remote)]
    assert steps == [2, 3, 4]
    result = average.main(["--model-dir", remote, "--last", "2"])
    assert result["steps"] == [3, 4]
    assert tf.io.gfile.exists(result["weights"]) and tf.io.gfile.exists(result["model"])
    model, tokenizer, path = wmt_common.load_trained(remote, "averaged")
    assert path == result["weights"] and model.count_params() > 0
    wmt_common.save_weights(model, wmt_common.checkpoint_path(remote, 9))
    assert listed_checkpoints(remote)[-1][0] == 9
    assert not tf.io.gfile.glob(wmt_common.join(remote, "checkpoints", "*.partial"))
