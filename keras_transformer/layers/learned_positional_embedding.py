"""Learned absolute position embeddings."""

import keras
from keras import ops

from keras_transformer.utils import check_positive_int


@keras.saving.register_keras_serializable(package="keras_transformer")
class LearnedPositionalEmbedding(keras.layers.Layer):
    """One trained vector per position, up to `max_positions` positions.

    The paper found learned positions "nearly identical" to sinusoids
    (Table 3, row E); unlike sinusoids they cannot go past `max_positions`.

    Args:
        max_positions: int, the number of positions with a vector.
        embeddings_initializer: initializer of the table.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: `(batch_size, sequence_length, d_model)`; only its shape is
            used. `start_index + sequence_length` must be at most
            `max_positions`.
        start_index: int or scalar int tensor, position of the first element.

    Returns:
        float32 tensor of the shape of `inputs` (add it to the embeddings).

    Example:

    >>> import numpy as np
    >>> tuple(LearnedPositionalEmbedding(16)(np.zeros((2, 4, 8), "float32")).shape)
    (2, 4, 8)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762), Table 3.
        - [Gehring et al., 2017](https://arxiv.org/abs/1705.03122).
    """

    def __init__(
        self, max_positions, embeddings_initializer="glorot_uniform", **kwargs
    ):
        check_positive_int("max_positions", max_positions)
        super().__init__(**kwargs)
        self.max_positions = max_positions
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.supports_masking = True

    def build(self, inputs_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.max_positions, inputs_shape[-1]),
            initializer=self.embeddings_initializer,
        )
        self.built = True

    def call(self, inputs, start_index=0):
        shape = ops.shape(inputs)
        positions = ops.arange(shape[-2], dtype="int32") + ops.cast(
            start_index, "int32"
        )
        table = ops.cast(self.embeddings, "float32")
        return ops.broadcast_to(ops.take(table, positions, axis=0), shape)

    def compute_output_spec(self, inputs, start_index=0):
        return keras.KerasTensor(inputs.shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_positions": self.max_positions,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
            }
        )
        return config
