import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.layers import MultiHeadAttention
from tests.test_case import run_layer_test

B, T, S, D, H, DK = 2, 5, 7, 16, 4, 4


def _numpy_attention(query, value, wq, wk, wv, wo, bq, bk, bv, bo, mask=None):
    """softmax(Q K^T / sqrt(d_k)) V per head, heads concatenated, then W_O."""
    heads = []
    for h in range(wq.shape[1]):
        q = query @ wq[:, h] + bq[h]  # (B, T, dk)
        k = value @ wk[:, h] + bk[h]  # (B, S, dk)
        v = value @ wv[:, h] + bv[h]
        scores = q @ np.swapaxes(k, 1, 2) / np.sqrt(q.shape[-1])  # (B, T, S)
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        scores = scores - scores.max(-1, keepdims=True)
        weights = np.exp(scores)
        weights = weights / weights.sum(-1, keepdims=True)
        heads.append(weights @ v)
    concat = np.concatenate(heads, axis=-1)  # (B, T, H * dv)
    return concat @ wo + bo


def _random(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _head_weights(seed=1):
    rng = np.random.default_rng(seed)
    w = lambda *s: rng.normal(scale=0.3, size=s).astype("float32")
    return dict(
        wq=w(D, H, DK), wk=w(D, H, DK), wv=w(D, H, DK), wo=w(H * DK, D),
        bq=w(H, DK), bk=w(H, DK), bv=w(H, DK), bo=w(D),
    )  # fmt: skip


def _set_weights(layer, p):
    if layer.is_self_attention:
        kernel = np.concatenate(
            [p["wq"].reshape(D, -1), p["wk"].reshape(D, -1), p["wv"].reshape(D, -1)],
            axis=1,
        )
        bias = np.concatenate([p["bq"].ravel(), p["bk"].ravel(), p["bv"].ravel()])
        layer.query_key_value_dense.set_weights([kernel, bias])
    else:
        layer.query_dense.set_weights([p["wq"].reshape(D, -1), p["bq"].ravel()])
        layer.key_dense.set_weights([p["wk"].reshape(D, -1), p["bk"].ravel()])
        layer.value_dense.set_weights([p["wv"].reshape(D, -1), p["bv"].ravel()])
    layer.output_dense.set_weights([p["wo"], p["bo"]])


def _padding_mask(lengths, length):
    return np.arange(length)[None, :] < np.array(lengths)[:, None]


@pytest.mark.parametrize("masked", [False, True])
def test_cross_attention_equals_numpy_formula(masked):
    query, value = _random(B, T, D), _random(B, S, D, seed=2)
    params = _head_weights()
    layer = MultiHeadAttention(num_heads=H, key_dim=DK)
    layer(query, value)
    _set_weights(layer, params)
    value_mask = _padding_mask([S, 3], S) if masked else None
    mask = (
        None if value_mask is None else np.broadcast_to(value_mask[:, None], (B, T, S))
    )
    expected = _numpy_attention(query, value, **params, mask=mask)
    actual = layer(query, value, value_mask=value_mask)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_self_attention_with_fused_qkv_equals_numpy_formula():
    x = _random(B, T, D)
    params = _head_weights()
    layer = MultiHeadAttention(num_heads=H, key_dim=DK)
    layer(x, causal=True)
    assert layer.is_self_attention
    assert len(layer.trainable_weights) == 4  # fused QKV kernel/bias + W_O
    _set_weights(layer, params)
    padding = _padding_mask([T, 3], T)
    mask = np.tril(np.ones((T, T), bool))[None] & padding[:, None, :]
    expected = _numpy_attention(x, x, **params, mask=mask)
    actual = layer(x, value_mask=padding, causal=True)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def _keras_mha_with_weights(params, query, value):
    reference = keras.layers.MultiHeadAttention(num_heads=H, key_dim=DK)
    reference(query, value)
    reference._query_dense.set_weights([params["wq"], params["bq"]])
    reference._key_dense.set_weights([params["wk"], params["bk"]])
    reference._value_dense.set_weights([params["wv"], params["bv"]])
    reference._output_dense.set_weights([params["wo"].reshape(H, DK, D), params["bo"]])
    return reference


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("self_attention", [False, True])
def test_equals_keras_multi_head_attention(with_mask, self_attention):
    query = _random(B, T, D)
    value = query if self_attention else _random(B, S, D, seed=2)
    key_length = value.shape[1]
    params = _head_weights()
    reference = _keras_mha_with_weights(params, query, value)
    layer = MultiHeadAttention(num_heads=H, key_dim=DK)
    layer(query) if self_attention else layer(query, value)
    _set_weights(layer, params)
    mask = None
    if with_mask:  # padding + causal; no fully masked rows (Keras differs there)
        mask = _padding_mask([key_length, 3], key_length)[:, None, :] & np.tril(
            np.ones((T, key_length), bool)
        )
    expected = reference(query, value, attention_mask=mask)
    if self_attention:
        actual = layer(query, attention_mask=mask)
    else:
        actual = layer(query, value, attention_mask=mask)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_fully_masked_query_row_is_the_same_on_every_path():
    x = _random(B, T, D)
    query_mask = np.ones((B, T), bool)
    query_mask[1, 2] = False  # one padded query row
    outputs = []
    for dropout in (0.0, 0.3):
        layer = MultiHeadAttention(num_heads=H, key_dim=DK, dropout=dropout)
        layer(x)
        _set_weights(layer, _head_weights())
        for scores in (False, True):
            out = layer(x, query_mask=query_mask, return_attention_scores=scores)
            if scores:
                out, weights = out
                np.testing.assert_array_equal(weights[1, :, 2], 0.0)
                np.testing.assert_allclose(
                    np.asarray(weights).sum(-1)[query_mask[:, None, :].repeat(H, 1)],
                    1.0,
                    atol=1e-6,
                )
            outputs.append(np.asarray(out))
    for out in outputs[1:]:
        np.testing.assert_array_equal(out, outputs[0])
    # The padded row attends to nothing: its output is the W_O bias.
    np.testing.assert_allclose(outputs[0][1, 2], _head_weights()["bo"], atol=1e-6)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_fully_masked_row_finite_under_every_policy(policy):
    layer = MultiHeadAttention(num_heads=2, key_dim=8, dtype=policy)
    x = _random(B, T, D) * 30
    value_mask = np.zeros((B, T), bool)
    out, weights = layer(x, value_mask=value_mask, return_attention_scores=True)
    assert np.all(np.isfinite(np.asarray(keras.ops.cast(out, "float32"))))
    assert weights.dtype == "float32"
    np.testing.assert_array_equal(weights, 0.0)


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("num_key_value_heads", [None, 2, 1])
def test_cached_self_attention_equals_full_causal_pass(
    num_key_value_heads, jit_compile
):
    x = _random(B, T, D)
    layer = MultiHeadAttention(
        num_heads=H, key_dim=DK, num_key_value_heads=num_key_value_heads
    )
    full = layer(x, causal=True)
    kv_heads = num_key_value_heads or H
    cache = layer.init_cache(B, T)
    # Heads-major, separate key and value buffers; MQA/GQA shrink them.
    assert set(cache) == {"key", "value"}
    for buffer in cache.values():
        assert buffer.shape == (B, kv_heads, T, DK)
        np.testing.assert_array_equal(buffer, 0.0)

    @tf.function(jit_compile=jit_compile)
    def step(token, cache, index):
        return layer(token, cache=cache, cache_index=index, causal=True)

    steps = []
    for index in range(T):
        out, cache = step(x[:, index : index + 1], cache, tf.constant(index))
        steps.append(np.asarray(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)
    assert cache["key"].shape == (B, kv_heads, T, DK)
    assert cache["value"].shape == (B, kv_heads, T, DK)


def test_cache_holds_the_projected_keys_and_values_heads_major():
    x = _random(B, T, D)
    layer = MultiHeadAttention(num_heads=H, key_dim=DK, num_key_value_heads=2)
    layer(x)
    _, cache = layer(x, cache=layer.init_cache(B, T + 2), cache_index=1)
    qkv = np.asarray(layer.query_key_value_dense(x))
    k = qkv[..., H * DK : (H + 2) * DK].reshape(B, T, 2, DK).transpose(0, 2, 1, 3)
    v = qkv[..., (H + 2) * DK :].reshape(B, T, 2, DK).transpose(0, 2, 1, 3)
    np.testing.assert_allclose(cache["key"][:, :, 1 : T + 1], k, atol=1e-6)
    np.testing.assert_allclose(cache["value"][:, :, 1 : T + 1], v, atol=1e-6)
    for name in ("key", "value"):  # unwritten slots stay empty
        np.testing.assert_array_equal(cache[name][:, :, 0], 0.0)
        np.testing.assert_array_equal(cache[name][:, :, T + 1], 0.0)


def _graph_ops(function, *args):
    graph = function.get_concrete_function(*args).graph.as_graph_def()
    ops = {node.op for node in graph.node}
    for library_function in graph.library.function:
        ops |= {node.op for node in library_function.node_def}
    return ops


def test_cache_write_is_in_place_under_xla_and_core_ops_otherwise():
    x = _random(B, 1, D)
    layer = MultiHeadAttention(num_heads=H, key_dim=DK)
    layer(x)
    cache = layer.init_cache(B, T)

    def step(token, cache, index):
        return layer(token, cache=cache, cache_index=index, causal=True)

    args = (x, cache, tf.constant(2))
    xla_ops = _graph_ops(tf.function(step, jit_compile=True), *args)
    graph_ops = _graph_ops(tf.function(step), *args)
    assert "XlaDynamicUpdateSlice" in xla_ops
    assert not {op for op in graph_ops if op.startswith("Xla")}
    xla_out = tf.function(step, jit_compile=True)(*args)
    graph_out = tf.function(step)(*args)
    eager_out = step(*args)
    for other in (graph_out, eager_out):
        np.testing.assert_allclose(other[0], xla_out[0], atol=1e-6)
        for name in ("key", "value"):
            np.testing.assert_allclose(other[1][name], xla_out[1][name], atol=1e-6)


def test_value_dim_may_differ_from_key_dim_with_a_cache():
    x = _random(B, T, D)
    layer = MultiHeadAttention(num_heads=H, key_dim=DK, value_dim=6)
    full = layer(x, causal=True)
    cache = layer.init_cache(B, T)
    assert cache["value"].shape == (B, H, T, 6)
    steps = []
    for index in range(T):
        out, cache = layer(
            x[:, index : index + 1], cache=cache, cache_index=index, causal=True
        )
        steps.append(np.asarray(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_old_stacked_cache_is_rejected():
    layer = MultiHeadAttention(num_heads=H, key_dim=DK)
    x = _random(B, 1, D)
    layer(x)
    with pytest.raises(ValueError, match="must be a dict"):
        layer(x, cache=np.zeros((B, 2, T, H, DK), "float32"), cache_index=0)


@pytest.mark.parametrize("cache_dtype", [None, "float32"])
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_cache_under_mixed_precision(policy, cache_dtype):
    layer = MultiHeadAttention(num_heads=H, key_dim=DK, dtype=policy)
    x = _random(B, T, D)
    full = np.asarray(keras.ops.cast(layer(x, causal=True), "float32"))
    cache = layer.init_cache(B, T, dtype=cache_dtype)
    expected_dtype = cache_dtype or layer.compute_dtype
    assert cache["key"].dtype == expected_dtype
    step = tf.function(
        lambda token, cache, index: layer(
            token, cache=cache, cache_index=index, causal=True
        ),
        jit_compile=True,
        autograph=False,
    )
    steps = []
    for index in range(T):
        out, cache = step(x[:, index : index + 1], cache, tf.constant(index))
        assert out.dtype == layer.compute_dtype
        steps.append(np.asarray(keras.ops.cast(out, "float32")))
    # The layer does not autocast its call arguments: a float32 cache is not
    # cast to 16 bits on the way in (the loop would change its dtype).
    for buffer in cache.values():
        assert buffer.dtype == expected_dtype
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=0.05)
    # The stored keys are the 16-bit projections (up to a 16-bit rounding:
    # one position at a time under XLA here, all at once eagerly there).
    keys = keras.ops.split(layer.query_key_value_dense(x), 3, axis=-1)[1]
    keys = np.asarray(keras.ops.cast(keys, "float32")).reshape(B, T, H, DK)
    np.testing.assert_allclose(
        np.asarray(keras.ops.cast(cache["key"], "float32")),
        keys.transpose(0, 2, 1, 3),
        rtol=1e-2,
        atol=1e-2,
    )


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


def test_float32_caches_under_mixed_precision_beam_and_cross_attention():
    policy = "mixed_bfloat16"
    self_attention = MultiHeadAttention(num_heads=H, key_dim=DK, dtype=policy)
    cross_attention = MultiHeadAttention(num_heads=H, key_dim=DK, dtype=policy)
    groups, beams = 2, 3
    x = _random(groups * beams, T, D)
    memory = _random(groups, S, D)
    self_attention(x[:, :1])
    reference = cross_attention(x, value=np.repeat(memory, beams, axis=0))
    cross_cache = cross_attention.compute_key_value_cache(memory, dtype="float32")
    assert {_dtype(b) for b in cross_cache.values()} == {"float32"}
    out, cross_cache = cross_attention(x, cache=cross_cache)
    assert _dtype(out) == "bfloat16"
    # Not autocast on the way in: still float32.
    assert {_dtype(b) for b in cross_cache.values()} == {"float32"}
    np.testing.assert_allclose(
        keras.ops.cast(out, "float32"), keras.ops.cast(reference, "float32"), atol=0.05
    )

    # Beam caches over T steps, hypotheses reordered after each step (the
    # ancestry), float32 buffers against 16-bit ones.
    rng = np.random.default_rng(0)
    step = tf.function(
        lambda token, cache, index, ancestry: self_attention(
            token, cache=cache, cache_index=index, cache_ancestry=ancestry, causal=True
        ),
        jit_compile=True,
        autograph=False,
    )
    outputs = {}
    for dtype in ("float32", "bfloat16"):
        cache = self_attention.init_cache(groups, T, beam_size=beams, dtype=dtype)
        ancestry = np.broadcast_to(np.arange(beams)[None, :, None], (groups, beams, T))
        rng = np.random.default_rng(0)
        steps = []
        for index in range(T):
            own = np.array(ancestry)
            own[:, :, index] = np.arange(beams)  # the new position: own beam
            out, cache = step(x[:, index : index + 1], cache, tf.constant(index), own)
            assert _dtype(out) == "bfloat16"
            assert {_dtype(b) for b in cache.values()} == {dtype}
            steps.append(np.asarray(keras.ops.cast(out, "float32")))
            # Reorder the hypotheses of each group (as beam search does).
            order = np.stack([rng.permutation(beams) for _ in range(groups)])
            ancestry = np.take_along_axis(own, order[:, :, None], axis=1)
        outputs[dtype] = np.concatenate(steps, axis=1)
    np.testing.assert_allclose(outputs["float32"], outputs["bfloat16"], atol=0.05)
    assert np.abs(outputs["float32"]).max() > 0.1  # not trivially equal


def test_cache_dtype_must_be_a_float_dtype():
    layer = MultiHeadAttention(num_heads=H, key_dim=DK)
    layer(_random(B, 1, D))
    with pytest.raises(ValueError, match="float dtype.*Received: dtype=int32"):
        layer.init_cache(B, T, dtype="int32")
    cross = MultiHeadAttention(num_heads=H, key_dim=DK)
    cross(_random(B, 1, D), value=_random(B, S, D))
    with pytest.raises(ValueError, match="float dtype"):
        cross.compute_key_value_cache(_random(B, S, D), dtype="bool")


def test_grouped_query_attention_with_all_heads_equals_standard():
    x = _random(B, T, D)
    standard = MultiHeadAttention(num_heads=H, key_dim=DK)
    grouped = MultiHeadAttention(num_heads=H, key_dim=DK, num_key_value_heads=H)
    standard(x)
    grouped(x)
    grouped.set_weights(standard.get_weights())
    np.testing.assert_allclose(grouped(x, causal=True), standard(x, causal=True))


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_grouped_query_attention_parameter_count(kv_heads):
    layer = MultiHeadAttention(num_heads=H, key_dim=DK, num_key_value_heads=kv_heads)
    layer(_random(B, T, D))
    # W_Q: D x H dk, W_K and W_V: D x kv dk each, W_O: H dk x D, plus biases.
    expected = (D + 1) * (H * DK + 2 * kv_heads * DK) + (H * DK + 1) * D
    assert layer.count_params() == expected


@pytest.mark.parametrize("num_key_value_heads", [None, 1])
def test_cross_attention_cache_equals_direct(num_key_value_heads):
    query, value = _random(B, T, D), _random(B, S, D, seed=2)
    layer = MultiHeadAttention(
        num_heads=H, key_dim=DK, num_key_value_heads=num_key_value_heads
    )
    expected = layer(query, value)
    cache = layer.compute_key_value_cache(value)
    kv_heads = num_key_value_heads or H
    assert cache["key"].shape == (B, kv_heads, S, DK)
    assert cache["value"].shape == (B, kv_heads, S, DK)
    np.testing.assert_allclose(layer(query, cache=cache)[0], expected, atol=1e-6)


@pytest.mark.parametrize("num_key_value_heads", [None, 2])
def test_cross_attention_cache_shared_by_repeated_queries(num_key_value_heads):
    # Beam search: 3 consecutive query rows (beams) share one cache row.
    beams = 3
    query, value = _random(B * beams, T, D), _random(B, S, D, seed=2)
    value_mask = np.array([[True] * S, [True] * 4 + [False] * (S - 4)])
    query_mask = np.random.default_rng(4).random((B * beams, T)) > 0.3
    layer = MultiHeadAttention(
        num_heads=H, key_dim=DK, num_key_value_heads=num_key_value_heads
    )
    expected, expected_weights = layer(
        query,
        np.repeat(value, beams, axis=0),
        value_mask=np.repeat(value_mask, beams, axis=0),
        query_mask=query_mask,
        return_attention_scores=True,
    )
    cache = layer.compute_key_value_cache(value)
    for mask in (value_mask, np.repeat(value_mask, beams, axis=0)):
        out, weights, _ = layer(
            query,
            cache=cache,
            value_mask=mask,
            query_mask=query_mask,
            return_attention_scores=True,
        )
        np.testing.assert_allclose(out, expected, atol=1e-6)
        np.testing.assert_allclose(weights, expected_weights, atol=1e-6)
    attention_mask = np.random.default_rng(5).random((B * beams, H, T, S)) > 0.3
    np.testing.assert_allclose(
        layer(query, cache=cache, attention_mask=attention_mask)[0],
        layer(query, np.repeat(value, beams, 0), attention_mask=attention_mask),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_heads": 0, "key_dim": 4}, "num_heads"),
        ({"num_heads": 2, "key_dim": 4.0}, "key_dim"),
        ({"num_heads": 2, "key_dim": 4, "dropout": 1.5}, "dropout"),
        ({"num_heads": 4, "key_dim": 4, "num_key_value_heads": 3}, "divisible"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiHeadAttention(**kwargs)


def test_self_attention_layer_rejects_value():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    x = _random(B, T, D)
    layer(x)
    with pytest.raises(ValueError, match="self-attention"):
        layer(x, x)


@pytest.mark.parametrize("self_attention", [True, False])
def test_layer_checklist(self_attention):
    inputs = {"query": _random(B, T, D)}
    if not self_attention:
        inputs["value"] = _random(B, S, D)
    run_layer_test(
        MultiHeadAttention,
        {"num_heads": H, "key_dim": DK, "dropout": 0.1},
        inputs,
        expected_output_shape=((B, T, D), (B, H, T, T if self_attention else S)),
        expected_num_trainable_weights=4 if self_attention else 8,
        expected_num_seed_generators=1,
        call_kwargs={"return_attention_scores": True},
        float32_outputs=(1,),
    )


def test_rotary_scores_depend_only_on_relative_position():
    layer = MultiHeadAttention(num_heads=H, key_dim=DK, rotary_max_wavelength=10000)
    x = _random(B, T, D)
    layer(x)
    q = keras.ops.convert_to_tensor(_random(B, T, H, DK, seed=3))
    k = keras.ops.convert_to_tensor(_random(B, T, H, DK, seed=4))
    scores = lambda offset: np.einsum(
        "bthd,bshd->bhts", layer._rotate(q, offset), layer._rotate(k, offset)
    )
    np.testing.assert_allclose(scores(0), scores(37), atol=1e-5)
    np.testing.assert_allclose(scores(0), scores(1000), atol=1e-4)
    # The rotation itself is not the identity and keeps norms.
    assert not np.allclose(layer._rotate(q, 5), q)
    np.testing.assert_allclose(
        np.linalg.norm(layer._rotate(q, 5), axis=-1), np.linalg.norm(q, axis=-1),
        rtol=1e-5,
    )  # fmt: skip


def test_rotary_matches_the_roformer_formula():
    layer = MultiHeadAttention(num_heads=1, key_dim=4, rotary_max_wavelength=10000)
    layer(_random(1, 3, D))
    x = _random(1, 3, 1, 4, seed=5)
    actual = np.asarray(layer._rotate(keras.ops.convert_to_tensor(x), 2))
    expected = np.empty_like(x)
    for t in range(3):
        for i in range(2):
            angle = (t + 2) * 10000 ** (-2 * i / 4)
            a, b = x[0, t, 0, 2 * i], x[0, t, 0, 2 * i + 1]
            expected[0, t, 0, 2 * i] = a * np.cos(angle) - b * np.sin(angle)
            expected[0, t, 0, 2 * i + 1] = a * np.sin(angle) + b * np.cos(angle)
    np.testing.assert_allclose(actual, expected, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs", [{"rotary_max_wavelength": 10000}, {"max_relative_position": 2}]
)
def test_position_aware_attention_cache_equals_full_pass(kwargs):
    x = _random(B, T, D)
    layer = MultiHeadAttention(num_heads=H, key_dim=DK, **kwargs)
    full = layer(x, causal=True)
    for jit_compile in (False, True):
        step = tf.function(
            lambda token, cache, index: layer(
                token, cache=cache, cache_index=index, causal=True
            ),
            jit_compile=jit_compile,
            autograph=False,
        )
        cache = layer.init_cache(B, T)
        steps = []
        for index in range(T):
            out, cache = step(x[:, index : index + 1], cache, tf.constant(index))
            steps.append(np.asarray(out))
        np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_relative_positions_equal_shaw_equations():
    k = 2
    x = _random(1, T, D)
    layer = MultiHeadAttention(num_heads=H, key_dim=DK, max_relative_position=k)
    layer(x)
    params = _head_weights()
    _set_weights(layer, params)
    a_key = _random(2 * k + 1, DK, seed=8)
    a_value = _random(2 * k + 1, DK, seed=9)
    layer.relative_key_embeddings.assign(a_key)
    layer.relative_value_embeddings.assign(a_value)
    causal = np.tril(np.ones((T, T), bool))
    # Shaw et al. (2018), eqs. 2-4, written out per head with loops.
    heads = []
    for h in range(H):
        xq = x[0] @ params["wq"][:, h] + params["bq"][h]
        xk = x[0] @ params["wk"][:, h] + params["bk"][h]
        xv = x[0] @ params["wv"][:, h] + params["bv"][h]
        z = np.zeros((T, DK))
        for i in range(T):
            e = np.full(T, -np.inf)
            for j in range(i + 1):
                rel = np.clip(j - i, -k, k) + k
                e[j] = xq[i] @ (xk[j] + a_key[rel]) / np.sqrt(DK)
            alpha = np.exp(e - e.max())
            alpha /= alpha.sum()
            for j in range(i + 1):
                rel = np.clip(j - i, -k, k) + k
                z[i] += alpha[j] * (xv[j] + a_value[rel])
        heads.append(z)
    expected = np.concatenate(heads, -1) @ params["wo"] + params["bo"]
    actual = layer(x, attention_mask=causal[None])
    np.testing.assert_allclose(actual[0], expected, atol=1e-5)
    assert len(layer.trainable_weights) == 6


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize(
    "options",
    [{}, {"num_key_value_heads": 2}, {"num_key_value_heads": 1},
     {"rotary_max_wavelength": 10000.0}, {"max_relative_position": 2}],
)  # fmt: skip
def test_beam_cache_read_through_ancestry_equals_each_rows_own_history(
    options, jit_compile
):
    # Groups of R beams; after every step each row takes a random parent in
    # its group, as beam search does. Reference: the full causal pass over
    # the row's own history of inputs. The cache itself never moves.
    groups, beams, length = 2, 3, 6
    rng = np.random.default_rng(3)
    layer = MultiHeadAttention(num_heads=H, key_dim=DK, **options)
    layer(_random(groups * beams, 1, D))
    cache = layer.init_cache(groups, length, beam_size=beams)
    for buffer in cache.values():
        assert buffer.shape == (groups, options.get("num_key_value_heads", H),
                                length * beams, DK)  # fmt: skip
    ancestry = np.broadcast_to(np.arange(beams)[:, None], (groups, beams, length))
    history = np.zeros((groups * beams, length, D), "float32")

    @tf.function(jit_compile=jit_compile)
    def step(token, cache, index, ancestry):
        return layer(
            token, cache=cache, cache_index=index, cache_ancestry=ancestry, causal=True
        )

    for index in range(length):
        token = _random(groups * beams, 1, D, seed=10 + index)
        ancestry = ancestry.copy()
        ancestry[:, :, index] = np.arange(beams)  # this step's slot: own beam
        out, cache = step(token, cache, tf.constant(index), tf.constant(ancestry))
        history[:, index] = token[:, 0]
        expected = layer(history[:, : index + 1], causal=True)[:, -1]
        np.testing.assert_allclose(out[:, 0], expected, atol=1e-5)
        parents = rng.integers(0, beams, size=(groups, beams))
        ancestry = np.take_along_axis(ancestry, parents[:, :, None], axis=1)
        rows = (np.arange(groups)[:, None] * beams + parents).reshape(-1)
        history = history[rows]


def test_beam_cache_and_ancestry_must_come_together():
    layer = MultiHeadAttention(num_heads=H, key_dim=DK)
    x = _random(6, 1, D)
    layer(x)
    beam_cache = layer.init_cache(2, T, beam_size=3)
    ancestry = np.zeros((2, 3, T), "int32")
    with pytest.raises(ValueError, match="max_length"):  # slots = R x L
        layer(x, cache=beam_cache, cache_index=0, cache_ancestry=ancestry[:, :, :2])
    with pytest.raises(ValueError, match="self-attention beam cache"):
        layer(x, cache_ancestry=ancestry)
    with pytest.raises(ValueError, match="beam_size"):
        layer.init_cache(2, T, beam_size=0)
