"""The encoder stack: embeddings, positional encoding, N encoder blocks."""

import keras
from keras import ops

from keras_transformer.layers.encoder_block import EncoderBlock
from keras_transformer.layers.transformer_stack_base import TransformerStackBase


@keras.saving.register_keras_serializable(package="keras_transformer")
class Encoder(TransformerStackBase):
    """A stack of `num_layers` `EncoderBlock`s with its input embedding.

    `x = Dropout(Embedding(ids) * sqrt(d_model) + PE)`, then the blocks, then
    (pre-LN only) a final LayerNorm.

    With `vocabulary_size` the encoder owns a `TokenEmbedding` and takes token
    ids (padding is `pad_id`). Without it, it takes already embedded inputs
    `(batch_size, length, d_model)` (e.g. from an embedding shared with a
    decoder, as `Transformer` does) and a `padding_mask`.

    Args:
        num_layers: int, number of blocks `N`.
        num_heads: int, attention heads per block.
        d_ff: int, feed-forward inner size.
        d_model: int, model size; required with `vocabulary_size`, else taken
            from the inputs.
        vocabulary_size: optional int, see above.
        dropout: float, residual and embedding dropout.
        attention_dropout: float, dropout on attention weights.
        activation_dropout: float, dropout inside the feed-forward networks.
        activation: feed-forward activation.
        normalize_first: bool, pre-LN blocks and a final LayerNorm.
        layer_norm_epsilon: float.
        num_key_value_heads: int, see `MultiHeadAttention`.
        position_encoding: how positions enter the model: `"sinusoidal"`
            (the paper, default), `"learned"` (a trained vector per position,
            up to `max_positions`), `"rotary"` (RoPE applied to queries and
            keys in every self-attention layer) or `"relative"` (Shaw et al.
            2018 relative position representations clipped at
            `max_relative_position`, in every self-attention layer).
        max_wavelength: float, base of the sinusoidal and rotary encodings.
        max_relative_position: int, Shaw et al.'s clipping distance `k`.
        max_positions: int, table size of learned positions.
        pad_id: int, padding id of the token inputs.
        kernel_initializer: initializer of all kernels.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: int ids `(batch_size, length)` with `vocabulary_size`, else
            float `(batch_size, length, d_model)`.
        padding_mask: optional bool `(batch_size, length)`; computed from the
            ids, or taken from the inputs' Keras mask, when omitted.
        return_attention_scores: bool, also return a list with each block's
            attention weights `(batch_size, num_heads, length, length)`.
        training: bool.

    Returns:
        `(batch_size, length, d_model)`, and the list of weights if asked.

    Example:

    >>> import numpy as np
    >>> encoder = Encoder(num_layers=2, num_heads=2, d_ff=16, d_model=8,
    ...                   vocabulary_size=20)
    >>> tuple(encoder(np.array([[4, 5, 6, 0]])).shape)
    (1, 4, 8)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
    """

    def build(self, inputs_shape):
        hidden_shape = self._build_input_layers(inputs_shape)
        self.blocks = []
        for index in range(self.num_layers):
            block = EncoderBlock(name=f"block_{index}", **self._block_kwargs())
            block.build(hidden_shape)
            self.blocks.append(block)
        self.built = True

    def call(
        self,
        inputs,
        padding_mask=None,
        return_attention_scores=False,
        training=None,
    ):
        x, padding_mask = self._embed(inputs, padding_mask, training=training)
        all_scores = []
        for block in self.blocks:  # (B, S, d_model) -> (B, S, d_model)
            x, scores = block(
                x,
                padding_mask=padding_mask,
                return_attention_scores=True,
                training=training,
            )
            all_scores.append(scores)
        if self.normalize_first:
            x = self.final_layer_norm(x)
        return (x, all_scores) if return_attention_scores else x

    def compute_mask(self, inputs, mask=None):
        if self.vocabulary_size is not None:
            return ops.not_equal(inputs, self.pad_id)
        return mask
