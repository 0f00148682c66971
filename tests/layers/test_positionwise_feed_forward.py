import numpy as np
import pytest
import tensorflow as tf

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


@pytest.mark.parametrize("jit_compile", [False, True])
def test_padding_mask_keeps_real_positions_and_zeroes_padded_ones(jit_compile):
    # 3 x 200 rows: above the 512 rows from which padded rows are skipped.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 200, 8)).astype("float32")
    mask = np.arange(200)[None] < np.array([[200], [7], [0]])
    layer = PositionwiseFeedForward(d_ff=32)
    call = tf.function(
        lambda x, mask: layer(x, padding_mask=mask), jit_compile=jit_compile
    )
    actual = np.asarray(call(x, mask))
    np.testing.assert_allclose(actual[mask], np.asarray(layer(x))[mask], atol=1e-5)
    assert np.all(actual[~mask] == 0)


def test_padding_mask_of_another_shape_is_rejected():
    layer = PositionwiseFeedForward(d_ff=8)
    with pytest.raises(ValueError, match=r"padding_mask.shape=\(2, 4\)"):
        layer(np.ones((2, 5, 4), "float32"), padding_mask=np.ones((2, 4), bool))


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


def test_layer_checklist_with_padding_mask():
    run_layer_test(
        PositionwiseFeedForward,
        {"d_ff": 32, "dropout": 0.1},
        {
            "inputs": np.ones((2, 300, 8), "float32"),
            "padding_mask": np.arange(300)[None] < np.array([[300], [100]]),
        },
        expected_output_shape=(2, 300, 8),
        expected_num_trainable_weights=4,
        expected_num_seed_generators=1,
    )
