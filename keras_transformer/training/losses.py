"""Label-smoothed cross-entropy over target tokens, ignoring padding."""

import keras
from keras import ops

from keras_transformer.special_tokens import PAD_ID


def label_smoothed_cross_entropy(y_true, logits, label_smoothing=0.1, pad_id=PAD_ID):
    """Per-token label-smoothed cross-entropy and the non-padding mask.

    The smoothed target puts `1 - eps` on the true token and spreads `eps`
    uniformly over the whole vocabulary (`eps / V` on every token, the true
    one included), as `keras.losses.CategoricalCrossentropy(label_smoothing=)`
    and fairseq do: `loss = (1 - eps) * nll + eps * mean_v(-log p_v)`.
    Computed in float32 whatever the logits' dtype.

    Args:
        y_true: int `(batch_size, length)` target ids.
        logits: `(batch_size, length, vocabulary)`.
        label_smoothing: float `eps` in [0, 1).
        pad_id: int, positions with this id count for nothing.

    Returns:
        `(losses, mask)`: float32 `(batch_size, length)` per-token losses (0
        at padding) and the float32 mask of real tokens.
    """
    logits = ops.cast(logits, "float32")
    y_true = ops.cast(y_true, "int32")
    log_probs = ops.log_softmax(logits, axis=-1)
    nll = -ops.squeeze(ops.take_along_axis(log_probs, y_true[..., None], axis=-1), -1)
    smooth = -ops.mean(log_probs, axis=-1)
    losses = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    mask = ops.cast(ops.not_equal(y_true, pad_id), "float32")
    return losses * mask, mask


@keras.saving.register_keras_serializable(package="keras_transformer")
class LabelSmoothedCrossEntropy(keras.losses.Loss):
    """Label-smoothed cross-entropy averaged over the batch's real tokens.

    `loss = sum(token losses) / number of non-padding tokens` of the batch
    (not a mean over `batch_size * length` positions, nor a mean of
    per-sentence means). The paper used `eps = 0.1` (section 5.4). See
    `label_smoothed_cross_entropy` for the smoothing convention.

    Under a distribution strategy each replica averages over its own tokens
    and Keras averages the replicas; with length-bucketed batches the
    replicas' token counts are close, but not equal.

    Args:
        label_smoothing: float in [0, 1). Defaults to 0.1.
        pad_id: int, padding id ignored in the loss. Defaults to 0.
        name: str.

    Call arguments:
        y_true: int `(batch_size, length)` target ids (`target_out`).
        y_pred: logits `(batch_size, length, vocabulary)`.

    Returns:
        A float32 scalar.

    Example:

    >>> import numpy as np
    >>> loss = LabelSmoothedCrossEntropy(label_smoothing=0.1)
    >>> float(loss(np.array([[4, 0]]), np.zeros((1, 2, 8), "float32"))) > 0
    True

    References:
        - [Szegedy et al., 2016](https://arxiv.org/abs/1512.00567)
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762), 5.4.
    """

    def __init__(
        self, label_smoothing=0.1, pad_id=PAD_ID, name="label_smoothed_cross_entropy"
    ):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                "`label_smoothing` must be in [0, 1). "
                f"Received: label_smoothing={label_smoothing}"
            )
        super().__init__(name=name, reduction="sum", dtype="float32")
        self.label_smoothing = label_smoothing
        self.pad_id = pad_id

    def call(self, y_true, y_pred):
        losses, mask = label_smoothed_cross_entropy(
            y_true, y_pred, self.label_smoothing, self.pad_id
        )
        # One value per batch: the token mean ("sum" reduction keeps it).
        return ops.sum(losses) / ops.maximum(ops.sum(mask), 1.0)

    def get_config(self):
        return {
            "name": self.name,
            "label_smoothing": self.label_smoothing,
            "pad_id": self.pad_id,
        }
