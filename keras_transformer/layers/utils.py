"""Small helpers shared by the layers."""

import keras
from keras import ops


def clone_initializer(initializer):
    """A fresh copy of `initializer`, so sub-layers don't share seeds/state."""
    initializer = keras.initializers.get(initializer)
    return initializer.__class__.from_config(initializer.get_config())


def check_positive_int(name, value):
    """Raises `ValueError` unless `value` is a positive Python int."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value}"
        )


def check_rate(name, value):
    """Raises `ValueError` unless `0 <= value < 1`."""
    if not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"`{name}` must be a float in [0, 1). Received: {name}={value}"
        )


def check_heads(d_model, num_heads, key_dim=None):
    """Raises unless `d_model` splits evenly over `num_heads` (when it must)."""
    if key_dim is None and d_model % num_heads:
        raise ValueError(
            f"d_model={d_model} is not divisible by num_heads={num_heads}."
        )


def dynamic_update(tensor, update, index, axis):
    """Writes `update` into `tensor` at `index` along `axis`; same shape out.

    Like `ops.slice_update`, but built from gather and select, so the graph
    holds only core TensorFlow ops (the TF backend's `slice_update` lowers to
    `XlaDynamicUpdateSlice`, which a stock TF Serving build may not run) and
    every shape stays static under XLA.

    Args:
        tensor: the tensor to update, e.g. a cache `(B, 2, S, H, d)`.
        update: same rank; its `axis` dimension is the number of positions
            written, the other dimensions broadcast against `tensor`'s.
        index: int or scalar int tensor, the first position written.
        axis: int, the axis to write along.

    Returns:
        A tensor of `tensor`'s shape and dtype.
    """
    axis = axis % len(tensor.shape)
    length = ops.shape(tensor)[axis]
    count = ops.shape(update)[axis]
    index = ops.cast(index, "int32")
    positions = ops.arange(length, dtype="int32")
    source = ops.clip(positions - index, 0, count - 1)
    gathered = ops.take(ops.cast(update, tensor.dtype), source, axis=axis)
    inside = ops.logical_and(positions >= index, positions < index + count)
    inside = ops.reshape(
        inside, [-1 if i == axis else 1 for i in range(len(tensor.shape))]
    )
    return ops.where(inside, gathered, tensor)
