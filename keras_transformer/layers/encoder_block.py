"""One encoder layer: self-attention and feed-forward sub-layers."""

import keras
from keras import ops

from keras_transformer.layers.transformer_block_base import TransformerBlockBase
from keras_transformer.utils import check_heads


@keras.saving.register_keras_serializable(package="keras_transformer")
class EncoderBlock(TransformerBlockBase):
    """A Transformer encoder layer (Vaswani et al., 2017, section 3.1).

    Two sub-layers, multi-head self-attention and a position-wise
    feed-forward network, each wrapped as `LayerNorm(x + Dropout(sublayer(x)))`
    (post-LN, the paper's arrangement) or, with `normalize_first=True`, as
    `x + Dropout(sublayer(LayerNorm(x)))` (pre-LN).

    Args:
        num_heads: int, attention heads `h`.
        d_ff: int, inner size of the feed-forward network.
        key_dim: int, per-head size `d_k`. Defaults to `d_model // num_heads`.
        dropout: float, residual dropout `P_drop` (0.1 in the base model).
        attention_dropout: float, dropout on attention weights.
        activation_dropout: float, dropout inside the feed-forward network.
        activation: feed-forward activation, `"relu"` in the paper.
        normalize_first: bool, pre-LN instead of the paper's post-LN.
        layer_norm_epsilon: float.
        num_key_value_heads: int, see `MultiHeadAttention`.
        rotary_max_wavelength: float or `None`, rotary position embeddings in
            the self-attention, see `MultiHeadAttention`.
        max_relative_position: int or `None`, relative position
            representations in the self-attention, see `MultiHeadAttention`.
        kernel_initializer: initializer of all kernels.
        bias_initializer: initializer of all biases.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: `(batch_size, sequence_length, d_model)`.
        padding_mask: optional bool `(batch_size, sequence_length)`, `True`
            for real tokens. Defaults to the inputs' Keras mask. Padded
            positions are masked out as keys, and the feed-forward network
            skips them (its output there is zero; see
            `PositionwiseFeedForward`).
        attention_mask: optional bool
            `(batch_size, sequence_length, sequence_length)`.
        return_attention_scores: bool, also return the attention weights.
        training: bool.

    Returns:
        `(batch_size, sequence_length, d_model)`, and with
        `return_attention_scores` also the weights
        `(batch_size, num_heads, sequence_length, sequence_length)`.

    Example:

    >>> import numpy as np
    >>> block = EncoderBlock(num_heads=2, d_ff=16)
    >>> tuple(block(np.ones((2, 5, 8), "float32")).shape)
    (2, 5, 8)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Xiong et al., 2020](https://arxiv.org/abs/2002.04745) (pre-LN).
    """

    def build(self, inputs_shape):
        d_model = inputs_shape[-1]
        check_heads(d_model, self.num_heads, self.key_dim)
        self.self_attention = self._attention(
            "self_attention", d_model, positional=True
        )
        self.self_attention.build(inputs_shape)
        self.self_attention_layer_norm = self._layer_norm(
            "self_attention_layer_norm", inputs_shape
        )
        self.self_attention_dropout = self._dropout("self_attention_dropout")
        self.feed_forward = self._feed_forward(inputs_shape)
        self.feed_forward_layer_norm = self._layer_norm(
            "feed_forward_layer_norm", inputs_shape
        )
        self.feed_forward_dropout = self._dropout("feed_forward_dropout")
        self.built = True

    def call(
        self,
        inputs,
        padding_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
    ):
        if padding_mask is None:
            padding_mask = getattr(inputs, "_keras_mask", None)
        x = ops.cast(inputs, self.compute_dtype)  # (B, S, d_model)

        # Self-attention sub-layer.
        y = self._pre_norm(x, self.self_attention_layer_norm)
        y, scores = self.self_attention(
            y,
            value_mask=padding_mask,
            attention_mask=attention_mask,
            return_attention_scores=True,
            training=training,
        )
        x = self._add_and_norm(
            x, y, self.self_attention_layer_norm, self.self_attention_dropout, training
        )

        # Feed-forward sub-layer.
        y = self._pre_norm(x, self.feed_forward_layer_norm)
        y = self.feed_forward(y, padding_mask=padding_mask, training=training)
        x = self._add_and_norm(
            x, y, self.feed_forward_layer_norm, self.feed_forward_dropout, training
        )

        if return_attention_scores:
            return x, scores
        return x

    def compute_output_spec(self, inputs, return_attention_scores=False, **kwargs):
        output = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return output
        batch_size, length = inputs.shape[0], inputs.shape[1]
        scores = keras.KerasTensor(
            (batch_size, self.num_heads, length, length), dtype="float32"
        )
        return output, scores
