import keras
import numpy as np
import pytest

from keras_transformer.training import LabelSmoothedCrossEntropy
from keras_transformer.training import MaskedAccuracy
from keras_transformer.training import TransformerSchedule
from keras_transformer.training import transformer_optimizer


def _numpy_smoothed_ce(y_true, logits, eps, pad=0):
    """Cross-entropy against (1 - eps) * one_hot + eps / V, mean over non-pads."""
    logits = logits.astype(np.float64)
    v = logits.shape[-1]
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    target = np.full(logits.shape, eps / v)
    np.put_along_axis(target, y_true[..., None], 1 - eps + eps / v, axis=-1)
    per_token = -(target * log_probs).sum(-1)
    mask = y_true != pad
    return (per_token * mask).sum() / mask.sum()


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_loss_equals_numpy_and_ignores_padding(eps):
    rng = np.random.default_rng(0)
    y_true = np.array([[5, 6, 7, 0, 0], [8, 9, 0, 0, 0], [0, 0, 0, 0, 0]])
    logits = rng.normal(size=(3, 5, 11)).astype("float32")
    loss = LabelSmoothedCrossEntropy(label_smoothing=eps)
    expected = _numpy_smoothed_ce(y_true, logits, eps)
    np.testing.assert_allclose(float(loss(y_true, logits)), expected, rtol=1e-5)
    # Logits at padded positions do not matter.
    noisy = logits.copy()
    noisy[y_true == 0] = 1000.0
    np.testing.assert_allclose(float(loss(y_true, noisy)), expected, rtol=1e-5)


def test_loss_of_bfloat16_logits_is_float32():
    y_true = np.array([[5, 6, 0]])
    logits = keras.ops.cast(np.random.default_rng(1).normal(size=(1, 3, 9)), "bfloat16")
    value = LabelSmoothedCrossEntropy()(y_true, logits)
    assert value.dtype == "float32"
    expected = _numpy_smoothed_ce(
        y_true, np.asarray(keras.ops.cast(logits, "float32")), 0.1
    )
    np.testing.assert_allclose(float(value), expected, rtol=1e-4)


def test_all_padding_batch_gives_zero():
    assert float(LabelSmoothedCrossEntropy()(np.zeros((2, 3), "int32"),
                                             np.ones((2, 3, 5), "float32"))) == 0.0  # fmt: skip


def test_loss_and_metric_serialize():
    for obj in (LabelSmoothedCrossEntropy(0.2, pad_id=1), MaskedAccuracy(pad_id=1)):
        revived = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(obj)
        )
        assert type(revived) is type(obj) and revived.pad_id == 1


def test_masked_accuracy_counts_tokens():
    metric = MaskedAccuracy()
    y_true = np.array([[1, 2, 3, 0], [4, 0, 0, 0]])
    predictions = np.array([[1, 2, 9, 0], [9, 0, 0, 0]])
    logits = np.eye(10, dtype="float32")[predictions]
    metric.update_state(y_true, logits)
    assert float(metric.result()) == pytest.approx(2 / 4)
    metric.update_state(np.array([[7]]), np.eye(10, dtype="float32")[[[7]]])
    assert float(metric.result()) == pytest.approx(3 / 5)


@pytest.mark.parametrize("step", [1, 4000, 100_000])
def test_schedule_equals_paper_formula(step):
    schedule = TransformerSchedule(d_model=512, warmup_steps=4000)
    expected = 512**-0.5 * min(step**-0.5, step * 4000**-1.5)
    # The optimizer's iterations count from 0: step = iterations + 1.
    np.testing.assert_allclose(float(schedule(step - 1)), expected, rtol=1e-6)


def test_schedule_is_finite_at_start_and_serializes():
    schedule = TransformerSchedule(d_model=64, warmup_steps=10, scale=2.0)
    assert np.isfinite(float(schedule(0)))
    revived = TransformerSchedule.from_config(schedule.get_config())
    assert float(revived(123)) == float(schedule(123))
    with pytest.raises(ValueError, match="warmup_steps"):
        TransformerSchedule(d_model=64, warmup_steps=0)


def test_optimizer_is_the_papers_adam():
    optimizer = transformer_optimizer(512)
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.9, 0.98, 1e-9)
    config = keras.optimizers.serialize(optimizer)["config"]["learning_rate"]
    assert config["class_name"] == "TransformerSchedule"
