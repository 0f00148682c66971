import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.layers import utils
from keras_transformer.layers.utils import apply_to_real_positions

RNG = np.random.default_rng(0)
W = RNG.normal(size=(8, 6)).astype("float32")
B = RNG.normal(size=(6,)).astype("float32")


def _function(rows):  # position-wise: (n, 8) -> (n, 6)
    return tf.nn.relu(tf.matmul(rows, tf.cast(W, rows.dtype)) + tf.cast(B, rows.dtype))


def _expected(x, mask):
    return np.where(mask[..., None], np.maximum(0, x @ W + B), 0)


def _batch(batch_size, length, lengths=None):
    x = RNG.normal(size=(batch_size, length, 8)).astype("float32")
    if lengths is None:
        lengths = RNG.integers(0, length + 1, size=batch_size)
    mask = np.arange(length)[None] < np.asarray(lengths)[:, None]
    return x, mask


def _call(path, x, mask, dtype="float32"):
    def run(x, mask):
        return apply_to_real_positions(_function, tf.cast(x, dtype), mask, 6)

    if path == "graph":
        run = tf.function(run, jit_compile=False)
    elif path == "xla":
        run = tf.function(run, jit_compile=True)
    return np.asarray(tf.cast(run(tf.constant(x), tf.constant(mask)), "float32"))


# 4 x 300 rows take the gather path (eager, graph) or 3 chunks of 512 (XLA);
# 2 x 5 rows take the small path everywhere.
@pytest.mark.parametrize("path", ["eager", "graph", "xla"])
@pytest.mark.parametrize("shape", [(4, 300), (2, 5)])
def test_real_rows_equal_the_function_and_padded_rows_are_zero(path, shape):
    x, mask = _batch(*shape, lengths=[shape[1], 0, 3, shape[1] // 2][: shape[0]])
    np.testing.assert_allclose(_call(path, x, mask), _expected(x, mask), atol=1e-5)


@pytest.mark.parametrize("path", ["eager", "graph", "xla"])
@pytest.mark.parametrize("lengths", [[0, 0, 0, 0], [300, 300, 300, 300]])
def test_all_padded_and_all_real(path, lengths):
    x, mask = _batch(4, 300, lengths)
    np.testing.assert_allclose(_call(path, x, mask), _expected(x, mask), atol=1e-5)


def test_bfloat16_under_xla():
    x, mask = _batch(4, 300)
    actual = _call("xla", x, mask, dtype="bfloat16")
    np.testing.assert_allclose(actual, _expected(x, mask), atol=0.1, rtol=0.05)
    assert np.all(actual[~mask] == 0)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_gradients_equal_those_of_the_plain_function(jit_compile):
    x, mask = _batch(4, 300)
    weights = tf.Variable(W)
    probe = tf.constant(RNG.normal(size=(4, 300, 6)).astype("float32"))

    def function(rows):
        return tf.nn.relu(tf.matmul(rows, weights) + B)

    @tf.function(jit_compile=jit_compile)
    def gradients(x, skip):
        with tf.GradientTape() as tape:
            tape.watch(x)
            if skip:
                y = apply_to_real_positions(function, x, mask, 6)
            else:
                y = tf.where(mask[..., None], function(x), 0.0)
            loss = tf.reduce_sum(y * probe)
        return tape.gradient(loss, [x, weights])

    x = tf.constant(x)
    for actual, expected in zip(gradients(x, True), gradients(x, False), strict=True):
        np.testing.assert_allclose(actual, expected, atol=1e-4)


@pytest.mark.parametrize(
    "num_real, calls", [(0, 1), (300, 1), (512, 1), (513, 2), (1024, 2), (1200, 3)]
)
def test_chunks_without_real_rows_are_not_computed(num_real, calls):
    # Eagerly, `ops.cond` runs only the branch taken: count the chunks computed.
    counted = []

    def function(rows):
        counted.append(rows.shape[0])
        return _function(rows)

    rows = tf.constant(RNG.normal(size=(1200, 8)).astype("float32"))
    real = tf.constant(RNG.permutation(np.arange(1200) < num_real))
    actual = utils._real_rows_in_chunks(function, rows, real)
    assert counted == [512] * calls
    np.testing.assert_allclose(actual, _expected(rows.numpy(), real.numpy()), atol=1e-5)
