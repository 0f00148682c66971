import time

import keras
import numpy as np
import pytest

from keras_transformer.training import BleuCallback
from keras_transformer.training import WallClockLimit


def _tiny_fit(callbacks, epochs=2, steps=4):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = np.ones((8, 3), "float32"), np.ones((8, 1), "float32")
    return model.fit(x, y, batch_size=2, epochs=epochs, steps_per_epoch=steps,
                     callbacks=callbacks, verbose=0)  # fmt: skip


def test_bleu_callback_logs_scores_in_fit():
    references = ["the cat sat on the mat", "a dog ran in the park today"]
    perfect = BleuCallback(lambda sources: list(references), ["x", "y"], references)
    garbage = BleuCallback(lambda sources: ["zz qq", "ww"], ["x", "y"], references,
                           log_key="val_bleu_garbage")  # fmt: skip
    history = _tiny_fit([perfect, garbage])
    assert history.history["val_bleu"] == pytest.approx([100.0, 100.0])
    assert history.history["val_bleu_garbage"][-1] < 5.0
    assert history.history["val_chrf"][-1] == pytest.approx(100.0)
    assert perfect.signature.startswith("nrefs:1")
    assert [epoch for epoch, _, _ in perfect.history] == [0, 1]


def test_wall_clock_limit_stops_fit_early():
    class Slow(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.05)

    limit = WallClockLimit(max_minutes=0.1 / 60)  # 0.1 s
    history = _tiny_fit([Slow(), limit], epochs=50, steps=4)
    assert limit.stopped_early
    assert len(history.history["loss"]) < 50
