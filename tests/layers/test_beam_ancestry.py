import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.layers.beam_ancestry import ancestry_context
from keras_transformer.layers.beam_ancestry import ancestry_one_hot
from keras_transformer.layers.beam_ancestry import ancestry_scores
from keras_transformer.layers.beam_ancestry import check_ancestry
from keras_transformer.layers.beam_ancestry import own_history

GROUPS, BEAMS, LENGTH, T = 2, 3, 4, 2


def _random(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _ancestry(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, BEAMS, size=(GROUPS, BEAMS, LENGTH)).astype("int32")


def _ancestor_slot(ancestry, c, r, s):
    """The slot of position `s` for row `c * R + r` (slot `s * R + j`)."""
    return s * BEAMS + ancestry[c, r, s]


def test_check_returns_the_beam_size():
    assert check_ancestry(_ancestry(), LENGTH * BEAMS) == BEAMS
    assert check_ancestry(_ancestry(), None) == BEAMS


@pytest.mark.parametrize(
    "shape", [(GROUPS, BEAMS), (GROUPS, BEAMS, LENGTH + 1), (GROUPS, None, LENGTH)]
)
def test_check_rejects_shapes_that_do_not_fit_the_cache(shape):
    ancestry = keras.KerasTensor(shape, dtype="int32")
    with pytest.raises(ValueError, match=f"= {LENGTH * BEAMS}.*shape="):
        check_ancestry(ancestry, LENGTH * BEAMS)


def test_one_hot_marks_the_beam_holding_each_position():
    ancestry = _ancestry()
    one_hot = np.asarray(ancestry_one_hot(ancestry, "float32"))
    assert one_hot.shape == (GROUPS, LENGTH, BEAMS, BEAMS)
    expected = np.zeros_like(one_hot)
    for c in range(GROUPS):
        for r in range(BEAMS):
            for s in range(LENGTH):
                expected[c, s, ancestry[c, r, s], r] = 1.0
    np.testing.assert_array_equal(one_hot, expected)


def _numpy_scores(query, key_cache, ancestry):
    heads, kv_heads = query.shape[2], key_cache.shape[1]
    scores = np.zeros((GROUPS * BEAMS, heads, T, LENGTH), np.float32)
    for c in range(GROUPS):
        for r in range(BEAMS):
            for h in range(heads):
                for s in range(LENGTH):
                    key = key_cache[
                        c, h // (heads // kv_heads), _ancestor_slot(ancestry, c, r, s)
                    ]
                    scores[c * BEAMS + r, h, :, s] = query[c * BEAMS + r, :, h] @ key
    return scores


def _numpy_context(weights, value_cache, ancestry):
    heads, kv_heads = weights.shape[1], value_cache.shape[1]
    context = np.zeros((GROUPS * BEAMS, T, heads, value_cache.shape[-1]), np.float32)
    for c in range(GROUPS):
        for r in range(BEAMS):
            for h in range(heads):
                for s in range(LENGTH):
                    value = value_cache[
                        c, h // (heads // kv_heads), _ancestor_slot(ancestry, c, r, s)
                    ]
                    context[c * BEAMS + r, :, h] += np.outer(
                        weights[c * BEAMS + r, h, :, s], value
                    )
    return context


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (4, 1)])
def test_scores_and_context_read_each_rows_ancestors(heads, kv_heads, jit_compile):
    ancestry = _ancestry(seed=heads + kv_heads)
    query = _random(GROUPS * BEAMS, T, heads, 6, seed=1)
    key_cache = _random(GROUPS, kv_heads, LENGTH * BEAMS, 6, seed=2)
    value_cache = _random(GROUPS, kv_heads, LENGTH * BEAMS, 5, seed=3)
    weights = _random(GROUPS * BEAMS, heads, T, LENGTH, seed=4)

    @tf.function(jit_compile=jit_compile)
    def attend(query, key_cache, value_cache, weights, ancestry):
        one_hot = ancestry_one_hot(ancestry, "float32")
        return (
            ancestry_scores(query, key_cache, one_hot),
            ancestry_context(weights, value_cache, one_hot),
        )

    scores, context = attend(query, key_cache, value_cache, weights, ancestry)
    np.testing.assert_allclose(
        np.asarray(scores), _numpy_scores(query, key_cache, ancestry), atol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(context), _numpy_context(weights, value_cache, ancestry), atol=1e-5
    )


def test_rows_that_share_every_ancestor_get_the_same_scores():
    ancestry = np.zeros((GROUPS, BEAMS, LENGTH), "int32")  # all from beam 0
    query = np.repeat(_random(GROUPS, T, 2, 4)[:, None], BEAMS, 1).reshape(
        GROUPS * BEAMS, T, 2, 4
    )
    key_cache = _random(GROUPS, 2, LENGTH * BEAMS, 4, seed=5)
    scores = np.asarray(
        ancestry_scores(query, key_cache, ancestry_one_hot(ancestry, "float32"))
    ).reshape(GROUPS, BEAMS, 2, T, LENGTH)
    for r in range(1, BEAMS):
        np.testing.assert_allclose(scores[:, r], scores[:, 0], atol=1e-6)


def test_beam_cache_step_keeps_the_static_query_length():
    # An exported translator traces the step with unknown batch and cache
    # lengths; the next block's cache write needs the static query length.
    from keras_transformer.layers import MultiHeadAttention

    layer = MultiHeadAttention(num_heads=4, key_dim=4)
    layer(np.zeros((1, 1, 16), "float32"))  # built for self-attention
    beams = 2

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, 1, 16), "float32"),
            tf.TensorSpec((None, beams, None), "int32"),
            tf.TensorSpec((None, 4, None, 4), "float32"),
        ]
    )
    def step(x, ancestry, buffer):
        cache = {"key": buffer, "value": buffer}
        output, _ = layer(
            x, cache=cache, cache_index=0, cache_ancestry=ancestry, causal=True
        )
        return output

    output = step.get_concrete_function().structured_outputs
    assert output.shape.as_list() == [None, 1, 16]


@pytest.mark.parametrize("written", [1, 3, LENGTH])
def test_own_history_gathers_each_rows_ancestor_slots(written):
    kv_heads = 2
    keys = _random(GROUPS, kv_heads, LENGTH * BEAMS, 5, seed=1)
    values = _random(GROUPS, kv_heads, LENGTH * BEAMS, 3, seed=2)
    ancestry = _ancestry(seed=4)
    k, v = own_history(keys, values, ancestry, tf.constant(written))
    assert k.shape == (GROUPS * BEAMS, kv_heads, written, 5)
    assert v.shape == (GROUPS * BEAMS, kv_heads, written, 3)
    for c in range(GROUPS):
        for r in range(BEAMS):
            for s in range(written):
                slot = _ancestor_slot(ancestry, c, r, s)
                np.testing.assert_array_equal(k[c * BEAMS + r, :, s], keys[c, :, slot])
                np.testing.assert_array_equal(
                    v[c * BEAMS + r, :, s], values[c, :, slot]
                )
