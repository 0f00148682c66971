"""The fixed-size key/value cache of attention, and how queries share it.

A cache is a dict of two heads-major buffers,
`{"key": (batch_size, num_key_value_heads, slots, key_dim),
"value": (batch_size, num_key_value_heads, slots, value_dim)}`, whose size
never changes (XLA friendly). Heads come before positions, so the attention
matmuls read the buffers as they are stored.

- `write_cache` writes the keys/values of new positions into the buffers:
  one slot per position, or, for a **beam cache** of `R` beams per group,
  position `s` of beam `j` at slot `s * R + j` (see `beam_ancestry` for
  how such a cache is read).
- `in_place_writes` is the context of a decoding loop outside XLA: within
  it, `empty_buffer` makes buffers private to the loop and `write_cache`
  writes them in place instead of copying them every step.
- `written_part` cuts the buffers to the positions written so far, for
  code that is not compiled by XLA (whose shapes may change step by step):
  the attention then reads and multiplies only those (a beam cache:
  `beam_ancestry.own_history`).
- `fold_shared_rows` / `unfold_shared_rows` let `r` consecutive query rows
  (the beams of one source sentence) attend to one row of a cross-attention
  cache, which then stores the encoder keys/values once per sentence.

Example:

>>> import numpy as np
>>> cache = {"key": np.zeros((1, 1, 4, 2)), "value": np.zeros((1, 1, 4, 2))}
>>> new = np.ones((1, 2, 1, 2))  # (batch_size, 2 positions, heads, dim)
>>> cache = write_cache(cache, new, new, index=1)
>>> np.asarray(cache["key"])[0, 0, :, 0].tolist()
[0.0, 1.0, 1.0, 0.0]
"""

import contextlib
import threading

import keras
from keras import ops

from keras_transformer.utils import dynamic_update
from keras_transformer.utils import in_xla_context

# The two buffers of a key/value cache.
CACHE_KEYS = ("key", "value")


def check_cache(cache):
    """The two buffers of `cache` as a new dict; a `ValueError` if it is not one.

    Args:
        cache: a dict with exactly the keys `CACHE_KEYS`.

    Returns:
        `{"key": cache["key"], "value": cache["value"]}`.
    """
    if not (hasattr(cache, "keys") and set(cache.keys()) == set(CACHE_KEYS)):
        raise ValueError(
            "`cache` must be a dict {'key': (batch_size, num_key_value_heads, "
            "length, key_dim), 'value': (batch_size, num_key_value_heads, "
            "length, value_dim)}, as made by `init_cache` or "
            "`compute_key_value_cache`. Received: "
            f"{type(cache).__name__} {getattr(cache, 'shape', '')}"
        )
    return {name: cache[name] for name in CACHE_KEYS}


# Whether the code being traced is in an `in_place_writes` context.
_IN_PLACE = threading.local()


@contextlib.contextmanager
def in_place_writes():
    """The context of a decoding loop that owns its self-attention caches.

    Traced in this context, in a TensorFlow graph that XLA does not compile
    (an exported SavedModel's signatures, `generate(jit_compile=False)`),
    `empty_buffer` allocates a new buffer on every run and `write_cache`
    writes the new positions into the buffer it is given, in place
    (`InplaceUpdate` on the buffer's rows), instead of copying the whole
    buffer at every step. Outside the context, eagerly and under XLA
    (which writes a loop-carried buffer in place on its own), nothing
    changes.

    The code traced in the context must own the buffers it writes: made by
    `empty_buffer` in the context (or copies of its own), and never read
    at their old value after a write, which holds in a decoding loop that
    writes a step's keys/values before reading the cache. A buffer made
    outside the context (a caller's cache) must not be written in it.

    Example:

    >>> import tensorflow as tf
    >>> @tf.function
    ... def fill(new):
    ...     with in_place_writes():
    ...         cache = {name: empty_buffer((1, 1, 3, 2), "float32")
    ...                  for name in CACHE_KEYS}
    ...         for index in range(3):
    ...             cache = write_cache(cache, new * index, new, index)
    ...     return cache["key"]
    >>> fill(tf.ones((1, 1, 1, 2)))[0, 0, :, 0].numpy().tolist()
    [0.0, 1.0, 2.0]
    """
    previous = getattr(_IN_PLACE, "active", False)
    _IN_PLACE.active = keras.backend.backend() == "tensorflow" and _in_graph()
    try:
        yield
    finally:
        _IN_PLACE.active = previous


def _in_graph():
    import tensorflow as tf

    return not tf.executing_eagerly()


def _writes_in_place():
    return getattr(_IN_PLACE, "active", False) and not in_xla_context()


