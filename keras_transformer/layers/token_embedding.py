"""Token embeddings scaled by sqrt(d_model), with an optional tied output."""

import math

import keras
from keras import ops

from keras_transformer.special_tokens import PAD_ID
from keras_transformer.utils import check_positive_int


@keras.saving.register_keras_serializable(package="keras_transformer")
class TokenEmbedding(keras.layers.Layer):
    """Token embeddings, multiplied by `sqrt(d_model)` (paper section 3.4).

    The same layer also produces logits: `embedding.logits(x)` projects hidden
    states onto the vocabulary. With `tie_weights=True` (the paper's choice)
    it uses the transposed embedding matrix, so the embedding and the
    pre-softmax linear transformation share one weight matrix; with
    `tie_weights=False` it owns a separate `(d_model, vocabulary_size)`
    kernel. Logits are returned in float32 under every dtype policy.

    Args:
        vocabulary_size: int, number of token ids.
        d_model: int, embedding size.
        tie_weights: bool, share the embedding matrix with the output
            projection. Defaults to `True`.
        scale: bool, multiply embeddings by `sqrt(d_model)`. Defaults to
            `True`.
        pad_id: int, the padding id; `compute_mask` marks it `False`.
        embeddings_initializer: defaults to `normal(0, d_model^-0.5)`, so the
            scaled embeddings have unit variance (as in tensor2tensor).
        **kwargs: base layer keyword arguments.

    Call arguments:
        token_ids: int tensor `(batch_size, sequence_length)`.

    Returns:
        `(batch_size, sequence_length, d_model)` embeddings.

    Example:

    >>> import numpy as np
    >>> embedding = TokenEmbedding(vocabulary_size=10, d_model=4)
    >>> x = embedding(np.array([[5, 6, 0]]))
    >>> tuple(x.shape), tuple(embedding.logits(x).shape)
    ((1, 3, 4), (1, 3, 10))

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762), 3.4.
        - [Press & Wolf, 2017](https://arxiv.org/abs/1608.05859).
    """

    def __init__(
        self,
        vocabulary_size,
        d_model,
        tie_weights=True,
        scale=True,
        pad_id=PAD_ID,
        embeddings_initializer=None,
        **kwargs,
    ):
        check_positive_int("vocabulary_size", vocabulary_size)
        check_positive_int("d_model", d_model)
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.d_model = d_model
        self.tie_weights = tie_weights
        self.scale = scale
        self.pad_id = pad_id
        if embeddings_initializer is None:
            embeddings_initializer = keras.initializers.RandomNormal(
                stddev=d_model**-0.5
            )
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, inputs_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.vocabulary_size, self.d_model),
            initializer=self.embeddings_initializer,
        )
        if not self.tie_weights:
            self.output_kernel = self.add_weight(
                name="output_kernel",
                shape=(self.d_model, self.vocabulary_size),
                initializer=self.embeddings_initializer,
            )
        self.built = True

    def call(self, token_ids):
        if "int" not in str(token_ids.dtype):
            raise ValueError(
                "TokenEmbedding expects integer token ids. "
                f"Received dtype: {token_ids.dtype}"
            )
        x = ops.take(self.embeddings, token_ids, axis=0)
        x = ops.cast(x, self.compute_dtype)
        if self.scale:
            x = x * ops.cast(math.sqrt(self.d_model), self.compute_dtype)
        return x

    def output_projection(self):
        """The `(d_model, vocabulary_size)` kernel of `logits`.

        The transposed embedding matrix (tied) or the output kernel, in the
        compute dtype. A decoding loop computes it once and passes it to
        `logits(..., kernel=)` at every step, so the matrix is carried
        through the loop in the `(d_model, vocabulary)` layout of the matmul
        instead of transposing the `(vocabulary, d_model)` table at every
        step (see `benchmarks/README.md` for the effect on decoding speed).
        """
        kernel = (
            ops.transpose(self.embeddings) if self.tie_weights else self.output_kernel
        )
        return ops.cast(kernel, self.compute_dtype)

    def logits(self, hidden_states, kernel=None):
        """Projects `(..., d_model)` hidden states to float32 vocabulary logits.

        Args:
            hidden_states: `(..., d_model)`.
            kernel: optional `output_projection()`, computed beforehand.

        Returns:
            float32 `(..., vocabulary_size)`.
        """
        if kernel is None:
            kernel = self.output_projection()
        logits = ops.matmul(hidden_states, ops.cast(kernel, hidden_states.dtype))
        return ops.cast(logits, "float32")

    def compute_mask(self, token_ids, mask=None):
        return ops.not_equal(token_ids, self.pad_id)

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape) + (self.d_model,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "d_model": self.d_model,
                "tie_weights": self.tie_weights,
                "scale": self.scale,
                "pad_id": self.pad_id,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
            }
        )
        return config
