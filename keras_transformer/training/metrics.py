"""Token-level metrics that ignore padding: accuracy and perplexity."""

import keras
from keras import ops

from keras_transformer.special_tokens import PAD_ID
from keras_transformer.training.losses import padding_mask
from keras_transformer.training.losses import token_cross_entropy
from keras_transformer.training.losses import token_weights


@keras.saving.register_keras_serializable(package="keras_transformer")
class MaskedAccuracy(keras.metrics.Metric):
    """Fraction of non-padding target tokens predicted correctly (argmax).

    Accumulated over tokens, not averaged over batches: after several
    `update_state` calls the result is `correct tokens / real tokens` over all
    of them. Positions where `y_true == pad_id` are ignored; an optional
    `sample_weight` weights each token (then the result is
    `sum(w * correct) / sum(w)` over real tokens). The counters are summed
    across replicas under a distribution strategy, so the value is exact there
    too.

    Args:
        pad_id: int, ignored target id; `None` counts every position.
            Defaults to `0` (`special_tokens.PAD_ID`).
        name: str. Defaults to `"masked_accuracy"`.
        dtype: the metric's dtype. Defaults to `None` (float32).

    Call arguments:
        y_true: int `(batch_size, length)` target ids.
        y_pred: `(batch_size, length, vocabulary_size)` logits or
            probabilities.
        sample_weight: optional scalar, `(batch_size,)` or
            `(batch_size, length)` weights.

    Returns:
        `result()`: a float32 scalar in [0, 1]; 0 before any real token.

    Example:

    >>> import numpy as np
    >>> metric = MaskedAccuracy()
    >>> logits = np.eye(5, dtype="float32")[[[1, 2, 0]]]  # predicts 1, 2, 0
    >>> metric.update_state(np.array([[1, 3, 0]]), logits)
    >>> float(metric.result())
    0.5
    """

    def __init__(self, pad_id=PAD_ID, name="masked_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.pad_id = pad_id
        self.correct = self.add_variable((), initializer="zeros", name="correct")
        self.total = self.add_variable((), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        predictions = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        weights = token_weights(sample_weight, padding_mask(y_true, self.pad_id))
        hits = ops.cast(ops.equal(predictions, y_true), "float32") * weights
        self.correct.assign_add(ops.cast(ops.sum(hits), self.dtype))
        self.total.assign_add(ops.cast(ops.sum(weights), self.dtype))

    def result(self):
        return ops.divide_no_nan(self.correct, self.total)

    def reset_state(self):
        self.correct.assign(ops.zeros((), self.dtype))
        self.total.assign(ops.zeros((), self.dtype))

    def get_config(self):
        return {"pad_id": self.pad_id, "name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="keras_transformer")
class MaskedPerplexity(keras.metrics.Metric):
    """Perplexity of the real target tokens: `exp(token-mean NLL)`.

    The negative log-likelihood is the plain (unsmoothed) cross-entropy, in
    float32, summed over non-padding tokens and divided by their number, over
    all `update_state` calls since the last reset. Use it on validation data,
    where `LabelSmoothedCrossEntropy` overstates the NLL by the smoothing term.
    `log_perplexity()` returns the token-mean NLL itself.

    Args:
        pad_id: int, ignored target id; `None` counts every position.
            Defaults to `0` (`special_tokens.PAD_ID`).
        from_logits: bool, whether `y_pred` holds logits or probabilities.
            Defaults to `True`.
        name: str. Defaults to `"masked_perplexity"`.
        dtype: the metric's dtype. Defaults to `None` (float32).

    Call arguments:
        y_true: int `(batch_size, length)` target ids.
        y_pred: `(batch_size, length, vocabulary_size)` logits or
            probabilities.
        sample_weight: optional scalar, `(batch_size,)` or
            `(batch_size, length)` weights.

    Returns:
        `result()`: a float32 scalar >= 1; 1 before any real token.

    Example:

    >>> import numpy as np
    >>> metric = MaskedPerplexity()
    >>> metric.update_state(np.array([[1, 2, 0]]), np.zeros((1, 3, 8), "float32"))
    >>> round(float(metric.result()), 3)  # uniform over 8 tokens
    8.0
    """

    def __init__(
        self, pad_id=PAD_ID, from_logits=True, name="masked_perplexity", dtype=None
    ):
        super().__init__(name=name, dtype=dtype)
        self.pad_id = pad_id
        self.from_logits = from_logits
        self.nll = self.add_variable((), initializer="zeros", name="nll")
        self.total = self.add_variable((), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        nll = token_cross_entropy(y_true, y_pred, from_logits=self.from_logits)
        weights = token_weights(sample_weight, padding_mask(y_true, self.pad_id))
        nll = ops.where(weights != 0, nll * weights, 0.0)
        self.nll.assign_add(ops.cast(ops.sum(nll), self.dtype))
        self.total.assign_add(ops.cast(ops.sum(weights), self.dtype))

    def log_perplexity(self):
        """The token-mean negative log-likelihood (nats)."""
        return ops.divide_no_nan(self.nll, self.total)

    def result(self):
        return ops.exp(self.log_perplexity())

    def reset_state(self):
        self.nll.assign(ops.zeros((), self.dtype))
        self.total.assign(ops.zeros((), self.dtype))

    def get_config(self):
        return {
            "pad_id": self.pad_id,
            "from_logits": self.from_logits,
            "name": self.name,
            "dtype": self.dtype,
        }
