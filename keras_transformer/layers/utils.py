"""Small helpers shared by the layers."""

import keras
from keras import ops

from keras_transformer.utils import cpu_tuned_paths
from keras_transformer.utils import in_xla_context


def clone_initializer(initializer):
    """A fresh copy of `initializer`, so sub-layers don't share seeds/state."""
    initializer = keras.initializers.get(initializer)
    return initializer.__class__.from_config(initializer.get_config())


def apply_to_real_positions(function, inputs, padding_mask, output_dim):
    """`where(padding_mask, function(inputs), 0)`, computing only real rows.

    For a position-wise `function` (each `(d_in,)` row maps to a
    `(output_dim,)` row on its own, as in the feed-forward network), the
    rows at padded positions are wasted work (in a batch of sentences padded
    to the longest, they can be many). Here they are not computed where the
    shapes allow, and are zero in the result on every path:

    - TensorFlow, not compiled with XLA (eagerly, in graphs, in a SavedModel):
      only the `n_real` real rows are gathered, passed through `function` and
      scattered back (a dynamic shape).
    - Under XLA (and other backends), shapes must be static: the rows are
      reordered real-first (a stable partition) and cut into up to 8 chunks
      of at least `_MIN_CHUNK_ROWS` rows; a chunk with no real row is a
      branch of an `ops.cond` that is not taken. The padded rows of the last
      real chunk are computed and then zeroed.
    - With at most `_MIN_CHUNK_ROWS` rows, a row count only known at run
      time under XLA, or on a GPU or TPU (`keras_transformer.utils.
      cpu_tuned_paths()`), every row is computed and the padded ones zeroed.

    Real rows are computed by the same `function` on every path, so their
    values match the plain `function(inputs)` up to float rounding (a
    matmul over fewer rows may sum in a different order).

    Args:
        function: maps `(n, d_in)` to `(n, output_dim)` row by row; it may
            hold dropout (each call draws new masks).
        inputs: `(..., d_in)`.
        padding_mask: bool, `inputs`' shape without the last axis; `True` for
            real positions.
        output_dim: int, the last dimension of `function`'s output.

    Returns:
        `(..., output_dim)`, zero where `padding_mask` is `False`.
    """
    mask_shape, rows_shape = tuple(padding_mask.shape), tuple(inputs.shape[:-1])
    if len(mask_shape) != len(rows_shape) or any(
        m is not None and r is not None and m != r
        for m, r in zip(mask_shape, rows_shape, strict=False)
    ):
        raise ValueError(
            "`padding_mask` must have the inputs' shape without the last axis, "
            f"{rows_shape}. Received: padding_mask.shape={mask_shape}"
        )
    out_shape = tuple(ops.shape(inputs)[:-1]) + (output_dim,)
    rows = ops.reshape(inputs, (-1, inputs.shape[-1]))  # (N, d_in)
    real = ops.reshape(ops.cast(padding_mask, "bool"), (-1,))  # (N,)
    num_rows = rows.shape[0]
    # On GPUs and TPUs every row is computed (the dense path); skipping rows
    # is a CPU speed choice (`cpu_tuned_paths`) and gives the same values.
    small = num_rows is not None and num_rows <= _MIN_CHUNK_ROWS
    dense = small or not cpu_tuned_paths()
    if not dense and keras.backend.backend() == "tensorflow" and not in_xla_context():
        index = ops.cast(ops.nonzero(real)[0], "int32")  # (n_real,)
        outputs = function(ops.take(rows, index, axis=0))  # (n_real, output_dim)
        outputs = ops.scatter(index[:, None], outputs, (ops.shape(rows)[0], output_dim))
    elif dense or num_rows is None:
        outputs = ops.where(real[:, None], function(rows), 0)  # (N, output_dim)
    else:
        outputs = _real_rows_in_chunks(function, rows, real)  # (N, output_dim)
    return ops.reshape(outputs, out_shape)


def real_first_order(real):
    """The stable partition that puts the real rows first.

    Args:
        real: bool `(N,)`, `True` for real rows.

    Returns:
        `(order, destination, num_real)`: int `(N,)` `order` (the row that
        goes to each slot: real rows first, each group in its input order),
        its inverse `destination` (the slot of each row) and the scalar
        number of real rows.
    """
    real_int = ops.cast(real, "int32")
    num_real = ops.sum(real_int)
    # Real row i goes to slot (real rows before it), padded row i after all
    # real rows; `destination` is a permutation of 0..N-1.
    destination = ops.where(
        real, ops.cumsum(real_int) - 1, num_real + ops.cumsum(1 - real_int) - 1
    )
    order = ops.argsort(destination)
    return order, destination, num_real


def _real_rows_in_chunks(function, rows, real):
    """`apply_to_real_positions` with static shapes: (N, d_in) -> (N, d_out).

    The rows are reordered real-first and cut into chunks; the first chunk is
    always computed (it sets the output dtype), a later one only when it
    holds a real row.
    """
    num_rows = rows.shape[0]
    chunk = max(_MIN_CHUNK_ROWS, -(-num_rows // _MAX_CHUNKS))
    num_chunks = -(-num_rows // chunk)
    order, destination, num_real = real_first_order(real)
    ordered = ops.take(rows, order, axis=0)  # (N, d_in), real rows first
    ordered = ops.pad(ordered, [(0, num_chunks * chunk - num_rows), (0, 0)])
    first = function(ordered[:chunk])  # (chunk, d_out)
    pieces = [first]
    for start in range(chunk, num_chunks * chunk, chunk):
        piece = ordered[start : start + chunk]  # (chunk, d_in)
        pieces.append(
            ops.cond(
                start < num_real,
                lambda piece=piece: function(piece),
                lambda: ops.zeros_like(first),
            )
        )
    outputs = ops.concatenate(pieces, axis=0)[:num_rows]  # (N, d_out)
    outputs = ops.take(outputs, destination, axis=0)  # the input order again
    return ops.where(real[:, None], outputs, 0)


# A chunk of `apply_to_real_positions` under XLA: at least this many rows
# (smaller matmuls lose efficiency), and at most this many chunks per call.
_MIN_CHUNK_ROWS = 512
_MAX_CHUNKS = 8
