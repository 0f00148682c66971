"""Helpers shared by every package: argument checks, device and XLA queries.

Nothing here imports another module of the library, so every layer of it
(layers, models, decoding, training, export) may use these.
"""

import keras
from keras import ops


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


# The dtypes a key/value cache may have.
CACHE_DTYPES = ("float16", "bfloat16", "float32", "float64")


def standardize_cache_dtype(dtype, name="dtype"):
    """`dtype`'s standard name; a `ValueError` unless it is in `CACHE_DTYPES`."""
    dtype = keras.backend.standardize_dtype(dtype)
    if dtype not in CACHE_DTYPES:
        raise ValueError(
            f"`{name}` of a key/value cache must be a float dtype, one of "
            f"{CACHE_DTYPES}. Received: {name}={dtype}"
        )
    return dtype


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


def has_accelerator():
    """Whether TensorFlow sees a GPU or a TPU (else everything runs on CPUs).

    Other Keras backends: `False` (not asked; only TensorFlow-specific code
    paths use it).
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return bool(
        tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU")
    )


def cpu_tuned_paths():
    """Whether to take the code paths that were tuned on CPUs.

    `True` when no GPU or TPU is seen. Three choices were measured on CPUs
    only (see `benchmarks/README.md`) and are taken only here: skipping the
    padded rows of position-wise layers
    (`layers.utils.apply_to_real_positions`), float32 decoding caches for
    16-bit models under XLA (`decoding.generation.resolve_cache_dtype`) and
    ThreeFry dropout masks under XLA (`layers.Dropout`). On GPUs and TPUs
    the plain paths run. The first two compute the same values either way;
    the dropout masks differ but are equally random.
    """
    return not has_accelerator()


def dynamic_update(tensor, update, index, axis):
    """Writes `update` into `tensor` at `index` along `axis`; same shape out.

    Two implementations, with the same result:

    - under XLA (`in_xla_context()`): `ops.slice_update`, an XLA
      dynamic-update-slice, which XLA performs in place in a loop-carried
      buffer (a decoding cache): only the written positions are touched;
    - otherwise: a scatter of the written positions
      (`ops.scatter_update`, TensorFlow's `TensorScatterUpdate`), a core
      op, so that a stock TF Serving build runs the graph (the TF backend's
      `slice_update` lowers to `XlaDynamicUpdateSlice`, which it may not
      run). It copies `tensor` once and writes the positions.

    Args:
        tensor: the tensor to update, e.g. a cache buffer `(B, H, S, d)`.
        update: same rank; its `axis` dimension is the number of positions
            written. Outside XLA the other dimensions may broadcast against
            `tensor`'s; under XLA they must be equal.
        index: int or scalar int tensor, the first position written
            (`index + update length <= tensor length`).
        axis: int, the axis to write along.

    Returns:
        A tensor of `tensor`'s shape and dtype.

    Example:

    >>> import numpy as np
    >>> out = dynamic_update(np.zeros((1, 4)), np.ones((1, 2)), 1, axis=1)
    >>> keras.ops.convert_to_numpy(out).tolist()
    [[0.0, 1.0, 1.0, 0.0]]
    """
    axis = axis % len(tensor.shape)
    index = ops.cast(index, "int32")
    update = ops.cast(update, tensor.dtype)
    if in_xla_context():
        start = [0] * len(tensor.shape)
        start[axis] = index
        return ops.slice_update(tensor, start, update)
    shape = ops.shape(tensor)
    count = ops.shape(update)[axis]
    update = ops.broadcast_to(update, shape[:axis] + (count,) + shape[axis + 1 :])
    # The index of every written slice: (d_0, ..., d_{axis-1}, count, axis + 1).
    ranges = [ops.arange(shape[i], dtype="int32") for i in range(axis)]
    ranges.append(ops.arange(count, dtype="int32") + index)
    indices = ops.stack(ops.meshgrid(*ranges, indexing="ij"), axis=-1)
    return ops.scatter_update(tensor, indices, update)
