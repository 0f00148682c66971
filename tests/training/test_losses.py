import keras
import numpy as np
import pytest

from keras_transformer.training import LabelSmoothedCrossEntropy
from keras_transformer.training import label_smoothed_cross_entropy
from keras_transformer.training import token_cross_entropy


def numpy_token_losses(y_true, logits, eps):
    """Cross-entropy against (1 - eps) * one_hot + eps / V, per token."""
    logits = logits.astype(np.float64)
    vocabulary = logits.shape[-1]
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    target = np.full(logits.shape, eps / vocabulary)
    np.put_along_axis(target, y_true[..., None], 1 - eps + eps / vocabulary, axis=-1)
    return -(target * log_probs).sum(-1)


def numpy_loss(y_true, logits, eps, sample_weight=None, pad=0):
    """sum(w * token loss) over non-pads / number of non-pads."""
    mask = (y_true != pad).astype(np.float64)
    weights = mask if sample_weight is None else mask * sample_weight
    if mask.sum() == 0:
        return 0.0
    return (numpy_token_losses(y_true, logits, eps) * weights).sum() / mask.sum()


def numpy_gradient(y_true, logits, eps, sample_weight=None, pad=0):
    """d loss / d logits = w * (softmax - smoothed target) / number of non-pads."""
    logits = logits.astype(np.float64)
    vocabulary = logits.shape[-1]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    target = np.full(logits.shape, eps / vocabulary)
    np.put_along_axis(target, y_true[..., None], 1 - eps + eps / vocabulary, axis=-1)
    mask = (y_true != pad).astype(np.float64)
    weights = mask if sample_weight is None else mask * sample_weight
    return (probs - target) * weights[..., None] / max(mask.sum(), 1.0)


def loss_and_gradient(loss, y_true, logits, mode, sample_weight=None):
    import tensorflow as tf

    logits = tf.constant(logits, dtype=logits.dtype)

    def run():
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = loss(y_true, logits, sample_weight=sample_weight)
        return value, tape.gradient(value, logits)

    if mode != "eager":
        run = tf.function(run, jit_compile=mode == "xla")
    value, gradient = run()
    return float(value), np.asarray(gradient)


# Rows: partly padded, mostly padded, all padding, no padding.
Y_TRUE = np.array([[5, 6, 7, 0, 0], [8, 9, 0, 0, 0], [0, 0, 0, 0, 0], [1, 2, 3, 4, 10]])


def random_logits(seed=0, shape=(4, 5, 11), scale=3.0):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype("float32")


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_loss_equals_numpy_token_mean(eps):
    logits = random_logits()
    loss = LabelSmoothedCrossEntropy(label_smoothing=eps)
    expected = numpy_loss(Y_TRUE, logits, eps)
    np.testing.assert_allclose(float(loss(Y_TRUE, logits)), expected, atol=1e-5)
    # The mean is over the 10 real tokens, not over the 20 positions.
    token_sum = (numpy_token_losses(Y_TRUE, logits, eps) * (Y_TRUE != 0)).sum()
    np.testing.assert_allclose(expected, token_sum / 10)


def test_logits_at_padding_do_not_matter():
    logits = random_logits(1)
    noisy = logits.copy()
    noisy[Y_TRUE == 0] = 1e4
    loss = LabelSmoothedCrossEntropy()
    assert float(loss(Y_TRUE, noisy)) == pytest.approx(float(loss(Y_TRUE, logits)))


def test_per_token_function_equals_numpy():
    logits = random_logits(2)
    losses, mask = label_smoothed_cross_entropy(Y_TRUE, logits, label_smoothing=0.2)
    expected = numpy_token_losses(Y_TRUE, logits, 0.2) * (Y_TRUE != 0)
    np.testing.assert_allclose(np.asarray(losses), expected, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(mask), Y_TRUE != 0)


