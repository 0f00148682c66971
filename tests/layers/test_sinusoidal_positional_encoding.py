import keras
import numpy as np
import pytest

from keras_transformer.layers import SinusoidalPositionalEncoding
from tests.test_case import run_layer_test


def _paper_formula(positions, d_model, max_wavelength=10000.0):
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...), float64."""
    encoding = np.zeros((len(positions), d_model))
    for i in range(0, d_model, 2):
        angle = np.asarray(positions, np.float64) / max_wavelength ** (i / d_model)
        encoding[:, i] = np.sin(angle)
        if i + 1 < d_model:
            encoding[:, i + 1] = np.cos(angle)
    return encoding


def test_matches_paper_formula_length_2048_d512():
    layer = SinusoidalPositionalEncoding()
    actual = layer(np.zeros((1, 2048, 512), "float32"))
    assert actual.dtype == "float32"
    np.testing.assert_allclose(actual[0], _paper_formula(range(2048), 512), atol=1e-5)


@pytest.mark.parametrize("start_index", [1, 17, 2047, 5000, 60000])
def test_start_index_offsets(start_index):
    layer = SinusoidalPositionalEncoding()
    actual = layer(np.zeros((2, 8, 512), "float32"), start_index=start_index)
    expected = _paper_formula(range(start_index, start_index + 8), 512)
    np.testing.assert_allclose(actual[1], expected, atol=1e-5)


def test_stepwise_equals_full():
    layer = SinusoidalPositionalEncoding()
    full = layer(np.zeros((1, 10, 6), "float32"))
    for index in range(10):
        step = layer(np.zeros((1, 1, 6), "float32"), start_index=index)
        np.testing.assert_allclose(step[0, 0], full[0, index], atol=1e-7)


def test_golden_values_interleaved():
    # Position 0 is [sin 0, cos 0, ...]; position 3 as in keras-hub's test.
    encoding = SinusoidalPositionalEncoding()(np.zeros((1, 4, 6), "float32"))[0]
    np.testing.assert_allclose(encoding[0], [0, 1, 0, 1, 0, 1], atol=1e-7)
    np.testing.assert_allclose(
        encoding[3],
        [0.14112, -0.98999, 0.13879, 0.99032, 0.00646, 0.99997],
        atol=1e-5,
    )


def test_naive_float32_would_miss_the_tolerance():
    # Documents why the layer splits the angle: a plain float32 product
    # misses the paper's formula by more than 1e-5 at length 2048.
    pos = np.arange(2048, dtype=np.float32)[:, None]
    i = np.arange(512)[None, :]
    freq = (10000.0 ** (-2 * (i // 2) / 512)).astype(np.float32)
    naive = np.where(i % 2 == 0, np.sin(pos * freq), np.cos(pos * freq))
    assert np.abs(naive - _paper_formula(range(2048), 512)).max() > 1e-5


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_stays_float32_under_mixed_precision(policy):
    layer = SinusoidalPositionalEncoding(dtype=policy)
    inputs = keras.ops.zeros((1, 600, 64), dtype=layer.compute_dtype)
    actual = layer(inputs)
    assert actual.dtype == "float32"
    np.testing.assert_allclose(actual[0], _paper_formula(range(600), 64), atol=1e-5)


def test_longer_than_any_training_length():
    actual = SinusoidalPositionalEncoding()(np.zeros((1, 10000, 8), "float32"))
    assert actual.shape == (1, 10000, 8)
    np.testing.assert_allclose(
        actual[0, -3:], _paper_formula(range(9997, 10000), 8), atol=1e-5
    )


def test_invalid_max_wavelength():
    with pytest.raises(ValueError, match="max_wavelength"):
        SinusoidalPositionalEncoding(max_wavelength=0)


def test_layer_checklist():
    run_layer_test(
        SinusoidalPositionalEncoding,
        {"max_wavelength": 10000},
        {"inputs": np.zeros((2, 5, 8), "float32")},
        expected_output_shape=(2, 5, 8),
        expected_num_trainable_weights=0,
        float32_outputs=(0,),
    )
