import numpy as np
import pytest
import tensorflow as tf

from keras_transformer import cli
from keras_transformer import data
from keras_transformer.training import trainer


class _IdTokenizer:
    """Space-separated ids -> ragged int32 ids (no vocabulary needed)."""

    def tokenize(self, strings):
        return tf.ragged.map_flat_values(
            tf.strings.to_number, tf.strings.split(strings), out_type=tf.int32
        )


def _pairs(count=600, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 60, size=(count, 2))
    return [(" ".join(["5"] * int(s)), " ".join(["6"] * int(t))) for s, t in lengths]


def _shapes(config):
    dataset = trainer._dataset(
        config, _pairs(), _IdTokenizer(), _IdTokenizer(), True, 1, False
    )
    return {(int(x["source"].shape[1]), int(x["target"].shape[1])) for x, _ in dataset}


def _allowed(boundaries):
    """The `(S, T)` shapes `make_dataset` may produce with this ladder."""
    shapes = data.bucket_shapes(
        batch_size=8,
        max_source_length=64,
        max_target_length=64,
        bucket_boundaries=boundaries,
    )
    return {(s, t) for _, s, t in shapes}


def test_bucket_boundaries_select_the_pipelines_ladder(tmp_path):
    def shapes(name):
        config = trainer.TrainConfig(
            train="demo",
            output=str(tmp_path),
            batch_size=8,
            max_length=64,
            bucket_boundaries=name,
        )
        return _shapes(config)

    default, fine = shapes("default"), shapes("fine")
    assert default and default <= _allowed(data.DEFAULT_BOUNDARIES)
    assert fine and fine <= _allowed(data.FINE_BOUNDARIES)
    # The fine ladder refines the default one: it uses lengths it lacks.
    assert fine - _allowed(data.DEFAULT_BOUNDARIES)


def test_unknown_bucket_boundaries_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"bucket_boundaries.*'finest'"):
        trainer.TrainConfig(
            train="demo", output=str(tmp_path), bucket_boundaries="finest"
        )


def test_cli_passes_bucket_boundaries():
    parser = cli.build_parser()
    args = parser.parse_args(
        ["train", "--train", "demo", "--output", "o", "--bucket-boundaries", "fine"]
    )
    assert args.bucket_boundaries == "fine"
    default = parser.parse_args(["train", "--train", "demo", "--output", "o"])
    assert default.bucket_boundaries == "default"
    assert "bucket_boundaries" in trainer._RESUME_KEYS
