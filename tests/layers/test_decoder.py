import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.layers import Decoder
from tests.test_case import run_layer_test

TARGET = np.array([[2, 5, 6, 7, 3, 0], [2, 9, 10, 11, 12, 13]], "int32")
MEMORY = np.random.default_rng(0).normal(size=(2, 7, 8)).astype("float32")
MEMORY_MASK = np.array([[1] * 7, [1] * 5 + [0] * 2], bool)


def _decode_step_by_step(decoder, target, cache):
    """The decoder's outputs for `target`, one position per XLA call."""

    @tf.function(jit_compile=True)
    def step(ids, cache, index):
        return decoder(
            ids, encoder_padding_mask=MEMORY_MASK, cache=cache, cache_index=index
        )

    outputs = []
    for index in range(target.shape[1]):
        out, cache = step(target[:, index : index + 1], cache, tf.constant(index))
        outputs.append(np.asarray(out))
    return np.concatenate(outputs, 1)


@pytest.mark.parametrize("num_key_value_heads", [None, 1])
def test_cached_decoding_equals_full_pass_under_xla(num_key_value_heads):
    decoder = Decoder(
        2, 2, 16, d_model=8, vocabulary_size=20, num_key_value_heads=num_key_value_heads
    )
    full = decoder(TARGET, encoder_outputs=MEMORY, encoder_padding_mask=MEMORY_MASK)
    cache = decoder.init_cache(2, TARGET.shape[1], MEMORY)
    # Per block: heads-major key and value buffers; MQA keeps one head.
    kv_heads, key_dim = num_key_value_heads or 2, 4
    assert len(cache["self"]) == len(cache["cross"]) == 2
    for block_cache in cache["self"]:
        assert block_cache["key"].shape == (2, kv_heads, TARGET.shape[1], key_dim)
        assert block_cache["value"].shape == (2, kv_heads, TARGET.shape[1], key_dim)
    for block_cache in cache["cross"]:
        assert block_cache["key"].shape == (2, kv_heads, MEMORY.shape[1], key_dim)
        assert block_cache["value"].shape == (2, kv_heads, MEMORY.shape[1], key_dim)

    outputs = _decode_step_by_step(decoder, TARGET, cache)
    # Position 5 of row 0 is padding: compare real positions only.
    real = TARGET != 0
    np.testing.assert_allclose(
        np.asarray(outputs)[real], np.asarray(full)[real], atol=1e-5
    )


def test_decoder_only_language_model_stack():
    decoder = Decoder(2, 2, 16, d_model=8, vocabulary_size=20)
    out = decoder(TARGET)
    assert out.shape == (2, 6, 8)
    assert not decoder.has_cross_attention
    cache = decoder.init_cache(2, 6)
    assert cache["cross"] == []
    step, cache = decoder(TARGET[:, :1], cache=cache, cache_index=0)
    np.testing.assert_allclose(step[:, 0], out[:, 0], atol=1e-5)


def test_beams_share_one_cross_attention_cache_row():
    # 3 decoder rows per encoder row (beam search), under XLA.
    decoder = Decoder(2, 2, 16, d_model=8, vocabulary_size=20, num_key_value_heads=1)
    target = np.repeat(TARGET, 3, axis=0)
    full = decoder(
        target,
        encoder_outputs=np.repeat(MEMORY, 3, axis=0),
        encoder_padding_mask=np.repeat(MEMORY_MASK, 3, axis=0),
    )
    cache = decoder.init_cache(6, TARGET.shape[1], MEMORY)
    assert cache["self"][0]["key"].shape == (6, 1, TARGET.shape[1], 4)
    assert cache["cross"][0]["key"].shape == (2, 1, MEMORY.shape[1], 4)

    outputs = _decode_step_by_step(decoder, target, cache)
    real = target != 0
    np.testing.assert_allclose(
        np.asarray(outputs)[real], np.asarray(full)[real], atol=1e-5
    )


def test_cache_needs_index():
    decoder = Decoder(1, 2, 16, d_model=8, vocabulary_size=20)
    decoder(TARGET, encoder_outputs=MEMORY)
    with pytest.raises(ValueError, match="cache_index"):
        decoder(TARGET[:, :1], cache=decoder.init_cache(2, 6, MEMORY))


def test_layer_checklist():
    run_layer_test(
        Decoder,
        {"num_layers": 2, "num_heads": 2, "d_ff": 16, "d_model": 8,
         "vocabulary_size": 20},
        {"inputs": TARGET, "encoder_outputs": MEMORY},
        expected_output_shape=(2, 6, 8),
        expected_num_trainable_weights=1 + 2 * 22,
        expected_num_seed_generators=1 + 2 * 3,
    )  # fmt: skip
