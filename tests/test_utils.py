"""Tests of `keras_transformer.utils`, the helpers every package shares."""

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer import utils
from keras_transformer.layers import utils as layer_utils


@pytest.mark.parametrize("value", [0, -3, 2.0, True, "4", None])
def test_check_positive_int_refuses_and_names_the_value(value):
    with pytest.raises(
        ValueError, match=f"must be a positive integer.*num_layers={value}"
    ):
        utils.check_positive_int("num_layers", value)


def test_check_positive_int_accepts_positive_ints():
    utils.check_positive_int("num_layers", 1)


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, "0.1"])
def test_check_rate_refuses_values_outside_zero_one(value):
    with pytest.raises(ValueError, match=r"must be a float in \[0, 1\)"):
        utils.check_rate("dropout", value)


def test_check_heads():
    utils.check_heads(512, 8)
    utils.check_heads(10, 3, key_dim=4)
    with pytest.raises(ValueError, match="d_model=10 is not divisible by num_heads=3"):
        utils.check_heads(10, 3)


@pytest.mark.parametrize("dtype", ["int32", "bool", "string"])
def test_standardize_cache_dtype_refuses_non_float_dtypes(dtype):
    with pytest.raises(ValueError, match=f"cache_dtype={dtype}"):
        utils.standardize_cache_dtype(dtype, "cache_dtype")


def test_standardize_cache_dtype_names():
    assert utils.standardize_cache_dtype(tf.bfloat16) == "bfloat16"
    assert utils.standardize_cache_dtype("float32") == "float32"


def test_in_xla_context_tells_eager_graph_and_xla_apart():
    seen = {}

    def probe(name):
        seen[name] = utils.in_xla_context()
        return tf.constant(0)

    probe("eager")
    tf.function(lambda: probe("graph"))()
    tf.function(lambda: probe("xla"), jit_compile=True)()
    assert seen == {"eager": False, "graph": False, "xla": True}


def test_cpu_tuned_paths_on_this_machine():
    # CI and the developers' machines have no GPU or TPU.
    assert utils.has_accelerator() is False
    assert utils.cpu_tuned_paths() is True


def _numpy_update(tensor, update, index, axis):
    out = np.array(tensor)
    where = [slice(None)] * out.ndim
    where[axis] = slice(index, index + update.shape[axis])
    out[tuple(where)] = update
    return out


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
@pytest.mark.parametrize("axis, index", [(2, 0), (2, 3), (-2, 5), (0, 1)])
def test_dynamic_update_writes_the_update_and_keeps_the_rest(mode, axis, index):
    rng = np.random.default_rng(0)
    tensor = rng.normal(size=(2, 3, 7, 4)).astype("float32")
    shape = list(tensor.shape)
    shape[axis] = min(2, tensor.shape[axis] - index % tensor.shape[axis])
    update = rng.normal(size=shape).astype("float32")

    def run(tensor, update, index):
        return utils.dynamic_update(tensor, update, index, axis=axis)

    if mode != "eager":
        run = tf.function(run, jit_compile=mode == "xla")
    actual = run(tf.constant(tensor), tf.constant(update), tf.constant(index))
    np.testing.assert_array_equal(actual, _numpy_update(tensor, update, index, axis))


def test_dynamic_update_casts_the_update_to_the_tensor_dtype():
    out = utils.dynamic_update(
        tf.zeros((1, 4), "bfloat16"), np.ones((1, 1), "float32"), 2, axis=1
    )
    assert out.dtype == tf.bfloat16
    np.testing.assert_array_equal(tf.cast(out, "float32"), [[0, 0, 1, 0]])


def test_dynamic_update_is_in_place_under_xla_and_core_ops_otherwise():
    def run(tensor, update):
        return utils.dynamic_update(tensor, update, 1, axis=1)

    args = (tf.TensorSpec((2, 8), "float32"), tf.TensorSpec((2, 1), "float32"))
    graph = tf.function(run).get_concrete_function(*args).graph
    ops = {op.type for op in graph.get_operations()}
    assert "XlaDynamicUpdateSlice" not in ops
    assert "TensorScatterUpdate" in ops
    hlo = tf.function(run, jit_compile=True).experimental_get_compiler_ir(
        tf.zeros((2, 8)), tf.zeros((2, 1))
    )(stage="hlo")
    assert "dynamic-update-slice" in hlo
    tensor, update = np.arange(16.0).reshape(2, 8), np.array([[-1.0], [-2.0]])
    expected = tensor.copy()
    expected[:, 1] = update[:, 0]
    for jit_compile in (False, True):
        out = tf.function(run, jit_compile=jit_compile)(tensor, update)
        np.testing.assert_array_equal(out, expected)


# 4 x 600 rows: more than one chunk's worth, so only the policy picks the path.
def _feed_forward_calls(monkeypatch, cpu_tuned, jit_compile):
    monkeypatch.setattr(layer_utils, "cpu_tuned_paths", lambda: cpu_tuned)
    rows_seen = []
    weights = tf.constant(np.random.default_rng(1).normal(size=(8, 6)), "float32")

    def function(rows):
        rows_seen.append(rows.shape[0])
        return tf.matmul(rows, weights)

    x = tf.constant(np.random.default_rng(2).normal(size=(4, 600, 8)), "float32")
    mask = tf.constant(np.arange(600)[None] < np.array([[600], [10], [0], [5]]))
    run = tf.function(
        lambda x, mask: layer_utils.apply_to_real_positions(function, x, mask, 6),
        jit_compile=jit_compile,
    )
    out = run(x, mask).numpy()
    expected = np.where(mask.numpy()[..., None], x.numpy() @ weights.numpy(), 0)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    return rows_seen


@pytest.mark.parametrize("jit_compile", [False, True])
def test_accelerators_take_the_dense_path(monkeypatch, jit_compile):
    # One call over every row: no gather (graph) and no chunks (XLA).
    assert _feed_forward_calls(monkeypatch, False, jit_compile) == [2400]


# Graph: one call on the gathered real rows; XLA: 5 chunks of 512 rows traced.
@pytest.mark.parametrize("jit_compile, calls", [(False, [None]), (True, [512] * 5)])
def test_cpus_skip_padded_rows(monkeypatch, jit_compile, calls):
    assert _feed_forward_calls(monkeypatch, True, jit_compile) == calls
