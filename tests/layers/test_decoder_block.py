import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.layers import DecoderBlock
from tests.test_case import run_layer_test

rng = np.random.default_rng(0)
TARGET = rng.normal(size=(2, 6, 8)).astype("float32")
SOURCE = rng.normal(size=(2, 7, 8)).astype("float32")
SOURCE_MASK = np.array([[1] * 7, [1] * 4 + [0] * 3], bool)


def test_future_positions_do_not_change_earlier_outputs():
    block = DecoderBlock(num_heads=2, d_ff=16)
    changed = TARGET.copy()
    changed[:, 3:] = rng.normal(size=changed[:, 3:].shape)
    a = block(TARGET, SOURCE, encoder_padding_mask=SOURCE_MASK)
    b = block(changed, SOURCE, encoder_padding_mask=SOURCE_MASK)
    np.testing.assert_array_equal(a[:, :3], b[:, :3])
    assert not np.allclose(a[:, 3:], b[:, 3:])


def test_cross_attention_reads_the_encoder_and_respects_its_padding():
    block = DecoderBlock(num_heads=2, d_ff=16)
    base = block(TARGET, SOURCE, encoder_padding_mask=SOURCE_MASK)
    noisy_pad = SOURCE.copy()
    noisy_pad[1, 4:] = 100.0  # padded source positions
    np.testing.assert_allclose(
        block(TARGET, noisy_pad, encoder_padding_mask=SOURCE_MASK), base, atol=1e-6
    )
    other = SOURCE.copy()
    other[1, 0] += 1.0  # a real source position
    assert not np.allclose(block(TARGET, other, encoder_padding_mask=SOURCE_MASK), base)


@pytest.mark.parametrize("normalize_first", [False, True])
def test_cached_decoding_equals_full_pass(normalize_first):
    block = DecoderBlock(num_heads=2, d_ff=16, normalize_first=normalize_first)
    full = block(TARGET, SOURCE, encoder_padding_mask=SOURCE_MASK)
    cross = block.compute_cross_attention_cache(SOURCE)
    assert cross["key"].shape == cross["value"].shape == (2, 2, 7, 4)
    cache = block.self_attention.init_cache(2, 6)

    @tf.function(jit_compile=True)
    def step(token, cache, index):
        return block(
            token,
            encoder_padding_mask=SOURCE_MASK,
            self_attention_cache=cache,
            cross_attention_cache=cross,
            cache_index=index,
        )

    outputs = []
    for index in range(6):
        out, cache = step(TARGET[:, index : index + 1], cache, tf.constant(index))
        outputs.append(np.asarray(out))
    np.testing.assert_allclose(np.concatenate(outputs, 1), full, atol=1e-5)
    assert cache["key"].shape == cache["value"].shape == (2, 2, 6, 4)


def test_decoder_only_block_has_no_cross_attention():
    block = DecoderBlock(num_heads=2, d_ff=16)
    block(TARGET)
    assert not block.has_cross_attention
    assert len(block.trainable_weights) == 12
    with pytest.raises(ValueError, match="without encoder-decoder attention"):
        block(TARGET, SOURCE)


def test_attention_weights_are_returned():
    block = DecoderBlock(num_heads=2, d_ff=16)
    _, scores = block(
        TARGET, SOURCE, encoder_padding_mask=SOURCE_MASK, return_attention_scores=True
    )
    self_w, cross_w = np.asarray(scores["self_attention"]), scores["cross_attention"]
    np.testing.assert_allclose(self_w.sum(-1), 1.0, atol=1e-6)
    assert np.all(np.triu(self_w[0, 0], 1) == 0)
    np.testing.assert_array_equal(np.asarray(cross_w)[1, :, :, 4:], 0.0)


@pytest.mark.parametrize("normalize_first", [False, True])
def test_layer_checklist(normalize_first):
    run_layer_test(
        DecoderBlock,
        {"num_heads": 2, "d_ff": 16, "normalize_first": normalize_first},
        {"decoder_sequence": TARGET, "encoder_sequence": SOURCE},
        expected_output_shape=(2, 6, 8),
        expected_num_trainable_weights=22,
        expected_num_seed_generators=3,
    )
