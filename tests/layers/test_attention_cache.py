import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.layers.attention_cache import CACHE_KEYS
from keras_transformer.layers.attention_cache import check_cache
from keras_transformer.layers.attention_cache import empty_buffer
from keras_transformer.layers.attention_cache import fold_shared_rows
from keras_transformer.layers.attention_cache import in_place_writes
from keras_transformer.layers.attention_cache import unfold_shared_rows
from keras_transformer.layers.attention_cache import write_cache
from keras_transformer.layers.attention_cache import written_part


def _random(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _cache(batch_size, heads, slots, key_dim=4, value_dim=3, seed=0):
    return {
        "key": _random(batch_size, heads, slots, key_dim, seed=seed),
        "value": _random(batch_size, heads, slots, value_dim, seed=seed + 1),
    }


def _run(path, function, *args):
    if path == "graph":
        function = tf.function(function)
    elif path == "xla":
        function = tf.function(function, jit_compile=True)
    elif path == "in_place":
        function = tf.function(_in_place(function))
    return function(*args)


def _in_place(function):
    """`function(cache, ...)` traced in `in_place_writes`, on a private
    copy of the caller's cache (the context writes the buffers it owns)."""

    def run(cache, *args):
        with in_place_writes():
            own = {
                name: empty_buffer(tuple(cache[name].shape), cache[name].dtype)
                + cache[name]
                for name in CACHE_KEYS
            }
            return function(own, *args)

    return run


def _assert_written(path, expected, cache, key, value, index, beam_size=None):
    updated = _run(
        path,
        lambda c, k, v, i: write_cache(c, k, v, i, beam_size=beam_size),
        cache,
        key,
        value,
        tf.constant(index),
    )
    for name in CACHE_KEYS:
        np.testing.assert_array_equal(np.asarray(updated[name]), expected[name])


def test_check_cache_returns_the_two_buffers():
    cache = _cache(1, 2, 3)
    checked = check_cache(cache)
    assert set(checked) == set(CACHE_KEYS) == {"key", "value"}
    assert checked is not cache
    assert checked["key"] is cache["key"]


@pytest.mark.parametrize(
    "cache", [np.zeros((1, 2, 3, 4)), {"key": np.zeros(1)}, {"k": 0, "v": 0}]
)
def test_check_cache_rejects_anything_else(cache):
    with pytest.raises(ValueError, match="must be a dict"):
        check_cache(cache)


@pytest.mark.parametrize("path", ["eager", "graph", "xla", "in_place"])
@pytest.mark.parametrize("index, length", [(0, 1), (2, 3), (4, 1)])
def test_write_puts_new_positions_heads_major_at_index(path, index, length):
    B, H, L = 2, 3, 5
    cache = _cache(B, H, L)
    key, value = _random(B, length, H, 4, seed=5), _random(B, length, H, 3, seed=6)
    expected = {name: cache[name].copy() for name in CACHE_KEYS}
    for name, new in (("key", key), ("value", value)):
        for t in range(length):
            expected[name][:, :, index + t] = new[:, t]
    _assert_written(path, expected, cache, key, value, index)


@pytest.mark.parametrize("path", ["eager", "xla", "in_place"])
def test_write_to_a_beam_cache_puts_position_s_of_beam_j_at_slot_s_r_plus_j(path):
    groups, beams, H, L, index, length = 2, 3, 2, 4, 1, 2
    cache = _cache(groups, H, L * beams)
    key = _random(groups * beams, length, H, 4, seed=7)
    value = _random(groups * beams, length, H, 3, seed=8)
    expected = {name: cache[name].copy() for name in CACHE_KEYS}
    for name, new in (("key", key), ("value", value)):
        for c in range(groups):
            for j in range(beams):
                for t in range(length):
                    slot = (index + t) * beams + j
                    expected[name][c, :, slot] = new[c * beams + j, t]
    _assert_written(path, expected, cache, key, value, index, beam_size=beams)


def test_in_place_writes_use_the_core_inplace_op_and_fresh_buffers():
    B, H, L = 2, 3, 4
    key, value = _random(B, 1, H, 4, seed=1), _random(B, 1, H, 3, seed=2)

    @tf.function
    def fill(key, value):
        with in_place_writes():
            cache = {
                "key": empty_buffer((B, H, L, 4), "float32"),
                "value": empty_buffer((B, H, L, 3), "float32"),
            }
            for index in range(L):
                cache = write_cache(cache, key * (index + 1), value, index)
        return cache

    expected = np.stack([key[:, 0] * (i + 1) for i in range(L)], axis=2)
    for _ in range(2):  # each run starts from new zero buffers
        np.testing.assert_array_equal(fill(key, value)["key"], expected)
    ops = {
        node.op
        for node in fill.get_concrete_function(key, value).graph.as_graph_def().node
    }
    assert {"Empty", "InplaceUpdate"} <= ops
    assert not {op for op in ops if op.startswith("Xla")}


def test_in_place_writes_change_nothing_eagerly():
    cache = {name: tf.constant(buffer) for name, buffer in _cache(1, 2, 3).items()}
    before = {name: buffer.numpy().copy() for name, buffer in cache.items()}
    with in_place_writes():
        updated = write_cache(cache, tf.ones((1, 1, 2, 4)), tf.ones((1, 1, 2, 3)), 1)
    for name in CACHE_KEYS:
        np.testing.assert_array_equal(cache[name], before[name])
        assert not np.array_equal(updated[name], before[name])


def test_written_part_keeps_the_first_positions():
    cache = _cache(2, 3, 5)
    key, value = written_part(cache["key"], cache["value"], tf.constant(2))
    np.testing.assert_array_equal(key, cache["key"][:, :, :2])
    np.testing.assert_array_equal(value, cache["value"][:, :, :2])


def test_write_keeps_the_cache_dtype():
    cache = {name: tf.zeros((1, 1, 3, 2), "float32") for name in CACHE_KEYS}
    new = tf.ones((1, 1, 1, 2), "bfloat16")
    updated = write_cache(cache, new, new, 1)
    assert {buffer.dtype for buffer in updated.values()} == {tf.float32}


C, R, T, S, H, D = 2, 3, 2, 4, 2, 5


def test_fold_puts_the_rows_of_a_group_one_after_another():
    query = _random(R * C, T, H, D)
    query_mask = np.random.default_rng(1).random((R * C, T)) > 0.5
    value_mask = np.random.default_rng(2).random((C, S)) > 0.5
    attention_mask = np.random.default_rng(3).random((R * C, T, S)) > 0.5
    q, qm, vm, am = fold_shared_rows(C, query, query_mask, value_mask, attention_mask)
    for c in range(C):
        for r in range(R):
            for t in range(T):
                row = c * R + r
                np.testing.assert_array_equal(
                    np.asarray(q)[c, r * T + t], query[row, t]
                )
                assert np.asarray(qm)[c, r * T + t] == query_mask[row, t]
                np.testing.assert_array_equal(
                    np.asarray(am)[c, r * T + t], attention_mask[row, t]
                )
    np.testing.assert_array_equal(np.asarray(vm), value_mask)


def test_fold_keeps_the_first_value_mask_row_of_each_group():
    value_mask = np.random.default_rng(4).random((R * C, S)) > 0.5
    _, query_mask, folded, attention_mask = fold_shared_rows(
        C, _random(R * C, T, H, D), value_mask=value_mask
    )
    assert query_mask is None and attention_mask is None
    np.testing.assert_array_equal(np.asarray(folded), value_mask[::R])


def test_fold_of_a_per_head_mask_and_unfold_of_weights_are_inverse():
    mask = _random(R * C, H, T, S, seed=9)  # any values: only moved around
    folded = np.asarray(
        fold_shared_rows(C, _random(R * C, T, H, D), None, None, mask)[3]
    )
    assert folded.shape == (C, H, R * T, S)
    for c in range(C):
        for r in range(R):
            np.testing.assert_array_equal(
                folded[:, :, r * T : (r + 1) * T][c], mask[c * R + r]
            )
    output = _random(C, R * T, 7, seed=10)
    unfolded_output, unfolded = unfold_shared_rows(R * C, T, output, folded)
    np.testing.assert_array_equal(np.asarray(unfolded), mask)
    np.testing.assert_array_equal(
        np.asarray(unfolded_output), output.reshape(C * R, T, 7)
    )


def test_unfold_without_weights_and_one_row_per_cache_row():
    output = _random(C, T, 7)
    unfolded, weights = unfold_shared_rows(C, T, output)
    assert weights is None
    np.testing.assert_array_equal(np.asarray(unfolded), output)


def test_shared_cross_attention_rows_keep_the_static_query_length():
    # An exported translator traces a beam step with unknown batch sizes; the
    # next block's self-attention cache write needs the static query length.
    from keras_transformer.layers import MultiHeadAttention

    layer = MultiHeadAttention(num_heads=4, key_dim=4)
    memory = np.zeros((1, 3, 16), "float32")
    layer(np.zeros((1, 1, 16), "float32"), memory)  # built for cross-attention

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, 1, 16), "float32"),  # (r C, 1, d) queries
            tf.TensorSpec((None, None, 16), "float32"),  # (C, S, d) memory
        ]
    )
    def step(x, memory):
        cache = layer.compute_key_value_cache(memory)
        return layer(x, cache=cache, cache_index=0)[0]

    output = step.get_concrete_function().structured_outputs
    assert output.shape.as_list() == [None, 1, 16]
