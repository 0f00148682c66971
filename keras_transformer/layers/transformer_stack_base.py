"""Shared arguments and input embedding of the `Encoder` and `Decoder` stacks."""

import keras
from keras import ops

from keras_transformer.layers.dropout import Dropout
from keras_transformer.layers.learned_positional_embedding import (
    LearnedPositionalEmbedding,
)
from keras_transformer.layers.sinusoidal_positional_encoding import (
    SinusoidalPositionalEncoding,
)
from keras_transformer.layers.token_embedding import TokenEmbedding
from keras_transformer.layers.utils import clone_initializer
from keras_transformer.special_tokens import PAD_ID
from keras_transformer.utils import check_heads
from keras_transformer.utils import check_positive_int
from keras_transformer.utils import check_rate

POSITION_ENCODINGS = ("sinusoidal", "learned", "rotary", "relative")


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
        position_encoding="sinusoidal",
        max_wavelength=10000,
        max_relative_position=16,
        max_positions=1024,
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
        if position_encoding not in POSITION_ENCODINGS:
            raise ValueError(
                f"`position_encoding` must be one of {POSITION_ENCODINGS}. "
                f"Received: position_encoding={position_encoding!r}"
            )
        # Call arguments keep their dtype, so a decoding cache passes through
        # in its own (see `MultiHeadAttention`); float inputs are cast to the
        # compute dtype in `_embed`.
        kwargs.setdefault("autocast", False)
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
        self.position_encoding = position_encoding
        self.max_wavelength = max_wavelength
        self.max_relative_position = max_relative_position
        self.max_positions = max_positions
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
            "rotary_max_wavelength": (
                self.max_wavelength if self.position_encoding == "rotary" else None
            ),
            "max_relative_position": (
                self.max_relative_position
                if self.position_encoding == "relative"
                else None
            ),
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
        # Rotary and relative positions live in the attention layers.
        self.position_embedding = None
        if self.position_encoding == "sinusoidal":
            self.position_embedding = SinusoidalPositionalEncoding(
                self.max_wavelength, dtype=self.dtype_policy, name="position_encoding"
            )
        elif self.position_encoding == "learned":
            self.position_embedding = LearnedPositionalEmbedding(
                self.max_positions, dtype=self.dtype_policy, name="position_embedding"
            )
            self.position_embedding.build(hidden_shape)
        self.embedding_dropout = Dropout(
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
            x = ops.cast(inputs, self.compute_dtype)
        if self.position_embedding is not None:
            # Add the float32 positions in float32, then cast back.
            position = self.position_embedding(x, start_index=start_index)
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
                "position_encoding": self.position_encoding,
                "max_wavelength": self.max_wavelength,
                "max_relative_position": self.max_relative_position,
                "max_positions": self.max_positions,
                "pad_id": self.pad_id,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
            }
        )
        return config
