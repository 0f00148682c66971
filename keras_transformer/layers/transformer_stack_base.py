"""Shared arguments and input embedding of the `Encoder` and `Decoder` stacks."""

import keras
from keras import ops

from keras_transformer.layers.sinusoidal_positional_encoding import (
    SinusoidalPositionalEncoding,
)
from keras_transformer.layers.token_embedding import TokenEmbedding
from keras_transformer.layers.utils import check_heads
from keras_transformer.layers.utils import check_positive_int
from keras_transformer.layers.utils import check_rate
from keras_transformer.layers.utils import clone_initializer
from keras_transformer.special_tokens import PAD_ID


class TransformerStackBase(keras.layers.Layer):
    """Base of `Encoder` and `Decoder` (not a public layer).

    Holds their shared arguments, the input embedding (token embedding,
    sinusoidal positional encoding, dropout) and the final pre-LN LayerNorm.
    See `Encoder` for the arguments.
    """

    def __init__(
        self,
        num_layers,
        num_heads,
        d_ff,
        d_model=None,
        vocabulary_size=None,
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        activation="relu",
        normalize_first=False,
        layer_norm_epsilon=1e-6,
        num_key_value_heads=None,
        max_wavelength=10000,
        pad_id=PAD_ID,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        check_positive_int("num_layers", num_layers)
        check_positive_int("num_heads", num_heads)
        check_positive_int("d_ff", d_ff)
        check_rate("dropout", dropout)
        if vocabulary_size is not None:
            check_positive_int("vocabulary_size", vocabulary_size)
            if d_model is None:
                raise ValueError("`d_model` is required with `vocabulary_size`.")
        if d_model is not None:
            check_positive_int("d_model", d_model)
            check_heads(d_model, num_heads)
        super().__init__(**kwargs)
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.d_ff = d_ff
        self.d_model = d_model
        self.vocabulary_size = vocabulary_size
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.activation = keras.activations.get(activation)
        self.normalize_first = normalize_first
        self.layer_norm_epsilon = layer_norm_epsilon
        self.num_key_value_heads = num_key_value_heads
        self.max_wavelength = max_wavelength
        self.pad_id = pad_id
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def _block_kwargs(self):
        return {
            "num_heads": self.num_heads,
            "d_ff": self.d_ff,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "activation_dropout": self.activation_dropout,
            "activation": self.activation,
            "normalize_first": self.normalize_first,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "num_key_value_heads": self.num_key_value_heads,
            "kernel_initializer": clone_initializer(self.kernel_initializer),
            "dtype": self.dtype_policy,
        }

    def _build_input_layers(self, inputs_shape):
        """Builds embedding/PE/dropout; returns the hidden-state shape."""
        if self.vocabulary_size is not None:
            self.token_embedding = TokenEmbedding(
                self.vocabulary_size,
                self.d_model,
                pad_id=self.pad_id,
                dtype=self.dtype_policy,
                name="token_embedding",
            )
            self.token_embedding.build(inputs_shape)
            hidden_shape = tuple(inputs_shape) + (self.d_model,)
        else:
            hidden_shape = tuple(inputs_shape)
            if self.d_model is not None and hidden_shape[-1] != self.d_model:
                raise ValueError(
                    f"Expected inputs with last dimension d_model={self.d_model}. "
                    f"Received shape: {hidden_shape}"
                )
            check_heads(hidden_shape[-1], self.num_heads)
        self.position_encoding = SinusoidalPositionalEncoding(
            self.max_wavelength, dtype=self.dtype_policy, name="position_encoding"
        )
        self.embedding_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="embedding_dropout"
        )
        if self.normalize_first:
            self.final_layer_norm = keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon,
                dtype=self.dtype_policy,
                name="final_layer_norm",
            )
            self.final_layer_norm.build(hidden_shape)
        return hidden_shape

    def _embed(self, inputs, padding_mask, start_index=0, training=None):
        """Returns `(Dropout(embedding + PE), padding_mask)`."""
        if self.vocabulary_size is not None:
            if len(inputs.shape) != 2:
                raise ValueError(
                    "Expected token ids of shape (batch_size, length). "
                    f"Received shape: {inputs.shape}"
                )
            if padding_mask is None:
                padding_mask = ops.not_equal(inputs, self.pad_id)
            x = self.token_embedding(inputs)
        else:
            if padding_mask is None:
                padding_mask = getattr(inputs, "_keras_mask", None)
            x = inputs
        # Add the float32 positional encoding in float32, then cast back.
        position = self.position_encoding(x, start_index=start_index)
        x = ops.cast(ops.cast(x, "float32") + position, self.compute_dtype)
        return self.embedding_dropout(x, training=training), padding_mask

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "d_ff": self.d_ff,
                "d_model": self.d_model,
                "vocabulary_size": self.vocabulary_size,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "activation_dropout": self.activation_dropout,
                "activation": keras.activations.serialize(self.activation),
                "normalize_first": self.normalize_first,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "num_key_value_heads": self.num_key_value_heads,
                "max_wavelength": self.max_wavelength,
                "pad_id": self.pad_id,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
            }
        )
        return config
