"""Shared constructor arguments and sub-layer factories of the blocks."""

import keras

from keras_transformer.layers.dropout import Dropout
from keras_transformer.layers.multi_head_attention import MultiHeadAttention
from keras_transformer.layers.positionwise_feed_forward import PositionwiseFeedForward
from keras_transformer.layers.utils import clone_initializer
from keras_transformer.utils import check_positive_int
from keras_transformer.utils import check_rate


class TransformerBlockBase(keras.layers.Layer):
    """Base of `EncoderBlock` and `DecoderBlock` (not a public layer).

    Holds the arguments both blocks share and the factories of their
    sub-layers; each sub-layer is created inside `build()` with the block's
    dtype policy. See `EncoderBlock` for the arguments.
    """

    def __init__(
        self,
        num_heads,
        d_ff,
        key_dim=None,
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        activation="relu",
        normalize_first=False,
        layer_norm_epsilon=1e-6,
        num_key_value_heads=None,
        rotary_max_wavelength=None,
        max_relative_position=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        check_positive_int("num_heads", num_heads)
        check_positive_int("d_ff", d_ff)
        if key_dim is not None:
            check_positive_int("key_dim", key_dim)
        for name, rate in (
            ("dropout", dropout),
            ("attention_dropout", attention_dropout),
            ("activation_dropout", activation_dropout),
        ):
            check_rate(name, rate)
        # Call arguments keep their dtype, so a decoding cache passes through
        # in its own (see `MultiHeadAttention`); `call` casts the block's
        # input to the compute dtype itself.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.d_ff = d_ff
        self.key_dim = key_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.activation = keras.activations.get(activation)
        self.normalize_first = normalize_first
        self.layer_norm_epsilon = layer_norm_epsilon
        self.num_key_value_heads = num_key_value_heads
        self.rotary_max_wavelength = rotary_max_wavelength
        self.max_relative_position = max_relative_position
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def _sublayer_kwargs(self):
        return {
            "kernel_initializer": clone_initializer(self.kernel_initializer),
            "bias_initializer": clone_initializer(self.bias_initializer),
            "dtype": self.dtype_policy,
        }

    def _layer_norm(self, name, shape):
        layer = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )
        layer.build(shape)
        return layer

    def _dropout(self, name):
        return Dropout(self.dropout, dtype=self.dtype_policy, name=name)

    def _attention(self, name, d_model, positional=False):
        """An attention sub-layer; `positional` ones get RoPE/relative options."""
        return MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=self.key_dim or d_model // self.num_heads,
            dropout=self.attention_dropout,
            num_key_value_heads=self.num_key_value_heads,
            rotary_max_wavelength=self.rotary_max_wavelength if positional else None,
            max_relative_position=self.max_relative_position if positional else None,
            name=name,
            **self._sublayer_kwargs(),
        )

    def _feed_forward(self, shape):
        layer = PositionwiseFeedForward(
            d_ff=self.d_ff,
            activation=self.activation,
            dropout=self.activation_dropout,
            name="feed_forward",
            **self._sublayer_kwargs(),
        )
        layer.build(shape)
        return layer

    def _pre_norm(self, x, layer_norm):
        """The sub-layer's input: `LayerNorm(x)` in pre-LN, else `x`."""
        return layer_norm(x) if self.normalize_first else x

    def _add_and_norm(self, residual, x, layer_norm, dropout, training):
        """`LayerNorm(residual + Dropout(x))` (post-LN) or without the norm."""
        x = residual + dropout(x, training=training)
        return x if self.normalize_first else layer_norm(x)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "d_ff": self.d_ff,
                "key_dim": self.key_dim,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "activation_dropout": self.activation_dropout,
                "activation": keras.activations.serialize(self.activation),
                "normalize_first": self.normalize_first,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "num_key_value_heads": self.num_key_value_heads,
                "rotary_max_wavelength": self.rotary_max_wavelength,
                "max_relative_position": self.max_relative_position,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
