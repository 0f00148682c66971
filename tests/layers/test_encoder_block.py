import numpy as np
import pytest

from keras_transformer.layers import EncoderBlock
from tests.test_case import run_layer_test


def _layer_norm(x, gamma, beta, epsilon=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon) * gamma + beta


@pytest.mark.parametrize("normalize_first", [False, True])
def test_sublayer_wiring(normalize_first):
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    padding = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    block = EncoderBlock(num_heads=2, d_ff=16, normalize_first=normalize_first)
    actual = np.asarray(block(x, padding_mask=padding))
    ln1 = lambda v: _layer_norm(v, *block.self_attention_layer_norm.get_weights())
    ln2 = lambda v: _layer_norm(v, *block.feed_forward_layer_norm.get_weights())
    attend = lambda v: np.asarray(block.self_attention(v, value_mask=padding))
    # The feed-forward output is zero at padded positions (they are not computed).
    ffn = lambda v: np.where(padding[..., None], block.feed_forward(v), 0)
    if normalize_first:  # x + Sublayer(LayerNorm(x))
        h = x + attend(ln1(x))
        expected = h + ffn(ln2(h))
    else:  # LayerNorm(x + Sublayer(x)), the paper
        h = ln1(x + attend(x))
        expected = ln2(h + ffn(h))
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_padding_does_not_change_real_positions():
    rng = np.random.default_rng(1)
    block = EncoderBlock(num_heads=2, d_ff=16)
    x = rng.normal(size=(1, 4, 8)).astype("float32")
    padded = np.concatenate([x, rng.normal(size=(1, 3, 8)).astype("float32")], 1)
    mask = np.array([[1, 1, 1, 1, 0, 0, 0]], bool)
    np.testing.assert_allclose(
        block(padded, padding_mask=mask)[:, :4], block(x), atol=1e-5
    )


def test_d_model_not_divisible_by_heads():
    with pytest.raises(ValueError, match="d_model=10 is not divisible by num_heads=4"):
        EncoderBlock(num_heads=4, d_ff=16)(np.ones((1, 3, 10), "float32"))


@pytest.mark.parametrize("normalize_first", [False, True])
def test_layer_checklist(normalize_first):
    run_layer_test(
        EncoderBlock,
        {"num_heads": 2, "d_ff": 16, "normalize_first": normalize_first},
        {"inputs": np.ones((2, 5, 8), "float32")},
        call_kwargs={"return_attention_scores": True},
        expected_output_shape=((2, 5, 8), (2, 2, 5, 5)),
        expected_num_trainable_weights=12,
        expected_num_seed_generators=2,
        float32_outputs=(1,),
    )
