import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_transformer.decoding.utils import first_argmax
from keras_transformer.decoding.utils import top_k


def _with_ties(shape, seed):
    # Few distinct values, so every row has many ties.
    return np.random.default_rng(seed).integers(0, 7, size=shape).astype("float32")


@pytest.mark.parametrize("jit_compile", [False, True])
def test_first_argmax_equals_argmax_ties_to_the_lowest_index(jit_compile):
    values = np.concatenate(
        [_with_ties((5, 300), 0), np.random.default_rng(1).normal(size=(5, 300))]
    ).astype("float32")
    got = tf.function(first_argmax, jit_compile=jit_compile)(values)
    assert got.dtype == tf.int32
    np.testing.assert_array_equal(got, np.argmax(values, axis=-1))


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize(
    "n, k, values",
    [
        (4 * 8192, 8, "normal"),  # beam 4, vocabulary 8192: the blocked path
        (3 * 5000 + 7, 6, "normal"),  # not a multiple of the block: padded
        (4 * 8192, 8, "ties"),
        (3000, 6, "normal"),  # short: plain top_k
    ],
)
def test_top_k_equals_sorted_top_k(n, k, values, jit_compile):
    rng = np.random.default_rng(n)
    if values == "ties":
        x = _with_ties((3, n), n)
    else:
        x = rng.normal(size=(3, n)).astype("float32")
        x[0, :] = -1e9  # a dead row: every value equal
        x[1, rng.integers(0, n, 20)] = 50.0  # a tie among the largest
    got_values, got_indices = tf.function(
        lambda x: top_k(x, k), jit_compile=jit_compile
    )(x)
    want_values, want_indices = ops.top_k(x, k)
    assert got_indices.dtype == tf.int32
    np.testing.assert_array_equal(got_values, want_values)
    np.testing.assert_array_equal(got_indices, want_indices)
