"""Label-smoothed cross-entropy over target tokens, ignoring padding."""

import keras
from keras import ops

from keras_transformer.special_tokens import PAD_ID
from keras_transformer.utils import in_xla_context


def _check_label_smoothing(label_smoothing):
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(
            "`label_smoothing` must be in [0, 1). "
            f"Received: label_smoothing={label_smoothing}"
        )


def _rank(x):
    try:
        return len(x.shape)
    except (TypeError, ValueError):  # unknown rank
        return None


def _check_ranks(y_true, y_pred):
    ranks = (_rank(y_true), _rank(y_pred))
    if None not in ranks and ranks != (2, 3):
        raise ValueError(
            "Expected `y_true` of rank 2 `(batch_size, length)` and `y_pred` of "
            "rank 3 `(batch_size, length, vocabulary_size)`. Received: "
            f"y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}"
        )


def token_log_probs(y_pred, from_logits=True):
    """Float32 log-probabilities of logits or probabilities `(..., vocabulary)`."""
    y_pred = ops.cast(y_pred, "float32")
    if from_logits:
        return ops.log_softmax(y_pred, axis=-1)
    return ops.log(ops.clip(y_pred, 1e-7, 1.0))


def _take_last(x, ids):
    """`x[..., ids]` per position: `(..., V)`, int `(...)` -> `(...)`."""
    return ops.squeeze(ops.take_along_axis(x, ids[..., None], axis=-1), -1)


def token_cross_entropy(y_true, y_pred, label_smoothing=0.0, from_logits=True):
    """Per-token float32 cross-entropy against the (smoothed) target.

    `-sum_v target[v] log p[v]` with `target = (1 - eps) one_hot(y) + eps / V`
    (the convention of `label_smoothed_cross_entropy`), at every position,
    padding included (mask it yourself). From logits it is computed as
    `logsumexp(x) - (1 - eps) x[y] - eps mean(x)`: no `(..., V)`
    log-probabilities are formed. Outside XLA (graph mode, eagerly) the
    gradient is written out as `softmax(x) - target`, a custom gradient that
    reuses the forward pass's `exp`, so the backward pass is a few
    elementwise passes over the logits instead of the gradient of
    `log_softmax`. Under XLA (and on the JAX backend, which always compiles
    with it) the log-sum-exp is differentiated by autodiff, which XLA fuses
    into a step about as fast as the custom gradient's, and without the
    extra memory the custom gradient keeps resident there (timings, also
    against Keras's sparse cross-entropy, in `benchmarks/README.md`).

    Args:
        y_true: int `(...)` target ids.
        y_pred: `(..., V)` logits (or probabilities with `from_logits=False`),
            any float dtype; computed in float32, and the gradient returned
            in `y_pred`'s dtype.
        label_smoothing: float `eps` in [0, 1). Defaults to `0.0`.
        from_logits: bool. Defaults to `True`.

    Returns:
        float32 `(...)`: the per-token losses.

    Example:

    >>> import numpy as np
    >>> losses = token_cross_entropy(np.array([[1, 0]]), np.zeros((1, 2, 4)))
    >>> [round(float(v), 4) for v in losses[0]]  # log(4) at both positions
    [1.3863, 1.3863]
    """
    _check_label_smoothing(label_smoothing)
    y_true = ops.cast(y_true, "int32")
    if not from_logits:
        log_probs = token_log_probs(y_pred, from_logits=False)
        losses = -(1.0 - label_smoothing) * _take_last(log_probs, y_true)
        if label_smoothing:
            losses = losses - label_smoothing * ops.mean(log_probs, axis=-1)
        return losses
    logits = ops.cast(y_pred, "float32")
    eps = float(label_smoothing)
    if in_xla_context():
        # XLA fuses the log-sum-exp's own gradient; the custom gradient below
        # is about as fast there and keeps more memory resident
        # (benchmarks/README.md).
        peak = ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True))
        shifted = logits - peak  # (..., V); the max's gradient cancels
        return _smoothed_losses(shifted, ops.exp(shifted), y_true, eps)[0]
    vocabulary_size = ops.cast(ops.shape(logits)[-1], "float32")

    @ops.custom_gradient
    def per_token(x):
        shifted = x - ops.max(x, axis=-1, keepdims=True)  # (..., V)
        exp = ops.exp(shifted)  # (..., V), reused by the gradient
        losses, total = _smoothed_losses(shifted, exp, y_true, eps)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            upstream = upstream[..., None]  # (..., 1)
            # upstream * (softmax - (1 - eps) one_hot(y) - eps / V)
            gradient = exp * (upstream / total)
            if eps:
                gradient = gradient - upstream * (eps / vocabulary_size)
            one_hot = ops.one_hot(y_true, ops.shape(x)[-1], dtype="float32")
            return gradient - one_hot * ((1.0 - eps) * upstream)

        return losses, grad

    return per_token(logits)


