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


def in_xla_context():
    """Whether the code being traced will be compiled by XLA.

    `True` inside a `tf.function(jit_compile=True)` (including the bodies of
    its `tf.while_loop`s and the layers it calls), `False` eagerly and in
    plain (non-XLA) graphs such as an exported SavedModel's. Other Keras
    backends (JAX compiles everything) count as XLA.

    TensorFlow enters an `XLAControlFlowContext` while tracing a
    `jit_compile=True` function; this asks the (private, stable since TF 2.4)
    `control_flow_util` helper that TensorFlow's own `while_loop` uses. If
    that helper ever moves, the answer is `False`, which is always correct
    (just slower under XLA).
    """
    if keras.backend.backend() != "tensorflow":
        return keras.backend.backend() == "jax"
    try:
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover
        return False
    if tf.executing_eagerly():
        return False
    try:
        return bool(
            control_flow_util.GraphOrParentsInXlaContext(
                tf.compat.v1.get_default_graph()
            )
        )
    except AttributeError:  # pragma: no cover
        return False


def dynamic_update(tensor, update, index, axis, in_place=None):
    """Writes `update` into `tensor` at `index` along `axis`; same shape out.

    Two implementations, with the same result:

    - under XLA (`in_place=True`; by default when `in_xla_context()`):
      `ops.slice_update`, an XLA dynamic-update-slice, which XLA performs in
      place in a loop-carried buffer (a decoding cache): only the written
      positions are touched;
    - otherwise: gather + select over the whole tensor, so the graph holds
      only core TensorFlow ops (the TF backend's `slice_update` lowers to
      `XlaDynamicUpdateSlice`, which a stock TF Serving build may not run)
      and every shape stays static.

    Args:
        tensor: the tensor to update, e.g. a cache buffer `(B, H, S, d)`.
        update: same rank; its `axis` dimension is the number of positions
            written. With `in_place=False` the other dimensions may broadcast
            against `tensor`'s; with `in_place=True` they must be equal.
        index: int or scalar int tensor, the first position written
            (`index + update length <= tensor length`).
        axis: int, the axis to write along.
        in_place: `None` (default) to pick by `in_xla_context()`, or a bool.

    Returns:
        A tensor of `tensor`'s shape and dtype.
    """
    axis = axis % len(tensor.shape)
    index = ops.cast(index, "int32")
    update = ops.cast(update, tensor.dtype)
    if in_place is None:
        in_place = in_xla_context()
    if in_place:
        start = [0] * len(tensor.shape)
        start[axis] = index
        return ops.slice_update(tensor, start, update)
    length = ops.shape(tensor)[axis]
    count = ops.shape(update)[axis]
    positions = ops.arange(length, dtype="int32")
    source = ops.clip(positions - index, 0, count - 1)
    gathered = ops.take(update, source, axis=axis)
    inside = ops.logical_and(positions >= index, positions < index + count)
    inside = ops.reshape(
        inside, [-1 if i == axis else 1 for i in range(len(tensor.shape))]
    )
    return ops.where(inside, gathered, tensor)
