"""The decoder stack: embeddings, positional encoding, N decoder blocks."""

import keras
from keras import ops

from keras_transformer.layers.decoder_block import DecoderBlock
from keras_transformer.layers.transformer_stack_base import TransformerStackBase
from keras_transformer.utils import dynamic_update


def _own_beams(groups, beams, length):
    """Ancestry `(groups, beams, length)` pointing every row at its own beam."""
    own = ops.arange(beams, dtype="int32")[None, :, None]
    return ops.broadcast_to(own, (groups, beams, length))


@keras.saving.register_keras_serializable(package="keras_transformer")
class Decoder(TransformerStackBase):
    """A stack of `num_layers` `DecoderBlock`s with its input embedding.

    `x = Dropout(Embedding(ids) * sqrt(d_model) + PE)`, then the blocks, then
    (pre-LN only) a final LayerNorm. The outputs are hidden states; project
    them to logits with a `TokenEmbedding` (`embedding.logits(x)`), as
    `Transformer` does.

    Called with `encoder_outputs` the blocks have encoder-decoder attention;
    called without, the decoder is a decoder-only (language model) stack.

    Incremental decoding: `cache = decoder.init_cache(batch_size, max_length,
    encoder_outputs)` holds, per block, a fixed-size self-attention cache and
    the encoder keys/values (projected once), each a dict of heads-major
    `"key"`/`"value"` buffers. Call the decoder on one (or more) new
    positions with `cache` and `cache_index`; it returns `(outputs, cache)`.
    Nothing grows, so the loop compiles with XLA, and under XLA the new
    positions are written into the buffers in place. The buffers keep the
    dtype `init_cache` gave them (the decoder does not autocast its call
    arguments; float inputs are cast to the compute dtype in the embedding
    step).

    Args:
        Same as `Encoder`.

    Call arguments:
        inputs: int ids `(batch_size, length)` with `vocabulary_size`, else
            float `(batch_size, length, d_model)`.
        encoder_outputs: optional `(batch_size, source_length, d_model)`.
        encoder_padding_mask: optional bool `(batch_size, source_length)`.
        padding_mask: optional bool `(batch_size, length)` for the decoder
            inputs (ignored with a cache).
        cache: optional dict from `init_cache`.
        cache_index: int or scalar int tensor, position of `inputs[:, 0]`.
        return_attention_scores: bool, also return a list with a dict of
            attention weights per block (see `DecoderBlock`).
        training: bool.

    Returns:
        `(batch_size, length, d_model)`, then the list of weights if asked,
        then the updated cache if one was given.

    Example:

    >>> import numpy as np
    >>> decoder = Decoder(num_layers=2, num_heads=2, d_ff=16, d_model=8,
    ...                   vocabulary_size=20)
    >>> memory = np.random.rand(1, 6, 8).astype("float32")
    >>> tuple(decoder(np.array([[2, 7, 9]]), encoder_outputs=memory).shape)
    (1, 3, 8)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
    """

    def build(self, inputs_shape, encoder_outputs_shape=None):
        hidden_shape = self._build_input_layers(inputs_shape)
        self.blocks = []
        for index in range(self.num_layers):
            block = DecoderBlock(name=f"block_{index}", **self._block_kwargs())
            block.build(hidden_shape, encoder_outputs_shape)
            self.blocks.append(block)
        self.built = True

    @property
    def has_cross_attention(self):
        return self.blocks[0].has_cross_attention

    def init_cache(
        self, batch_size, max_length, encoder_outputs=None, beam_size=1, dtype=None
    ):
        """An empty decoding cache for `max_length` target positions.

        Args:
            batch_size: int or scalar tensor, rows of decoder input; with
                `beam_size > 1`, the number of beam groups (sentences),
                each of `beam_size` rows.
            max_length: int, the number of positions the cache can hold.
            encoder_outputs: `(encoder_batch_size, source_length, d_model)`,
                required when the decoder has encoder-decoder attention.
                The decoder's rows must be a multiple of
                `encoder_batch_size`: with `r * encoder_batch_size` rows,
                decoder rows `i * r ... i * r + r - 1` read encoder row `i`
                (beam search keeps one copy of each sentence's keys/values
                for its `r` beams).
            beam_size: int. Above 1, the self-attention caches are beam
                caches (see `MultiHeadAttention`) and the cache has an
                `"ancestry"` entry: int32 `(batch_size, beam_size,
                max_length)`, for each row the beam whose cache holds its
                key/value at each position (initially its own). The decoder
                sets the positions it writes to the row's own beam; to
                reorder hypotheses (beam search), reorder the ancestry
                rows, not the buffers.
            dtype: float dtype of the key/value buffers. Defaults to the
                compute dtype.

        Returns:
            `{"self": [per block {"key": (batch_size, kv_heads, max_length,
            key_dim), "value": (same)}], "cross": [per block {"key":
            (encoder_batch_size, kv_heads, source_length, key_dim), "value":
            (same)}]}` (`"cross"` is empty without an encoder), plus
            `"ancestry"` with `beam_size > 1` (the `"self"` buffers then have
            `max_length * beam_size` slots).
            `kv_heads` is `num_key_value_heads` (default `num_heads`). All
            buffers have `dtype`; the `"self"` ones are zeros.
        """
        cache = {
            "self": [
                block.self_attention.init_cache(
                    batch_size, max_length, beam_size, dtype=dtype
                )
                for block in self.blocks
            ],
            "cross": [],
        }
        if beam_size > 1:
            cache["ancestry"] = _own_beams(batch_size, beam_size, max_length)
        if self.has_cross_attention:
            if encoder_outputs is None:
                raise ValueError("`encoder_outputs` is required by this decoder.")
            cache["cross"] = [
                block.compute_cross_attention_cache(encoder_outputs, dtype=dtype)
                for block in self.blocks
            ]
        return cache

    def call(
        self,
        inputs,
        encoder_outputs=None,
        encoder_padding_mask=None,
        padding_mask=None,
        cache=None,
        cache_index=None,
        return_attention_scores=False,
        training=None,
    ):
        if cache is not None and cache_index is None:
            raise ValueError("`cache` needs `cache_index`.")
        start_index = 0 if cache is None else cache_index
        x, padding_mask = self._embed(inputs, padding_mask, start_index, training)
        ancestry = None if cache is None else cache.get("ancestry")
        if ancestry is not None:  # the new positions are in each row's own beam
            own = _own_beams(ops.shape(ancestry)[0], ancestry.shape[1], ops.shape(x)[1])
            ancestry = dynamic_update(ancestry, own, cache_index, axis=2)
        all_scores, new_self_cache = [], []
        for index, block in enumerate(self.blocks):  # (B, T, d) -> (B, T, d)
            block_cache = {}
            if cache is not None:
                block_cache["self_attention_cache"] = cache["self"][index]
                if cache["cross"]:
                    block_cache["cross_attention_cache"] = cache["cross"][index]
            outputs = block(
                x,
                encoder_sequence=None if cache is not None else encoder_outputs,
                decoder_padding_mask=padding_mask,
                encoder_padding_mask=encoder_padding_mask,
                cache_index=cache_index,
                cache_ancestry=ancestry,
                return_attention_scores=True,
                training=training,
                **block_cache,
            )
            x, scores = outputs[0], outputs[1]
            all_scores.append(scores)
            if cache is not None:
                new_self_cache.append(outputs[2])
        if self.normalize_first:
            x = self.final_layer_norm(x)
        outputs = (x,)
        if return_attention_scores:
            outputs += (all_scores,)
        if cache is not None:
            new_cache = {"self": new_self_cache, "cross": cache["cross"]}
            if ancestry is not None:
                new_cache["ancestry"] = ancestry
            outputs += (new_cache,)
        return outputs[0] if len(outputs) == 1 else outputs