def empty_buffer(shape, dtype):
    """A cache buffer of zeros; in `in_place_writes`, a new one on every run.

    `ops.zeros` may be folded into a constant when its shape is known, and
    a constant must not be written in place; TensorFlow's `Empty` op is
    stateful, so it allocates the buffer when the graph runs.

    Args:
        shape: tuple of ints or scalar int tensors.
        dtype: the buffer's dtype.

    Returns:
        A tensor of zeros of `shape` and `dtype`.
    """
    if not _writes_in_place():
        return ops.zeros(shape, dtype)
    import tensorflow as tf

    shape = tf.stack([tf.cast(size, tf.int32) for size in shape])
    return tf.raw_ops.Empty(shape=shape, dtype=dtype, init=True)


def _rows_in_place(buffer, new, index, beam_size):
    """The row of `buffer` that each vector of `new` goes to.

    `buffer` `(B, Hkv, S, d)` is read as `B Hkv S` rows of `d`; `new` keeps
    the layout it was projected in, `(B, T, Hkv, d)` (`(C R, T, Hkv, d)`
    for a beam cache of `C` groups): the row of each of its vectors is
    computed instead of transposing them. Keys and values share the rows.

    Returns:
        int32 `(B T Hkv,)`, in the order of `new`'s vectors.
    """
    import tensorflow as tf

    slots, heads = tf.shape(buffer)[2], buffer.shape[1]
    beams = beam_size or 1
    # new[c R + j, t, h] goes to slot (index + t) R + j of row (c, h).
    groups = tf.range(tf.shape(new)[0]) // beams
    beam = tf.range(tf.shape(new)[0]) % beams
    steps = tf.range(tf.shape(new)[1]) + tf.cast(index, tf.int32)
    rows = (
        (groups[:, None, None] * heads + tf.range(heads)[None, None, :]) * slots
        + steps[None, :, None] * beams
        + beam[:, None, None]
    )  # (B, T, Hkv)
    return tf.reshape(rows, (-1,))


def _write_rows(buffer, new, rows):
    """Writes `new`'s vectors into `buffer` at `rows`, in place."""
    import tensorflow as tf

    depth = buffer.shape[-1]
    written = tf.raw_ops.InplaceUpdate(
        x=tf.reshape(buffer, (-1, depth)),
        i=rows,
        v=tf.reshape(tf.cast(new, buffer.dtype), (-1, depth)),
    )
    return tf.reshape(written, tf.shape(buffer))


def write_cache(cache, key, value, index, beam_size=None):
    """Writes the keys/values of new positions into a fixed-size cache.

    Only the new positions are written. In an `in_place_writes` context,
    each vector goes to its row of the buffer in place; otherwise the new
    positions are transposed to the cache's layout (heads before
    positions) and written as one contiguous slice: in place under XLA,
    into a copy elsewhere (see `keras_transformer.utils.dynamic_update`).

    Args:
        cache: dict of buffers `(batch_size, num_key_value_heads, slots, d)`
            (`batch_size` is the number of groups for a beam cache).
        key: new keys `(batch_size, T, num_key_value_heads, key_dim)`
            (`groups * beam_size` rows for a beam cache, beam `j` of group
            `c` at row `c * beam_size + j`).
        value: new values `(batch_size, T, num_key_value_heads, value_dim)`.
        index: int or scalar int tensor, the position of the first new key.
        beam_size: optional int `R`. When given, the cache is a beam cache
            and position `s` of beam `j` is written at slot `s * R + j`, so
            the `R` beams' new positions are adjacent too.

    Returns:
        The updated cache, a dict of buffers of the same shapes and dtypes.
    """
    if _writes_in_place():
        rows = _rows_in_place(cache["key"], key, index, beam_size)
        return {
            "key": _write_rows(cache["key"], key, rows),
            "value": _write_rows(cache["value"], value, rows),
        }
    updated = {}
    for name, new in (("key", key), ("value", value)):
        if beam_size is None:
            new = ops.transpose(new, (0, 2, 1, 3))  # (B, Hkv, T, d)
            start = index
        else:
            new = _beam_major(new, ops.shape(cache[name])[0], beam_size)
            start = ops.cast(index, "int32") * beam_size
        updated[name] = dynamic_update(cache[name], new, start, axis=2)
    return updated


