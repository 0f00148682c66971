"""A run with no batch to train on is refused; pairs left out are reported."""

import json
import re

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer import cli
from keras_transformer.data.pipeline import count_batches
from keras_transformer.text import load_vocabularies
from keras_transformer.training import trainer

WORDS = "one two three four five six seven eight nine ten".split()
GERMAN = "eins zwei drei vier fünf sechs sieben acht neun zehn".split()


def _tsv(path, count=30):
    """`count` short pairs of number words, one per line."""
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(count):
        index = rng.integers(0, 10, size=rng.integers(1, 5))
        source = " ".join(WORDS[i] for i in index)
        target = " ".join(GERMAN[i] for i in index)
        lines.append(f"{source}\t{target}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _config(tmp_path, **overrides):
    settings = dict(
        train=f"tsv:{_tsv(tmp_path / 'train.tsv')}",
        output=str(tmp_path / "run"),
        model_overrides={"num_layers": 1, "d_model": 16, "num_heads": 2, "d_ff": 32},
        vocab_size=40,
        epochs=1,
        batch_size=4,
        max_length=16,
        warmup_steps=4,
        bleu_sentences=0,
        verbose=0,
        jit_compile=False,
    )
    settings.update(overrides)
    return trainer.TrainConfig(**settings)


class _IdTokenizer:
    """Space-separated ids -> ragged int32 ids (no vocabulary needed)."""

    def tokenize(self, strings):
        return tf.ragged.map_flat_values(
            tf.strings.to_number, tf.strings.split(strings), out_type=tf.int32
        )


def _id_pairs(count=1000, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, size=(count, 2))
    return [(" ".join(["5"] * int(s)), " ".join(["6"] * int(t))) for s, t in lengths]


def test_no_full_batch_is_refused_before_anything_is_written(tmp_path):
    config = _config(tmp_path, batch_size=None, batch_tokens=25_000)
    with pytest.raises(trainer.SetupError) as caught:
        trainer.train_translator(config)
    message = str(caught.value)
    assert "\n" not in message
    assert "no full training batch" in message
    assert "--batch-tokens 25000" in message
    assert re.search(r"lower --batch-tokens to \d+ or less", message)
    # Nothing written: no model, checkpoints, metrics, not even the directory.
    assert not (tmp_path / "run").exists()


def test_cli_reports_no_full_batch_in_one_line(tmp_path, capsys):
    train = _tsv(tmp_path / "train.tsv")
    output = tmp_path / "run"
    code = cli.main([
        "train", "--train", f"tsv:{train}", "--batch-size", "64", "--epochs",
        "1", "--vocab-size", "40", "--output", str(output),
    ])  # fmt: skip
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("keras-transformer train: error: no full training batch")
    assert "--batch-size 64" in last and "lower --batch-size to" in last
    assert not output.exists()


def test_no_pair_within_max_length_is_refused_with_an_endless_stream(tmp_path):
    config = trainer.TrainConfig(
        train="t", output=str(tmp_path), max_length=4, steps_per_epoch=5
    )
    pairs = [("5 5 5 5 5", "6"), ("5", "6 6 6 6 6 6")]
    tokenizer = _IdTokenizer()
    with pytest.raises(trainer.SetupError, match="raise --max-length"):
        trainer._check_training_batches(config, pairs, tokenizer, tokenizer)


@pytest.mark.parametrize(
    "batching", [{"batch_size": 8}, {"batch_size": None, "batch_tokens": 300}]
)
def test_pairs_left_out_match_what_an_epoch_trains_on(tmp_path, batching, capsys):
    config = trainer.TrainConfig(
        train="t", output=str(tmp_path), max_length=32, **batching
    )
    pairs = _id_pairs()
    tokenizer = _IdTokenizer()
    counts = trainer._check_training_batches(config, pairs, tokenizer, tokenizer)
    # One plain line on stderr (not a warning with its file and line).
    [message] = capsys.readouterr().err.splitlines()
    found = re.match(rf"(\d+) of {len(pairs)} training pairs are left out", message)
    left_out = int(found[1])
    # Counted independently: the pairs in the batches of two epochs' pipelines.
    for seed in (1, 2):
        dataset = trainer._dataset(
            config, pairs, tokenizer, tokenizer, True, seed, False
        )
        batches = [int(target_out.shape[0]) for _, target_out in dataset]
        assert len(batches) == counts["batches"]
        assert len(pairs) - sum(batches) == left_out
    too_long = sum(len(s.split()) + 1 > 32 or len(t.split()) + 1 > 32 for s, t in pairs)
    assert counts["too_long"] == too_long > 0
    assert f"{too_long} longer than --max-length 32" in message
    assert counts["partial"] == left_out - too_long > 0


def test_a_small_run_trains_every_full_batch(tmp_path):
    config = _config(tmp_path)
    metrics = trainer.train_translator(config)
    run = tmp_path / "run"
    assert (run / "model.keras").exists()
    assert json.loads((run / "metrics.json").read_text())["steps"] == metrics["steps"]
    source, target = load_vocabularies(str(run / "vocabulary"))
    counts = count_batches(
        trainer._pairs(config.train, "train"),
        source.tokenize,
        target.tokenize,
        batch_size=4,
        max_source_length=16,
        max_target_length=16,
    )
    assert metrics["steps"] == counts["batches"] > 0
