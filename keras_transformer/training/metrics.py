"""Token accuracy that ignores padding."""

import keras
from keras import ops

from keras_transformer.special_tokens import PAD_ID


@keras.saving.register_keras_serializable(package="keras_transformer")
class MaskedAccuracy(keras.metrics.Metric):
    """Fraction of non-padding target tokens predicted correctly (argmax).

    Accumulated over tokens, not averaged over batches.

    Args:
        pad_id: int, ignored target id. Defaults to 0.
        name: str. Defaults to `"masked_accuracy"`.

    Example:

    >>> import numpy as np
    >>> metric = MaskedAccuracy()
    >>> logits = np.eye(5, dtype="float32")[[[1, 2, 0]]]
    >>> metric.update_state(np.array([[1, 3, 0]]), logits)
    >>> float(metric.result())
    0.5
    """

    def __init__(self, pad_id=PAD_ID, name="masked_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pad_id = pad_id
        self.correct = self.add_variable((), initializer="zeros", name="correct")
        self.total = self.add_variable((), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        predictions = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        mask = ops.cast(ops.not_equal(y_true, self.pad_id), "float32")
        hits = ops.cast(ops.equal(predictions, y_true), "float32") * mask
        self.correct.assign_add(ops.sum(hits))
        self.total.assign_add(ops.sum(mask))

    def result(self):
        return self.correct / ops.maximum(self.total, 1.0)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}
