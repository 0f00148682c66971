"""The position-wise feed-forward network."""

import keras

from keras_transformer.layers.dropout import Dropout
from keras_transformer.layers.utils import apply_to_real_positions
from keras_transformer.layers.utils import clone_initializer
from keras_transformer.utils import check_positive_int
from keras_transformer.utils import check_rate


@keras.saving.register_keras_serializable(package="keras_transformer")
class PositionwiseFeedForward(keras.layers.Layer):
    """`FFN(x) = max(0, x W_1 + b_1) W_2 + b_2`, applied at every position.

    Args:
        d_ff: int, inner dimension (2048 in the base model).
        activation: activation between the two linear layers. Defaults to
            `"relu"` as in the paper.
        dropout: float, dropout on the inner activations (the paper uses none
            here; tensor2tensor calls it `relu_dropout`).
        output_dim: int, output size. Defaults to the input's last dimension.
        kernel_initializer: initializer of both kernels.
        bias_initializer: initializer of both biases.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: `(batch_size, sequence_length, d_model)`.
        padding_mask: optional bool `(batch_size, sequence_length)`, `True`
            for real tokens. Padded positions are then not computed where the
            shapes allow (in a batch padded to its longest sentence, they can
            be a large part of the rows) and their outputs are zero on every
            code path; see `layers.utils.apply_to_real_positions`.
        training: bool, whether dropout is active.

    Returns:
        `(batch_size, sequence_length, output_dim or d_model)`.

    Example:

    >>> import numpy as np
    >>> tuple(PositionwiseFeedForward(d_ff=32)(np.ones((2, 3, 8), "float32")).shape)
    (2, 3, 8)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762), 3.3.
    """

    def __init__(
        self,
        d_ff,
        activation="relu",
        dropout=0.0,
        output_dim=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        check_positive_int("d_ff", d_ff)
        check_rate("dropout", dropout)
        if output_dim is not None:
            check_positive_int("output_dim", output_dim)
        super().__init__(**kwargs)
        self.d_ff = d_ff
        self.activation = keras.activations.get(activation)
        self.dropout = dropout
        self.output_dim = output_dim
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def build(self, inputs_shape):
        d_model = inputs_shape[-1]
        self.inner_dense = keras.layers.Dense(
            self.d_ff,
            activation=self.activation,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="inner_dense",
        )
        self.inner_dense.build(inputs_shape)
        self.dropout_layer = Dropout(
            self.dropout, dtype=self.dtype_policy, name="inner_dropout"
        )
        self.output_dense = keras.layers.Dense(
            self.output_dim or d_model,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="output_dense",
        )
        self.output_dense.build(tuple(inputs_shape[:-1]) + (self.d_ff,))
        self.built = True

    def call(self, inputs, padding_mask=None, training=None):
        def feed_forward(x):  # (..., d_model), each position on its own
            x = self.inner_dense(x)  # (..., d_ff), ReLU applied
            x = self.dropout_layer(x, training=training)
            return self.output_dense(x)  # (..., output_dim)

        if padding_mask is None:
            return feed_forward(inputs)  # (B, T, output_dim)
        output_dim = self.output_dim or inputs.shape[-1]
        return apply_to_real_positions(feed_forward, inputs, padding_mask, output_dim)

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape[:-1]) + (self.output_dim or inputs_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "d_ff": self.d_ff,
                "activation": keras.activations.serialize(self.activation),
                "dropout": self.dropout,
                "output_dim": self.output_dim,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
