import numpy as np
import pytest

from keras_transformer.layers import PositionwiseFeedForward
from tests.test_case import run_layer_test


def test_equals_max_0_xw1_b1_w2_b2():
    x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype("float32")
    layer = PositionwiseFeedForward(d_ff=32)
    actual = layer(x)
    w1, b1 = layer.inner_dense.get_weights()
    w2, b2 = layer.output_dense.get_weights()
    expected = np.maximum(0, x @ w1 + b1) @ w2 + b2
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_invalid_d_ff():
    with pytest.raises(ValueError, match="d_ff"):
        PositionwiseFeedForward(d_ff=-1)


def test_layer_checklist():
    run_layer_test(
        PositionwiseFeedForward,
        {"d_ff": 32, "dropout": 0.1},
        {"inputs": np.ones((2, 5, 8), "float32")},
        expected_output_shape=(2, 5, 8),
        expected_num_trainable_weights=4,
        expected_num_seed_generators=1,
    )
