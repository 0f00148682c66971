"""One decoder layer: masked self-attention, encoder-decoder attention, FFN."""

import keras
from keras import ops

from keras_transformer.layers.transformer_block_base import TransformerBlockBase
from keras_transformer.utils import check_heads


@keras.saving.register_keras_serializable(package="keras_transformer")
class DecoderBlock(TransformerBlockBase):
    """A Transformer decoder layer (Vaswani et al., 2017, section 3.1).

    Three sub-layers: causal (masked) multi-head self-attention, multi-head
    attention over the encoder output (queries from the decoder, keys and
    values from the encoder), and a position-wise feed-forward network. Each
    is wrapped as `LayerNorm(x + Dropout(sublayer(x)))` (post-LN), or as
    `x + Dropout(sublayer(LayerNorm(x)))` with `normalize_first=True`.

    The encoder-decoder attention exists only when the block is first called
    with `encoder_sequence`; without it the block is a decoder-only (GPT
    style) layer.

    Incremental decoding: pass `self_attention_cache` (from
    `self_attention.init_cache(batch_size, max_length)`: a dict of heads-major
    buffers `{"key": (batch_size, num_key_value_heads, max_length, key_dim),
    "value": (batch_size, num_key_value_heads, max_length, key_dim)}`) and
    `cache_index`; the block writes this step's keys/values there (in place
    under XLA) and returns the updated cache. `cross_attention_cache` (from
    `compute_cross_attention_cache`) holds the encoder's projected keys and
    values in the same layout, computed once per source sentence; its batch
    size may divide the decoder's (the beams of one sentence share it, see
    `MultiHeadAttention`). The caches keep their own dtype: the block does
    not autocast its call arguments, it casts `decoder_sequence` to the
    compute dtype itself.

    Args:
        Same as `EncoderBlock`.

    Call arguments:
        decoder_sequence: `(batch_size, target_length, d_model)`.
        encoder_sequence: optional `(batch_size, source_length, d_model)`.
        decoder_padding_mask: optional bool `(batch_size, target_length)`.
            Defaults to the decoder sequence's Keras mask. Padded positions
            are masked out as keys, and the feed-forward network skips them
            (its output there is zero; see `PositionwiseFeedForward`).
            Ignored with a cache (the cache's empty slots are masked instead).
        encoder_padding_mask: optional bool `(batch_size, source_length)`.
            Defaults to the encoder sequence's Keras mask.
        self_attention_cache: optional cache dict, see above.
        cross_attention_cache: optional precomputed encoder keys/values
            `{"key": (cache_batch_size, num_key_value_heads, source_length,
            key_dim), "value": (same)}` where `batch_size` is a multiple of
            `cache_batch_size`; replaces `encoder_sequence`.
            `encoder_padding_mask` may then have either batch size.
        cache_index: int or scalar int tensor, position of the first
            `decoder_sequence` element.
        cache_ancestry: int `(groups, beam_size, max_length)`, required
            with (and only with) a beam self-attention cache
            (`self_attention.init_cache(groups, max_length, beam_size)`):
            see `MultiHeadAttention`.
        return_attention_scores: bool.
        training: bool.

    Returns:
        `outputs` `(batch_size, target_length, d_model)`; with
        `return_attention_scores`, also a dict with float32 weights
        `"self_attention"` `(batch_size, num_heads, target_length, key_length)`
        and, when present, `"cross_attention"`
        `(batch_size, num_heads, target_length, source_length)`; with a
        `self_attention_cache`, the updated cache last.

    Example:

    >>> import numpy as np
    >>> block = DecoderBlock(num_heads=2, d_ff=16)
    >>> target = np.ones((2, 5, 8), "float32")
    >>> source = np.ones((2, 7, 8), "float32")
    >>> tuple(block(target, source).shape)
    (2, 5, 8)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
    """

    def build(self, decoder_sequence_shape, encoder_sequence_shape=None):
        d_model = decoder_sequence_shape[-1]
        check_heads(d_model, self.num_heads, self.key_dim)
        self.self_attention = self._attention(
            "self_attention", d_model, positional=True
        )
        self.self_attention.build(decoder_sequence_shape)
        self.self_attention_layer_norm = self._layer_norm(
            "self_attention_layer_norm", decoder_sequence_shape
        )
        self.self_attention_dropout = self._dropout("self_attention_dropout")
        self.has_cross_attention = encoder_sequence_shape is not None
        if self.has_cross_attention:
            self.cross_attention = self._attention("cross_attention", d_model)
            self.cross_attention.build(decoder_sequence_shape, encoder_sequence_shape)
            self.cross_attention_layer_norm = self._layer_norm(
                "cross_attention_layer_norm", decoder_sequence_shape
            )
            self.cross_attention_dropout = self._dropout("cross_attention_dropout")
        self.feed_forward = self._feed_forward(decoder_sequence_shape)
        self.feed_forward_layer_norm = self._layer_norm(
            "feed_forward_layer_norm", decoder_sequence_shape
        )
        self.feed_forward_dropout = self._dropout("feed_forward_dropout")
        self.built = True

    def compute_cross_attention_cache(self, encoder_sequence, dtype=None):
        """Projected encoder keys/values for `cross_attention_cache`.

        Args:
            encoder_sequence: `(batch_size, source_length, d_model)`.
            dtype: float dtype of the buffers. Defaults to the compute dtype.

        Returns:
            `{"key": (batch_size, num_key_value_heads, source_length,
            key_dim), "value": (same)}`.
        """
        return self.cross_attention.compute_key_value_cache(
            encoder_sequence, dtype=dtype
        )

    def call(
        self,
        decoder_sequence,
        encoder_sequence=None,
        decoder_padding_mask=None,
        encoder_padding_mask=None,
        self_attention_cache=None,
        cross_attention_cache=None,
        cache_index=None,
        cache_ancestry=None,
        return_attention_scores=False,
        training=None,
    ):
        uses_encoder = encoder_sequence is not None or cross_attention_cache is not None
        if uses_encoder != self.has_cross_attention:
            raise ValueError(
                "DecoderBlock was built "
                + ("with" if self.has_cross_attention else "without")
                + " encoder-decoder attention; call it "
                + ("with" if self.has_cross_attention else "without")
                + " `encoder_sequence` (or `cross_attention_cache`)."
            )
        if decoder_padding_mask is None and self_attention_cache is None:
            decoder_padding_mask = getattr(decoder_sequence, "_keras_mask", None)
        if encoder_padding_mask is None and encoder_sequence is not None:
            encoder_padding_mask = getattr(encoder_sequence, "_keras_mask", None)
        if self_attention_cache is not None:
            decoder_padding_mask = None
        x = ops.cast(decoder_sequence, self.compute_dtype)  # (B, T, d_model)
        scores = {}

        # Masked self-attention sub-layer.
        y = self._pre_norm(x, self.self_attention_layer_norm)
        y, scores["self_attention"], *new_cache = self.self_attention(
            y,
            value_mask=decoder_padding_mask,
            causal=True,
            cache=self_attention_cache,
            cache_index=cache_index,
            cache_ancestry=cache_ancestry,
            return_attention_scores=True,
            training=training,
        )
        x = self._add_and_norm(
            x, y, self.self_attention_layer_norm, self.self_attention_dropout, training
        )

        # Encoder-decoder attention sub-layer: (B, T, d) attends to (B, S, d).
        if self.has_cross_attention:
            y = self._pre_norm(x, self.cross_attention_layer_norm)
            y, scores["cross_attention"], *_ = self.cross_attention(
                y,
                value=None if cross_attention_cache is not None else encoder_sequence,
                value_mask=encoder_padding_mask,
                cache=cross_attention_cache,
                return_attention_scores=True,
                training=training,
            )
            x = self._add_and_norm(
                x,
                y,
                self.cross_attention_layer_norm,
                self.cross_attention_dropout,
                training,
            )

        # Feed-forward sub-layer.
        y = self._pre_norm(x, self.feed_forward_layer_norm)
        y = self.feed_forward(y, padding_mask=decoder_padding_mask, training=training)
        x = self._add_and_norm(
            x, y, self.feed_forward_layer_norm, self.feed_forward_dropout, training
        )

        outputs = (x,)
        if return_attention_scores:
            outputs += (scores,)
        if self_attention_cache is not None:
            outputs += (new_cache[0],)
        return outputs[0] if len(outputs) == 1 else outputs

    def compute_output_spec(
        self,
        decoder_sequence,
        encoder_sequence=None,
        self_attention_cache=None,
        cross_attention_cache=None,
        return_attention_scores=False,
        **kwargs,
    ):
        output = keras.KerasTensor(decoder_sequence.shape, dtype=self.compute_dtype)
        outputs = (output,)
        if return_attention_scores:
            batch_size, length = decoder_sequence.shape[0], decoder_sequence.shape[1]
            key_length = (
                self_attention_cache["key"].shape[2]
                if self_attention_cache is not None
                else length
            )
            scores = {
                "self_attention": keras.KerasTensor(
                    (batch_size, self.num_heads, length, key_length), dtype="float32"
                )
            }
            if self.has_cross_attention:
                source_length = (
                    cross_attention_cache["key"].shape[2]
                    if cross_attention_cache is not None
                    else encoder_sequence.shape[1]
                )
                scores["cross_attention"] = keras.KerasTensor(
                    (batch_size, self.num_heads, length, source_length),
                    dtype="float32",
                )
            outputs += (scores,)
        if self_attention_cache is not None:
            outputs += (
                {
                    name: keras.KerasTensor(buffer.shape, dtype=buffer.dtype)
                    for name, buffer in self_attention_cache.items()
                },
            )
        return outputs[0] if len(outputs) == 1 else outputs