def _smoothed_losses(shifted, exp, y_true, eps):
    """Per-token losses and `(..., 1)` sums of `exp` from shifted logits.

    `shifted` is `(..., V)` logits minus their max, `exp` its exponential;
    the losses are `log(sum(exp)) - (1 - eps) shifted[y] - eps mean(shifted)`.
    """
    total = ops.sum(exp, axis=-1, keepdims=True)  # (..., 1)
    losses = ops.squeeze(ops.log(total), -1) - (1.0 - eps) * _take_last(shifted, y_true)
    if eps:
        losses = losses - eps * ops.mean(shifted, axis=-1)
    return losses, total


def padding_mask(y_true, pad_id=PAD_ID):
    """Float32 mask: 1 at real tokens, 0 where `y_true == pad_id`."""
    if pad_id is None:
        return ops.ones(ops.shape(y_true), "float32")
    return ops.cast(ops.not_equal(y_true, pad_id), "float32")


def sum_across_replicas(value):
    """Sums `value` over the replicas of a `tf.distribute` replica context.

    Outside `strategy.run` (no replica context, or a single replica) the value
    is returned unchanged. Only the TensorFlow backend distributes this way.
    """
    if keras.backend.backend() != "tensorflow":
        return value
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def label_smoothed_cross_entropy(
    y_true, logits, label_smoothing=0.1, pad_id=PAD_ID, from_logits=True
):
    """Per-token label-smoothed cross-entropy and the non-padding mask.

    Convention: the smoothed target distribution puts `1 - eps` on the true
    token plus `eps / V` on every token of the vocabulary (the true one
    included), so the true token gets `1 - eps + eps / V` and every other token
    `eps / V`. This is `keras.losses.CategoricalCrossentropy(label_smoothing=)`
    and `torch.nn.CrossEntropyLoss(label_smoothing=)`; tensor2tensor and
    fairseq spread `eps` over the `V - 1` wrong tokens instead. The loss is

    `(1 - eps) * (-log p[y]) + eps * mean_v(-log p[v])`,

    whose minimum is the entropy of the smoothed target, not 0 (for `eps > 0`).
    Computed in float32 whatever the dtype of `logits`, by
    `token_cross_entropy` (from logits: a log-sum-exp, no log-probabilities;
    outside XLA with a written-out gradient).

    Args:
        y_true: int tensor `(batch_size, length)`, the target ids.
        logits: tensor `(batch_size, length, vocabulary_size)`, logits (or
            probabilities with `from_logits=False`), any float dtype.
        label_smoothing: float `eps` in [0, 1). Defaults to `0.1`.
        pad_id: int, positions where `y_true == pad_id` count for nothing;
            `None` counts every position. Defaults to `0`.
        from_logits: bool, whether `logits` are logits (`True`) or
            probabilities. Defaults to `True`.

    Returns:
        A tuple `(losses, mask)` of float32 `(batch_size, length)` tensors: the
        per-token losses (0 at padding) and the mask of real tokens.

    Example:

    >>> import numpy as np
    >>> losses, mask = label_smoothed_cross_entropy(
    ...     np.array([[1, 0]]), np.zeros((1, 2, 4), "float32"))
    >>> [round(float(v), 4) for v in losses[0]], [float(v) for v in mask[0]]
    ([1.3863, 0.0], [1.0, 0.0])
    """
    y_true = ops.cast(y_true, "int32")
    losses = token_cross_entropy(y_true, logits, label_smoothing, from_logits)
    mask = padding_mask(y_true, pad_id)
    # `where`, not a product: a huge logit at a padded position must not give
    # `inf * 0 = nan`.
    return ops.where(mask > 0, losses, 0.0), mask


