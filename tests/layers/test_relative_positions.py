import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.layers.relative_positions import relative_context
from keras_transformer.layers.relative_positions import relative_position_indices
from keras_transformer.layers.relative_positions import relative_scores


def _random(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _numpy_indices(query_length, key_length, k, offset):
    index = np.empty((query_length, key_length), np.int64)
    for i in range(query_length):
        for j in range(key_length):
            index[i, j] = min(max(j - (i + offset), -k), k) + k
    return index


@pytest.mark.parametrize(
    "query_length, key_length, k, offset",
    [(4, 4, 2, 0), (1, 7, 2, 5), (3, 6, 1, 2), (5, 3, 8, 0)],
)
def test_indices_are_the_clipped_distances(query_length, key_length, k, offset):
    actual = relative_position_indices(query_length, key_length, k, offset)
    expected = _numpy_indices(query_length, key_length, k, offset)
    np.testing.assert_array_equal(np.asarray(actual), expected)
    assert keras.backend.standardize_dtype(actual.dtype) == "int32"


def test_indices_with_tensor_lengths_and_offset_under_xla():
    @tf.function(jit_compile=True)
    def indices(query_length, offset):
        return relative_position_indices(query_length, 6, 2, offset)

    actual = indices(tf.constant(2), tf.constant(3))
    np.testing.assert_array_equal(np.asarray(actual), _numpy_indices(2, 6, 2, 3))


def test_scores_equal_the_shaw_term_written_out():
    B, T, S, H, D, k = 2, 3, 4, 2, 5, 1
    query, table = _random(B, T, H, D), _random(2 * k + 1, D, seed=1)
    index = _numpy_indices(T, S, k, offset=1)
    expected = np.zeros((B, H, T, S), np.float32)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                for s in range(S):
                    expected[b, h, t, s] = query[b, t, h] @ table[index[t, s]]
    actual = relative_scores(query, table, index)
    np.testing.assert_allclose(np.asarray(actual), expected, atol=1e-5)


def test_context_equals_the_shaw_term_written_out():
    B, T, S, H, D, k = 2, 3, 4, 2, 6, 2
    weights, table = _random(B, H, T, S, seed=2), _random(2 * k + 1, D, seed=3)
    index = _numpy_indices(T, S, k, offset=0)
    expected = np.zeros((B, T, H, D), np.float32)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                for s in range(S):
                    expected[b, t, h] += weights[b, h, t, s] * table[index[t, s]]
    actual = relative_context(weights, table, index)
    np.testing.assert_allclose(np.asarray(actual), expected, atol=1e-5)


def test_the_table_is_cast_to_the_dtype_of_the_other_operand():
    query = tf.cast(_random(1, 2, 1, 4), "bfloat16")
    table = _random(3, 4, seed=4)  # float32 weights
    index = _numpy_indices(2, 2, 1, 0)
    scores = relative_scores(query, table, index)
    context = relative_context(tf.cast(_random(1, 1, 2, 2), "float16"), table, index)
    assert keras.backend.standardize_dtype(scores.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(context.dtype) == "float16"
