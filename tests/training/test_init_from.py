"""Fine-tuning (`train --init-from MODEL_DIR`): it starts from the trained
weights and vocabulary, keeps the architecture, and learns the new data.

`small_model_dir` (tests/conftest.py) is only read: the fine-tuning runs
write their own directories.
"""

import dataclasses
import filecmp
import os

import keras
import numpy as np
import pytest
from num2words import num2words

from keras_transformer import cli
from keras_transformer import data
from keras_transformer import model_directory as layout
from keras_transformer.text import load_vocabularies
from keras_transformer.training import trainer
from keras_transformer.training.config import TrainConfig
from keras_transformer.training.losses import LabelSmoothedCrossEntropy


@pytest.fixture(scope="module")
def new_data(tmp_path_factory):
    """Odd numbers from 401: not in `small_model_dir`'s (even, < 400) data."""
    path = tmp_path_factory.mktemp("new_data") / "new.tsv"
    lines = [f"{num2words(n)}\t{num2words(n, lang='de')}" for n in range(401, 561, 2)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _batch(model_dir, tsv, size=16):
    """The first batch of `tsv` (in file order) with `model_dir`'s vocabulary."""
    source, target = load_vocabularies(layout.path(model_dir, layout.VOCABULARY_DIR))
    dataset = data.make_dataset(
        data.parse_spec(f"tsv:{tsv}"),
        source.tokenize,
        target.tokenize,
        batch_size=size,
        shuffle=False,
        drop_remainder=False,
    )
    return next(iter(dataset))


def _loss(model, batch):
    inputs, labels = batch
    logits = model(inputs, training=False)
    return float(LabelSmoothedCrossEntropy(label_smoothing=0.1)(labels, logits))


def _trained(model_dir):
    return keras.saving.load_model(layout.path(model_dir, layout.MODEL_FILE))


def test_fine_tuning_starts_from_the_trained_model(small_model_dir, new_data, tmp_path):
    config = TrainConfig(
        train=f"tsv:{new_data}",
        output=str(tmp_path / "tuned"),
        init_from=str(small_model_dir),
        vocab_size=9999,  # unused: the vocabulary is the initial model's
        dropout=0.2,  # dropout rates may change
    )
    tokenizers, new = trainer._vocabularies(config, data.parse_spec(config.train))
    assert new and tokenizers[0].vocab_size < 9999
    model = trainer.build_model(config, *tokenizers)
    trained = _trained(small_model_dir)
    assert model.get_config()["dropout"] == 0.2
    assert model.count_params() == trained.count_params()
    batch = _batch(small_model_dir, new_data)
    # The first batch's loss is the trained model's, not a new model's.
    assert _loss(model, batch) == pytest.approx(_loss(trained, batch), rel=1e-6)
    fresh = trainer.build_model(
        TrainConfig(train="demo", output="unused", vocab_size=80), *tokenizers
    )
    assert abs(_loss(fresh, batch) - _loss(trained, batch)) > 0.1
    # A new optimizer: no update made yet.
    assert int(model.optimizer.iterations.numpy()) == 0


def test_fine_tuning_learns_the_new_data(small_model_dir, new_data, tmp_path, capsys):
    output = tmp_path / "tuned"
    code = cli.main([
        "train", "--init-from", str(small_model_dir), "--train", f"tsv:{new_data}",
        "--output", str(output), "--epochs", "1", "--steps-per-epoch", "12",
        "--batch-size", "16", "--warmup-steps", "5", "--learning-rate-scale",
        "0.3", "--bleu-sentences", "0", "--checkpoint-every", "0", "--no-jit",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    # The initial model's vocabulary, copied.
    for name in os.listdir(layout.path(small_model_dir, layout.VOCABULARY_DIR)):
        assert filecmp.cmp(
            layout.path(layout.path(small_model_dir, layout.VOCABULARY_DIR), name),
            layout.path(layout.path(output, layout.VOCABULARY_DIR), name),
            shallow=False,
        )
    batch = _batch(small_model_dir, new_data, size=64)
    before = _loss(_trained(small_model_dir), batch)
    after = _loss(_trained(output), batch)
    assert after < before - 0.3, (before, after)
    metrics = layout.read_json(layout.path(output, layout.METRICS_FILE))
    initial = layout.read_json(layout.path(small_model_dir, layout.METRICS_FILE))
    assert metrics["init_from"] == {
        "model_dir": os.path.abspath(small_model_dir),
        "steps": initial["steps"],
    }
    assert metrics["steps"] == 12  # its own steps: a new optimizer
    saved = layout.read_json(layout.path(output, layout.CONFIG_FILE))
    assert saved["init_from"] == str(small_model_dir)


def test_fine_tuning_refuses_another_architecture(
    small_model_dir, new_data, tmp_path, capsys
):
    output = tmp_path / "tuned"
    argv = ["train", "--init-from", str(small_model_dir), "--train", f"tsv:{new_data}",
            "--output", str(output)]  # fmt: skip
    assert cli.main([*argv, "--d-model", "64", "--num-layers", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "its model's architecture is fixed" in err
    assert "d_model: 128 -> 64" in err
    assert "num_layers" not in err  # 2 is the initial model's
    assert not output.exists()
    missing = tmp_path / "no_model"
    missing.mkdir()
    assert cli.main([*argv[:2], str(missing), *argv[3:]]) == 2
    err = capsys.readouterr().err
    assert f"--init-from {missing}: " in err and "model.keras is missing" in err
    same = ["train", "--init-from", str(output), "--train", "demo", "--output"]
    assert cli.main([*same, str(output)]) == 2
    assert "is the --output directory" in capsys.readouterr().err


def test_a_resumed_fine_tuning_keeps_its_dropout(small_model_dir, tmp_path):
    config = TrainConfig(
        train="demo", output=str(tmp_path), init_from=str(small_model_dir)
    )
    layout.write_json(
        layout.path(tmp_path, layout.CONFIG_FILE), dataclasses.asdict(config)
    )
    trainer._check_resumable(config)
    with pytest.raises(trainer.SetupError, match=r"dropout: None -> 0.3"):
        trainer._check_resumable(dataclasses.replace(config, dropout=0.3))
    with pytest.raises(trainer.SetupError, match=r"init_from: '.*' -> None"):
        trainer._check_resumable(dataclasses.replace(config, init_from=None))


def test_the_initial_weights_are_loaded_exactly(small_model_dir, new_data, tmp_path):
    config = TrainConfig(
        train=f"tsv:{new_data}", output=str(tmp_path), init_from=str(small_model_dir)
    )
    tokenizers, _ = trainer._vocabularies(config, [])
    model = trainer.build_model(config, *tokenizers)
    trained = _trained(small_model_dir)
    assert len(model.weights) == len(trained.weights)
    for ours, theirs in zip(model.weights, trained.weights, strict=True):
        assert ours.path.split("/", 1)[1] == theirs.path.split("/", 1)[1]
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