def token_weights(sample_weight, mask):
    """Broadcasts `sample_weight` (scalar, `(B,)`, `(B, T)`, `(B, T, 1)`) to `mask`."""
    if sample_weight is None:
        return mask
    sample_weight = ops.cast(sample_weight, "float32")
    rank = len(sample_weight.shape)
    if rank == 3:
        sample_weight = ops.squeeze(sample_weight, -1)
    elif rank == 1:
        sample_weight = sample_weight[:, None]
    elif rank not in (0, 2):
        raise ValueError(
            "`sample_weight` must be a scalar or of shape `(batch_size,)`, "
            "`(batch_size, length)` or `(batch_size, length, 1)`. Received: "
            f"sample_weight.shape={tuple(sample_weight.shape)}"
        )
    return mask * sample_weight


@keras.saving.register_keras_serializable(package="keras_transformer")
class LabelSmoothedCrossEntropy(keras.losses.Loss):
    """Label-smoothed cross-entropy averaged over the batch's real tokens.

    The value is `sum(w * token_loss) / number of non-padding tokens`, where
    the sum runs over every non-padding position of the batch and `w` is the
    optional `sample_weight` (1 without one). It is the mean over real tokens,
    not over `batch_size * length` positions, nor a mean of per-sentence means.
    Padding is read from `y_true == pad_id` only (a Keras mask on `y_pred` is
    not used). Sample weights scale token losses but do not change the
    denominator, like Keras's `"sum_over_batch_size"` reduction. The paper used
    `eps = 0.1` (section 5.4); see `label_smoothed_cross_entropy` for the
    smoothing convention (`eps / V` on every token). Always float32.

    Distribution: inside `strategy.run` with more than one replica (as in
    `model.fit` under `MirroredStrategy` or `TPUStrategy`), the token count is
    summed over the replicas (an all-reduce), and each replica returns its
    token-loss sum divided by that *global* count. Keras sums the replicas'
    gradients, so the update is the gradient of the token mean of the whole
    global batch, exactly as on one device, however unevenly the tokens fall
    across replicas; the `loss` that `fit` reports is also the global token
    mean. (Keras's built-in losses instead average per-replica means.)

    Args:
        label_smoothing: float in [0, 1). Defaults to `0.1`.
        pad_id: int, target id ignored by the loss; `None` counts every
            position. Defaults to `0` (`special_tokens.PAD_ID`).
        from_logits: bool, whether `y_pred` holds logits or probabilities.
            Defaults to `True`.
        name: str. Defaults to `"label_smoothed_cross_entropy"`.

    Call arguments:
        y_true: int `(batch_size, length)` target ids (`target_out`).
        y_pred: `(batch_size, length, vocabulary_size)` logits, any float dtype.
        sample_weight: optional scalar, `(batch_size,)` or
            `(batch_size, length)` weights.

    Returns:
        A float32 scalar; 0 for a batch that is all padding.

    Example:

    >>> import numpy as np
    >>> loss = LabelSmoothedCrossEntropy(label_smoothing=0.1)
    >>> y_true = np.array([[4, 5, 0]])  # two real tokens, one pad
    >>> round(float(loss(y_true, np.zeros((1, 3, 8), "float32"))), 4)  # log(8)
    2.0794

    References:
        - [Szegedy et al., 2016](https://arxiv.org/abs/1512.00567)
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762), 5.4.
    """

    def __init__(
        self,
        label_smoothing=0.1,
        pad_id=PAD_ID,
        from_logits=True,
        name="label_smoothed_cross_entropy",
    ):
        _check_label_smoothing(label_smoothing)
        super().__init__(name=name, reduction="sum", dtype="float32")
        self.label_smoothing = label_smoothing
        self.pad_id = pad_id
        self.from_logits = from_logits

    def __call__(self, y_true, y_pred, sample_weight=None):
        with keras.name_scope(self.name):
            y_true = ops.convert_to_tensor(y_true)
            y_pred = ops.convert_to_tensor(y_pred)
            _check_ranks(y_true, y_pred)
            losses, mask = label_smoothed_cross_entropy(
                y_true, y_pred, self.label_smoothing, self.pad_id, self.from_logits
            )
            weights = token_weights(sample_weight, mask)
            tokens = sum_across_replicas(ops.stop_gradient(ops.sum(mask)))
            return ops.divide_no_nan(ops.sum(losses * weights), tokens)

    def call(self, y_true, y_pred):
        """Per-token losses `(batch_size, length)`, 0 at padding."""
        losses, _ = label_smoothed_cross_entropy(
            y_true, y_pred, self.label_smoothing, self.pad_id, self.from_logits
        )
        return losses

    def get_config(self):
        return {
            "label_smoothing": self.label_smoothing,
            "pad_id": self.pad_id,
            "from_logits": self.from_logits,
            "name": self.name,
        }
