import numpy as np
import pytest
import tensorflow as tf

from keras_transformer import cli
from keras_transformer import data
from keras_transformer.training import trainer
from keras_transformer.training.config import settings_from_flags


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
    assert settings_from_flags(default, trainer.TrainConfig)["bucket_boundaries"] == (
        "default"
    )
    assert "bucket_boundaries" in trainer.RESUME_KEYS


@pytest.mark.parametrize(
    "train, valid, expected",
    [("demo", None, "demo"), ("demo", "tsv:v", "tsv:v"), ("tsv:t", None, None)],
)
def test_validation_spec_defaults_to_the_demo_split(train, valid, expected):
    config = trainer.TrainConfig(train=train, valid=valid, output="o")
    assert trainer._validation_spec(config) == expected


class _Checkpoint:
    """Records `StepCheckpoint.start` calls."""

    def __init__(self, steps=0):
        self.starts, self.steps = [], steps

    def start(self, epoch, batch, consumed):
        self.starts.append((epoch, batch, consumed))


def test_start_checkpoint_positions_the_run():
    checkpoint = _Checkpoint()
    assert trainer._start_checkpoint(checkpoint, None, False, None) == 0
    assert checkpoint.starts == []
    state = {"epoch": 2, "batch": 3, "consumed": 20}
    data = tf.data.Dataset.range(1)
    assert trainer._start_checkpoint(checkpoint, state, False, data) == 2
    assert checkpoint.starts == [(2, 3, 20)]
    # The interrupted epoch had no batch left: the run starts at the next one.
    checkpoint = _Checkpoint()
    empty = data.take(0)
    assert trainer._start_checkpoint(checkpoint, state, False, empty) == 3
    assert checkpoint.starts == [(2, 3, 20), (3, 0, 20)]


class _Model:
    """Records `fit` calls as `(initial_epoch, epochs, steps_per_epoch)`."""

    def __init__(self):
        self.calls = []

    def fit(self, data, epochs, initial_epoch, steps_per_epoch=None, **kwargs):
        self.calls.append((initial_epoch, epochs, steps_per_epoch))


def _fit(config, initial_epoch, resumed_batch=0, stopped=lambda: False):
    model, checkpoint = _Model(), _Checkpoint(steps=17)
    trainer._fit(
        model,
        None,
        config,
        checkpoint,
        initial_epoch,
        resumed_batch=resumed_batch,
        stopped=stopped,
        verbose=0,
    )
    return model.calls, checkpoint.starts


def test_fit_finishes_a_resumed_epoch_of_the_stream_then_the_rest():
    config = trainer.TrainConfig(train="t", output="o", epochs=4, steps_per_epoch=5)
    assert _fit(config, 0) == ([(0, 4, 5)], [])
    calls, starts = _fit(config, 1, resumed_batch=2)
    assert calls == [(1, 2, 3), (2, 4, 5)]
    assert starts == [(2, 0, 17)]
    calls, _ = _fit(config, 1, resumed_batch=2, stopped=lambda: True)
    assert calls == [(1, 2, 3)]
    # Stopped after the epoch's last batch: only the later epochs run.
    assert _fit(config, 1, resumed_batch=5)[0] == [(2, 4, 5)]


def test_fit_runs_one_call_per_epoch_without_steps_per_epoch():
    config = trainer.TrainConfig(train="t", output="o", epochs=3)
    assert _fit(config, 1)[0] == [(1, 3, None), (2, 3, None)]
    assert _fit(config, 0, stopped=lambda: True)[0] == [(0, 3, None)]
