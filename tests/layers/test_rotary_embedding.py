import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.layers import SinusoidalPositionalEncoding
from keras_transformer.layers.rotary_embedding import apply_rotary_embedding


def _random(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _numpy_rotary(x, max_wavelength, offset=0):
    """RoFormer eq. 34 in float64: pair i at position p turns by p * w^(-2i/d)."""
    x = x.astype(np.float64)
    length, head_dim = x.shape[1], x.shape[-1]
    positions = np.arange(length, dtype=np.float64) + offset
    inverse_frequency = max_wavelength ** (-2.0 * np.arange(head_dim // 2) / head_dim)
    angles = positions[:, None] * inverse_frequency[None, :]  # (T, d / 2)
    cos, sin = np.cos(angles)[None, :, None], np.sin(angles)[None, :, None]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def _numpy_sinusoids(length, head_dim, max_wavelength, offset=0):
    """sin at even, cos at odd dimensions, as SinusoidalPositionalEncoding."""
    positions = np.arange(length, dtype=np.float64) + offset
    pair = np.arange(head_dim) // 2
    angles = positions[:, None] * max_wavelength ** (-2.0 * pair / head_dim)
    return np.where(np.arange(head_dim) % 2 == 0, np.sin(angles), np.cos(angles))


@pytest.mark.parametrize("offset", [0, 3, 250])
@pytest.mark.parametrize("max_wavelength", [10000.0, 100.0])
def test_equals_numpy_rotation_with_sinusoidal_table(offset, max_wavelength):
    x = _random(2, 5, 3, 8)
    table = SinusoidalPositionalEncoding(max_wavelength)(
        np.zeros((5, 8), "float32"), start_index=offset
    )
    actual = np.asarray(apply_rotary_embedding(keras.ops.convert_to_tensor(x), table))
    expected = _numpy_rotary(x, max_wavelength, offset)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_equals_numpy_rotation_with_a_numpy_table():
    x = _random(1, 4, 2, 6, seed=1)
    table = _numpy_sinusoids(4, 6, 10000.0, offset=7).astype("float32")
    actual = np.asarray(apply_rotary_embedding(x, table))
    np.testing.assert_allclose(actual, _numpy_rotary(x, 10000.0, 7), atol=1e-6)
    # Position 0 is not rotated; later positions are.
    np.testing.assert_allclose(
        np.asarray(apply_rotary_embedding(x, _numpy_sinusoids(4, 6, 1e4))[:, 0]),
        x[:, 0],
        atol=1e-7,
    )
    assert not np.allclose(actual, x, atol=1e-2)


def test_dot_products_depend_on_the_distance_only():
    q, k = _random(1, 6, 1, 8, seed=2), _random(1, 6, 1, 8, seed=3)

    def scores(offset):
        table = _numpy_sinusoids(6, 8, 10000.0, offset).astype("float32")
        rq = np.asarray(apply_rotary_embedding(q, table))
        rk = np.asarray(apply_rotary_embedding(k, table))
        return np.einsum("bthd,bshd->bhts", rq, rk)

    np.testing.assert_allclose(scores(0), scores(40), atol=1e-4)
    assert not np.allclose(scores(0), np.einsum("bthd,bshd->bhts", q, k), atol=1e-2)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_keeps_the_dtype_of_x(dtype):
    x = tf.cast(_random(1, 3, 2, 4), dtype)
    table = _numpy_sinusoids(3, 4, 10000.0).astype("float32")
    out = apply_rotary_embedding(x, table)
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    np.testing.assert_allclose(
        np.asarray(tf.cast(out, "float32")),
        _numpy_rotary(np.asarray(tf.cast(x, "float32")), 10000.0),
        atol=0.05,
    )


def test_under_xla_with_a_tensor_offset():
    x = _random(2, 3, 2, 4, seed=4)
    encoding = SinusoidalPositionalEncoding(10000.0)

    @tf.function(jit_compile=True)
    def rotate(x, offset):
        table = encoding(tf.zeros((3, 4)), start_index=offset)
        return apply_rotary_embedding(x, table)

    actual = np.asarray(rotate(x, tf.constant(9)))
    np.testing.assert_allclose(actual, _numpy_rotary(x, 10000.0, 9), atol=1e-5)


def test_odd_head_dim_is_rejected():
    with pytest.raises(ValueError, match="must be even.*x.shape=\\(1, 2, 1, 3\\)"):
        apply_rotary_embedding(np.zeros((1, 2, 1, 3), "float32"), np.zeros((2, 3)))