def test_uniform_logits_give_log_vocabulary_size():
    # Any target distribution against a uniform prediction costs log(V).
    loss = LabelSmoothedCrossEntropy(label_smoothing=0.1)
    value = loss(np.array([[4, 5, 0]]), np.zeros((1, 3, 8), "float32"))
    assert float(value) == pytest.approx(np.log(8), abs=1e-6)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_logits_are_computed_in_float32(dtype):
    logits = keras.ops.cast(random_logits(3), dtype)
    value = LabelSmoothedCrossEntropy()(Y_TRUE, logits)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    # Same as numpy on the (rounded) logits cast to float32 first.
    rounded = np.asarray(keras.ops.cast(logits, "float32"))
    np.testing.assert_allclose(
        float(value), numpy_loss(Y_TRUE, rounded, 0.1), atol=1e-5
    )


def test_all_padding_batch_gives_zero_and_finite_gradient():
    import tensorflow as tf

    logits = tf.Variable(np.ones((2, 3, 5), "float32"))
    with tf.GradientTape() as tape:
        value = LabelSmoothedCrossEntropy()(np.zeros((2, 3), "int32"), logits)
    assert float(value) == 0.0
    assert np.all(tape.gradient(value, logits).numpy() == 0.0)


@pytest.mark.parametrize("kind", ["scalar", "per_sentence", "per_token"])
def test_sample_weights_scale_tokens_not_the_denominator(kind):
    logits = random_logits(4)
    rng = np.random.default_rng(5)
    weight = {
        "scalar": np.float32(0.5),
        "per_sentence": rng.uniform(size=(4,)).astype("float32"),
        "per_token": rng.uniform(size=(4, 5)).astype("float32"),
    }[kind]
    broadcast = weight[:, None] if kind == "per_sentence" else weight
    expected = numpy_loss(Y_TRUE, logits, 0.1, sample_weight=broadcast)
    value = LabelSmoothedCrossEntropy()(Y_TRUE, logits, sample_weight=weight)
    np.testing.assert_allclose(float(value), expected, atol=1e-5)


def test_from_probabilities():
    logits = random_logits(6)
    probabilities = np.asarray(keras.ops.softmax(logits, axis=-1))
    value = LabelSmoothedCrossEntropy(from_logits=False)(Y_TRUE, probabilities)
    np.testing.assert_allclose(float(value), numpy_loss(Y_TRUE, logits, 0.1), atol=1e-5)


def test_compiled_loss_in_evaluate_equals_numpy():
    # Through `compile`: no Keras reduction or mask rescales the value.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(11, 4),
            keras.layers.Dense(11),
        ]
    )
    model.compile(loss=LabelSmoothedCrossEntropy(), jit_compile=False)
    x = np.random.default_rng(7).integers(1, 11, size=(4, 5))
    value = model.evaluate(x, Y_TRUE, batch_size=4, verbose=0)
    expected = numpy_loss(Y_TRUE, np.asarray(model(x)), 0.1)
    np.testing.assert_allclose(value, expected, atol=1e-5)


def test_eps_zero_equals_keras_masked_cross_entropy():
    logits = random_logits(8)
    keras_loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=0
    )
    ours = LabelSmoothedCrossEntropy(label_smoothing=0.0)
    np.testing.assert_allclose(
        float(ours(Y_TRUE, logits)), float(keras_loss(Y_TRUE, logits)), atol=1e-5
    )


def test_config_round_trip():
    loss = LabelSmoothedCrossEntropy(0.2, pad_id=1, from_logits=False, name="ls")
    assert loss.get_config() == {
        "label_smoothing": 0.2,
        "pad_id": 1,
        "from_logits": False,
        "name": "ls",
    }
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert type(revived) is LabelSmoothedCrossEntropy
    assert revived.get_config() == loss.get_config()


def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"\[0, 1\).*label_smoothing=1.0"):
        LabelSmoothedCrossEntropy(label_smoothing=1.0)
    with pytest.raises(ValueError, match="rank 2.*rank 3"):
        LabelSmoothedCrossEntropy()(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)))