def written_part(key, value, written):
    """The first `written` positions of a self-attention cache's buffers.

    Attention over a fixed-size cache masks the positions not written yet;
    outside XLA, where shapes may change from step to step, cutting them
    off instead skips their reads and dot products and gives the same
    attention (masked keys have weight 0). For a beam cache, see
    `beam_ancestry.own_history`.

    Args:
        key: the cache's `"key"` buffer `(batch_size, num_key_value_heads,
            max_length, key_dim)`.
        value: the cache's `"value"` buffer, the same layout.
        written: int or scalar int tensor, the positions written (the
            cache index plus the new positions).

    Returns:
        `(key, value)` cut to `written` positions.
    """
    written = ops.cast(written, "int32")
    return key[:, :, :written], value[:, :, :written]


def _beam_major(new, groups, beam_size):
    """`(C R, T, Hkv, d)` -> `(C, Hkv, T R, d)`: slot `t R + j` is beam `j`."""
    length, heads = ops.shape(new)[1], new.shape[2]
    new = ops.reshape(new, (groups, beam_size) + tuple(new.shape[1:]))
    new = ops.transpose(new, (0, 3, 2, 1, 4))  # (C, Hkv, T, R, d)
    return ops.reshape(new, (groups, heads, length * beam_size, -1))


def fold_shared_rows(
    cache_batch, query, query_mask=None, value_mask=None, attention_mask=None
):
    """Folds query rows that share a cache row into the query length.

    With `batch_size = r * cache_batch`, query rows `i * r ... i * r + r - 1`
    all attend to cache row `i`. Folding them into one row of `r * T`
    queries, `(r C, T, ...) -> (C, r T, ...)`, lets one attention over the
    cache serve them all. A no-op reshape when `r` is 1.

    Args:
        cache_batch: int or scalar int tensor `C`, the cache's batch size.
        query: `(r C, T, num_heads, key_dim)`.
        query_mask: optional `(r C, T)`.
        value_mask: optional `(C, S)` or `(r C, S)` padding mask of the
            cache's keys; with `r C` rows, the first row of each group is
            kept (the rows of a group share their keys).
        attention_mask: optional `(r C, T, S)` or `(r C, heads, T, S)`.

    Returns:
        `(query, query_mask, value_mask, attention_mask)` folded:
        `(C, r T, num_heads, key_dim)`, `(C, r T)`, `(C, S)` and
        `(C, r T, S)` or `(C, heads, r T, S)` (`None` stays `None`).
    """
    query_batch, length = ops.shape(query)[0], ops.shape(query)[1]
    repeats = query_batch // cache_batch
    query = ops.reshape(query, (cache_batch, repeats * length) + tuple(query.shape[2:]))
    if query_mask is not None:
        query_mask = ops.reshape(query_mask, (cache_batch, repeats * length))
    if value_mask is not None:  # (C or r C, S): the first row of each group
        key_length = ops.shape(value_mask)[-1]
        value_mask = ops.reshape(value_mask, (cache_batch, -1, key_length))[:, 0]
    if attention_mask is not None:
        attention_mask = _fold_attention_mask(attention_mask, cache_batch, repeats)
    return query, query_mask, value_mask, attention_mask


def _fold_attention_mask(mask, cache_batch, repeats):
    """`(r C, T, S)` or `(r C, h, T, S)` -> `(C, [h,] r T, S)`."""
    length, key_length = ops.shape(mask)[-2], ops.shape(mask)[-1]
    if len(mask.shape) == 3:
        return ops.reshape(mask, (cache_batch, repeats * length, key_length))
    heads = ops.shape(mask)[1]
    mask = ops.reshape(mask, (cache_batch, repeats, heads, length, key_length))
    return ops.reshape(
        ops.transpose(mask, (0, 2, 1, 3, 4)),
        (cache_batch, heads, repeats * length, key_length),
    )


def unfold_shared_rows(query_batch, query_length, output, weights=None):
    """Undoes `fold_shared_rows` on the attention's results.

    Args:
        query_batch: int or scalar int tensor `r C`, the unfolded batch size.
        query_length: int or scalar int tensor `T`, the unfolded query
            length (an int keeps the output's static shape).
        output: `(C, r T, dim)`.
        weights: optional attention weights `(C, num_heads, r T, S)`.

    Returns:
        `(output, weights)`: `(r C, T, dim)` and `(r C, num_heads, T, S)`
        (or `None`).
    """
    cache_batch, length = ops.shape(output)[0], query_length
    repeats = query_batch // cache_batch
    output = ops.reshape(output, (query_batch, length, output.shape[-1]))
    if weights is not None:
        heads, key_length = weights.shape[1], ops.shape(weights)[-1]
        weights = ops.reshape(weights, (cache_batch, heads, repeats, length, -1))
        weights = ops.reshape(
            ops.transpose(weights, (0, 2, 1, 3, 4)),
            (query_batch, heads, length, key_length),
        )
    return output, weights
