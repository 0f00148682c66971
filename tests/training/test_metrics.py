import keras
import numpy as np
import pytest

from keras_transformer.training import MaskedAccuracy
from keras_transformer.training import MaskedPerplexity


def batches(seed=0, count=3):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        y_true = rng.integers(1, 7, size=(4, 6))
        lengths = rng.integers(0, 7, size=(4,))
        y_true[np.arange(6)[None, :] >= lengths[:, None]] = 0
        logits = rng.normal(size=(4, 6, 7)).astype("float32")
        # Make roughly half of the predictions right.
        logits[..., 1:] += (
            2.0 * (rng.uniform(size=(4, 6, 1)) < 0.5) * np.eye(7)[y_true][..., 1:]
        )
        yield y_true, logits


def test_accuracy_equals_numpy_over_several_batches():
    metric = MaskedAccuracy()
    correct = total = 0
    for y_true, logits in batches():
        metric.update_state(y_true, logits)
        mask = y_true != 0
        correct += ((logits.argmax(-1) == y_true) & mask).sum()
        total += mask.sum()
    assert 0 < correct < total
    assert float(metric.result()) == pytest.approx(correct / total, abs=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_accuracy_ignores_padding_and_weights_tokens():
    metric = MaskedAccuracy()
    y_true = np.array([[1, 2, 3, 0], [4, 0, 0, 0]])
    predictions = np.array([[1, 2, 9, 0], [9, 0, 0, 0]])  # pads "right" too
    logits = np.eye(10, dtype="float32")[predictions]
    metric.update_state(y_true, logits)
    assert float(metric.result()) == pytest.approx(2 / 4)
    weighted = MaskedAccuracy()
    weighted.update_state(y_true, logits, sample_weight=np.array([1.0, 3.0]))
    # Sentence weights: (1 + 1 + 0) * 1 correct of 3 * 1 + 1 * 3 real.
    assert float(weighted.result()) == pytest.approx(2 / 6)


def test_perplexity_equals_numpy():
    metric = MaskedPerplexity()
    nll = total = 0.0
    for y_true, logits in batches(1):
        metric.update_state(y_true, logits)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        token_nll = -np.take_along_axis(log_probs, y_true[..., None], -1)[..., 0]
        nll += (token_nll * (y_true != 0)).sum()
        total += (y_true != 0).sum()
    np.testing.assert_allclose(float(metric.log_perplexity()), nll / total, rtol=1e-5)
    np.testing.assert_allclose(float(metric.result()), np.exp(nll / total), rtol=1e-5)


def test_metrics_in_fit_and_config_round_trip():
    for metric in (MaskedAccuracy(pad_id=1, name="acc"), MaskedPerplexity(pad_id=1)):
        config = metric.get_config()
        assert config["pad_id"] == 1
        revived = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(metric)
        )
        assert type(revived) is type(metric)
        assert revived.get_config() == config
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(6 * 7)])
    model.add(keras.layers.Reshape((6, 7)))
    model.compile(
        "sgd",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[MaskedAccuracy(), MaskedPerplexity()],
    )
    y_true, _ = next(batches())
    logs = model.fit(np.ones((4, 6)), y_true, verbose=0).history
    assert 0.0 <= logs["masked_accuracy"][0] <= 1.0
    assert logs["masked_perplexity"][0] >= 1.0