@pytest.fixture
def xla_answers(monkeypatch):
    """What `in_xla_context()` told the loss: the code path it took."""
    from keras_transformer.training import losses

    answers, in_xla_context = [], losses.in_xla_context

    def spy():
        answers.append(in_xla_context())
        return answers[-1]

    monkeypatch.setattr(losses, "in_xla_context", spy)
    return answers


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_gradient_equals_numpy(eps, mode, xla_answers):
    # Outside XLA the gradient is written out (a custom gradient), under XLA
    # autodiff's: both pinned against softmax - target directly, with
    # per-token weights and padded rows.
    logits = random_logits(9)
    weight = np.random.default_rng(10).uniform(size=Y_TRUE.shape).astype("float32")
    value, gradient = loss_and_gradient(
        LabelSmoothedCrossEntropy(eps), Y_TRUE, logits, mode, sample_weight=weight
    )
    assert xla_answers == [mode == "xla"]  # one trace, the path of its mode
    np.testing.assert_allclose(
        value, numpy_loss(Y_TRUE, logits, eps, sample_weight=weight), atol=1e-5
    )
    expected = numpy_gradient(Y_TRUE, logits, eps, sample_weight=weight)
    np.testing.assert_allclose(gradient, expected, atol=1e-7)
    assert np.all(gradient[Y_TRUE == 0] == 0.0)  # padding gets nothing


@pytest.mark.parametrize("mode", ["graph", "xla"])
def test_gradient_of_large_logits_is_finite_and_exact(mode):
    # Logits of +-3000 overflow exp() unless the max is subtracted first.
    logits = random_logits(11, scale=1000.0)
    value, gradient = loss_and_gradient(
        LabelSmoothedCrossEntropy(0.1), Y_TRUE, logits, mode
    )
    assert np.isfinite(value) and np.all(np.isfinite(gradient))
    np.testing.assert_allclose(value, numpy_loss(Y_TRUE, logits, 0.1), rtol=1e-6)
    np.testing.assert_allclose(gradient, numpy_gradient(Y_TRUE, logits, 0.1), atol=1e-7)


@pytest.mark.parametrize("mode", ["graph", "xla"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_gradient_has_the_logits_dtype(dtype, mode):
    import tensorflow as tf

    logits = tf.cast(random_logits(12), dtype)

    def run():
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = LabelSmoothedCrossEntropy()(Y_TRUE, logits)
        return tape.gradient(value, logits)

    gradient = tf.function(run, jit_compile=mode == "xla")()
    assert gradient.dtype == logits.dtype
    rounded = np.asarray(tf.cast(logits, "float32"))
    np.testing.assert_allclose(
        np.asarray(tf.cast(gradient, "float32")),
        numpy_gradient(Y_TRUE, rounded, 0.1),
        atol=2e-3,
    )


def test_token_cross_entropy_matches_log_softmax_at_every_position():
    # Unmasked per-token values, from logits and from probabilities, against
    # differentiating log_softmax (the textbook formulation) as well.
    import tensorflow as tf

    # (Scale 1: no probability below the 1e-7 clip of the probabilities path.)
    logits = tf.constant(random_logits(13, shape=(3, 4, 50), scale=1.0))
    y_true = np.random.default_rng(14).integers(0, 50, size=(3, 4))
    target = 0.9 * tf.one_hot(y_true, 50) + 0.1 / 50
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        ours = token_cross_entropy(y_true, logits, label_smoothing=0.1)
        textbook = -tf.reduce_sum(target * tf.nn.log_softmax(logits), -1)
    np.testing.assert_allclose(np.asarray(ours), textbook.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(tape.gradient(ours, logits)),
        tape.gradient(textbook, logits).numpy(),
        atol=1e-6,
    )
    from_probs = token_cross_entropy(
        y_true, tf.nn.softmax(logits), label_smoothing=0.1, from_logits=False
    )
    np.testing.assert_allclose(np.asarray(from_probs), textbook.numpy(), atol=1e-4)
