import csv
import os
import time

import keras
import numpy as np
import pytest

from keras_transformer.training import BleuCallback
from keras_transformer.training import WallClockLimit

SOURCES = ["le chat", "un chien", "la maison bleue"]
REFERENCES = [
    "the cat sat on the mat",
    "a dog ran in the park today",
    "the blue house is on the hill",
]


def identity_translation(sources):
    """A perfect "translator" of SOURCES."""
    return [REFERENCES[SOURCES.index(s)] for s in sources]


def garbage_translation(sources):
    return ["zz qq xx" for _ in sources]


def tiny_fit(callbacks, epochs=2, steps=4):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = np.ones((8, 3), "float32"), np.ones((8, 1), "float32")
    return model.fit(
        x,
        y,
        batch_size=2,
        epochs=epochs,
        steps_per_epoch=steps,
        callbacks=callbacks,
        verbose=0,
    )


def test_bleu_callback_in_fit_feeds_later_callbacks(tmp_path):
    perfect = BleuCallback(identity_translation, SOURCES, REFERENCES)
    garbage = BleuCallback(
        garbage_translation, SOURCES, REFERENCES, log_key="val_bleu_garbage"
    )
    best = str(tmp_path / "best.weights.h5")
    log = str(tmp_path / "log.csv")
    history = tiny_fit(
        [
            perfect,
            garbage,
            keras.callbacks.ModelCheckpoint(
                best,
                monitor="val_bleu",
                mode="max",
                save_best_only=True,
                save_weights_only=True,
            ),
            keras.callbacks.CSVLogger(log),
        ]
    )
    assert history.history["val_bleu"] == pytest.approx([100.0, 100.0])
    assert history.history["val_chrf"] == pytest.approx([100.0, 100.0])
    assert history.history["val_bleu_garbage"][-1] < 5.0
    assert history.history["val_chrf_garbage"][-1] < 20.0
    assert os.path.exists(best)
    with open(log) as file:
        rows = list(csv.DictReader(file))
    assert [float(row["val_bleu"]) for row in rows] == pytest.approx([100.0, 100.0])
    assert perfect.signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert perfect.chrf_signature.startswith("nrefs:1")
    assert perfect.history == [
        {"epoch": 0, "bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)},
        {"epoch": 1, "bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)},
    ]


def test_bleu_every_n_epochs_and_tokenizer():
    callback = BleuCallback(
        identity_translation,
        SOURCES,
        REFERENCES,
        every_n_epochs=2,
        log_key="bleu_score",
        bleu_tokenize="char",
    )
    assert callback.chrf_log_key == "chrf_score"
    history = tiny_fit([callback], epochs=4, steps=1)
    assert [entry["epoch"] for entry in callback.history] == [1, 3]
    assert history.history["bleu_score"] == pytest.approx([100.0, 100.0])
    assert "tok:char" in callback.signature


def test_bleu_config_round_trip_and_errors():
    callback = BleuCallback(
        identity_translation, SOURCES, REFERENCES, every_n_epochs=3, log_key="score"
    )
    config = callback.get_config()
    assert config == {
        "translate_fn": identity_translation,
        "sources": SOURCES,
        "references": REFERENCES,
        "every_n_epochs": 3,
        "log_key": "score",
        "chrf_log_key": "score_chrf",
        "bleu_tokenize": "13a",
    }
    assert BleuCallback.from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(callback),
        custom_objects={"identity_translation": identity_translation},
    )
    assert type(revived) is BleuCallback and revived.every_n_epochs == 3
    with pytest.raises(ValueError, match="same length.*3 sources and 2"):
        BleuCallback(identity_translation, SOURCES, REFERENCES[:2])
    with pytest.raises(ValueError, match="every_n_epochs=0"):
        BleuCallback(identity_translation, SOURCES, REFERENCES, every_n_epochs=0)
    with pytest.raises(ValueError, match="bleu_tokenize='bogus'"):
        BleuCallback(identity_translation, SOURCES, REFERENCES, bleu_tokenize="bogus")
    short = BleuCallback(lambda s: ["x"], SOURCES, REFERENCES)
    with pytest.raises(ValueError, match="1 hypotheses for 3 sources"):
        short.score()


def test_wall_clock_limit_stops_fit_at_a_batch_end():
    budget = 0.6 / 60  # 0.6 s
    limit = WallClockLimit(max_minutes=budget)
    elapsed = []

    class Slow(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            elapsed.append(limit.elapsed_minutes)  # after `limit` checked
            time.sleep(0.05)

    history = tiny_fit([limit, Slow()], epochs=50, steps=4)
    assert limit.stopped_early
    assert len(history.history["loss"]) < 50
    # Stopped at the first batch end past the budget, not before, not later.
    assert elapsed[-1] >= budget
    assert all(minutes < budget for minutes in elapsed[:-1])


def test_wall_clock_limit_not_reached_and_config():
    limit = WallClockLimit(max_minutes=10)
    history = tiny_fit([limit], epochs=2, steps=2)
    assert not limit.stopped_early
    assert len(history.history["loss"]) == 2
    assert limit.get_config() == {"max_minutes": 10, "restart_each_fit": True}
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(limit)
    )
    assert type(revived) is WallClockLimit and revived.max_minutes == 10
    with pytest.raises(ValueError, match="positive number.*0"):
        WallClockLimit(0)


@pytest.mark.parametrize("restart_each_fit", [True, False])
def test_wall_clock_limit_across_fit_calls(restart_each_fit, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    limit = WallClockLimit(max_minutes=1, restart_each_fit=restart_each_fit)
    limit.set_model(keras.Sequential())
    limit.on_train_begin()
    now[0] += 40
    limit.on_train_batch_end(0)
    limit.on_train_begin()  # A second `fit`.
    now[0] += 40
    limit.on_train_batch_end(0)
    # 80 s since the first `fit`, 40 s since the second.
    assert limit.stopped_early is (not restart_each_fit)
