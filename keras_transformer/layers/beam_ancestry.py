"""Attention over a beam cache, read through each hypothesis' ancestry.

Beam search keeps `R` hypotheses (beams) per sentence and reorders them after
every step. A beam cache (`MultiHeadAttention.init_cache(groups, max_length,
beam_size=R)`, buffers `(groups, num_key_value_heads, max_length * R, d)`,
position `s` of beam `j` at slot `s * R + j`, see `attention_cache`) never
moves. Instead an **ancestry** `(groups, R, max_length)` says, for each
query row `c * R + r` and position `s`, which beam of group `c` holds that
position's key/value. Reordering hypotheses reorders the ancestry's rows,
not the buffers.

Each row's queries are scored against all `R` beams' keys in one matmul per
group and key/value head (the cache is read as stored), and only the
ancestor's score is kept at each position (`ancestry_scores`); the weights
are spread back onto the ancestors' slots for the values
(`ancestry_context`). This does `R` times the attention arithmetic but never
copies the cache; which of the two is cheaper depends on the device (see
`benchmarks/README.md`).

Outside XLA, where shapes may change from step to step, `own_history`
instead gathers each row's own written keys/values, and plain attention
reads them.

Example:

>>> import numpy as np
>>> ancestry = np.array([[[0, 1], [0, 0]]])  # 1 group, 2 beams, 2 positions
>>> one_hot = ancestry_one_hot(ancestry, "float32")  # (C, L, R source, R row)
>>> np.asarray(one_hot)[0, 1].tolist()  # position 1: row 0 <- 1, row 1 <- 0
[[0.0, 1.0], [1.0, 0.0]]
"""

from keras import ops


def check_ancestry(cache_ancestry, cache_slots):
    """Checks the shape of `cache_ancestry` against a beam cache's slots.

    Args:
        cache_ancestry: int `(groups, R, max_length)`, `R` known statically.
        cache_slots: int or `None`, the slot count `max_length * R` of the
            cache's buffers.

    Returns:
        The beam size `R`, a Python int.
    """
    shape = tuple(cache_ancestry.shape)
    known = len(shape) == 3 and None not in (shape[2], cache_slots)
    if (
        len(shape) != 3
        or shape[1] is None
        or (known and shape[1] * shape[2] != cache_slots)
    ):
        raise ValueError(
            "`cache_ancestry` must have shape (batch_size, beam_size, "
            f"max_length) with a known beam_size and beam_size * max_length "
            f"= {cache_slots}, the slots of this cache. Received: shape={shape}"
        )
    return shape[1]


def ancestry_one_hot(cache_ancestry, dtype):
    """The ancestry as a one-hot selector of the beam holding each position.

    Args:
        cache_ancestry: int `(groups, R, L)`: entry `[c, r, s]` is the beam
            of group `c` whose slot holds position `s` for query row `r`.
        dtype: the float dtype of the result (that of the attention dots).

    Returns:
        `(groups, L, R, R)`: entry `[c, s, j, r]` is 1 where beam `j` holds
        position `s` for row `r` (`cache_ancestry[c, r, s] == j`), else 0.
    """
    beams = cache_ancestry.shape[1]
    beam_ids = ops.arange(beams, dtype="int32")[None, None, :, None]
    ancestry = ops.transpose(ops.cast(cache_ancestry, "int32"), (0, 2, 1))
    return ops.cast(ops.equal(ancestry[:, :, None, :], beam_ids), dtype)


def _dims(one_hot, num_heads, kv_heads):
    """`(groups C, positions L, beams R, query heads per kv head G)`."""
    shape = ops.shape(one_hot)
    return shape[0], shape[1], one_hot.shape[2], num_heads // kv_heads


def ancestry_scores(query, key_cache, one_hot):
    """Attention scores of queries over a beam cache, each row's own history.

    Every query row of a group is scored against the keys of all its
    group's beams: one `(L R) x (R T G)` matmul per group and key/value head,
    with the cache as the left operand, read as stored. At each position,
    the score against the beam the row descends from is kept.

    Args:
        query: `(groups * R, T, num_heads, key_dim)`, scaled as the scores
            should be; `num_heads` static and a multiple of the cache's
            heads (grouped-query attention shares each key/value head).
        key_cache: `(groups, num_key_value_heads, L * R, key_dim)`, the
            cache's `"key"` buffer, `num_key_value_heads` static.
        one_hot: `(groups, L, R, R)` from `ancestry_one_hot`, in the dtype
            of `query`.

    Returns:
        Scores `(groups * R, num_heads, T, L)` in the dtype of `query`.
    """
    heads, kv_heads = query.shape[2], key_cache.shape[1]
    groups, length, beams, per_kv = _dims(one_hot, heads, kv_heads)
    query_length = ops.shape(query)[1]
    q = ops.reshape(query, (groups, beams, query_length, kv_heads, per_kv, -1))
    q = ops.reshape(
        ops.transpose(q, (0, 3, 1, 2, 4, 5)),  # (C, Hkv, R, T, G, dk)
        (groups, kv_heads, beams * query_length * per_kv, -1),
    )
    scores = ops.einsum("ckxd,ckqd->ckxq", key_cache, q)  # (C, Hkv, L R, R T G)
    # Keep each row's beam: multiply by the one-hot (broadcast over at
    # most 4 dimensions, which TensorFlow's kernels need) and sum.
    tg = query_length * per_kv
    scores = ops.reshape(scores, (groups, kv_heads, length * beams * beams, tg))
    one_hot = ops.reshape(one_hot, (groups, 1, length * beams * beams, 1))
    scores = ops.reshape(scores * one_hot, (groups, kv_heads, length, beams, beams, tg))
    scores = ops.sum(scores, axis=3)  # (C, Hkv, L, R, T G)
    scores = ops.reshape(
        scores, (groups, kv_heads, length, beams, query_length, per_kv)
    )
    scores = ops.transpose(scores, (0, 3, 1, 5, 4, 2))  # (C, R, Hkv, G, T, L)
    return ops.reshape(scores, (groups * beams, heads, query_length, length))


def ancestry_context(weights, value_cache, one_hot):
    """The attention context of weights over a beam cache.

    Each weight is spread onto the slot of the beam holding that position
    for its row, then one `(R T G) x (L R)` matmul per group and key/value
    head reads the cache as stored.

    Args:
        weights: `(groups * R, num_heads, T, L)`, `num_heads` static.
        value_cache: `(groups, num_key_value_heads, L * R, value_dim)`, the
            cache's `"value"` buffer, `num_key_value_heads` static.
        one_hot: `(groups, L, R, R)` from `ancestry_one_hot`, in the dtype
            of `weights`.

    Returns:
        `(groups * R, T, num_heads, value_dim)` in the dtype of `weights`.
    """
    heads, kv_heads = weights.shape[1], value_cache.shape[1]
    groups, length, beams, per_kv = _dims(one_hot, heads, kv_heads)
    query_length = ops.shape(weights)[2]
    tg = query_length * per_kv
    probs = ops.reshape(
        weights, (groups, beams, kv_heads, per_kv, query_length, length)
    )
    probs = ops.transpose(probs, (0, 1, 5, 2, 4, 3))  # (C, R, L, Hkv, T, G)
    # Spread each weight onto the slot of the beam holding that position.
    row_major = ops.transpose(one_hot, (0, 3, 1, 2))  # (C, row, L, source)
    probs = ops.reshape(
        probs, (groups, beams * length, kv_heads * tg, 1)
    ) * ops.reshape(row_major, (groups, beams * length, 1, beams))
    probs = ops.reshape(probs, (groups, beams, length, kv_heads, tg, beams))
    probs = ops.reshape(
        ops.transpose(probs, (0, 3, 1, 4, 2, 5)),  # (C, Hkv, R, T G, L, source)
        (groups, kv_heads, beams * tg, length * beams),
    )
    context = ops.einsum("ckqx,ckxd->ckqd", probs, value_cache)  # (C, Hkv, R T G, dv)
    context = ops.reshape(context, (groups, kv_heads, beams, query_length, per_kv, -1))
    context = ops.transpose(context, (0, 2, 3, 1, 4, 5))  # (C, R, T, Hkv, G, dv)
    value_dim = value_cache.shape[-1]
    return ops.reshape(context, (groups * beams, query_length, heads, value_dim))


def own_history(key_cache, value_cache, cache_ancestry, written):
    """Each query row's own keys/values of the written positions.

    For row `c R + r` and position `s < written`, the slot `s R +
    cache_ancestry[c, r, s]` of group `c`, gathered once for both buffers:
    a per-row cache that plain attention reads. It holds as many vectors
    as the written slots and needs no transposes, but its shape changes
    with `written`, so it is for code that XLA does not compile.

    Args:
        key_cache: `(groups, num_key_value_heads, max_length * R,
            key_dim)`, the beam cache's `"key"` buffer, the heads and
            `key_dim` static.
        value_cache: the `"value"` buffer, `(groups, num_key_value_heads,
            max_length * R, value_dim)`.
        cache_ancestry: int `(groups, R, max_length)`, `R` static.
        written: int or scalar int tensor, the positions written.

    Returns:
        `(keys, values)`: `(groups * R, num_key_value_heads, written,
        key_dim)` and `(groups * R, num_key_value_heads, written,
        value_dim)`.

    Example:

    >>> import numpy as np
    >>> keys = np.arange(4.0).reshape(1, 1, 4, 1)  # 2 positions x 2 beams
    >>> ancestry = np.array([[[0, 1], [1, 0]]])  # row 0: beams 0, 1
    >>> k, _ = own_history(keys, keys, ancestry, 2)
    >>> np.asarray(k)[:, 0, :, 0].tolist()  # slots 0, 3 and 1, 2
    [[0.0, 3.0], [1.0, 2.0]]
    """
    groups, heads = ops.shape(key_cache)[0], key_cache.shape[1]
    slots, beams = ops.shape(key_cache)[2], cache_ancestry.shape[1]
    written = ops.cast(written, "int32")
    ancestry = ops.cast(cache_ancestry[:, :, :written], "int32")
    slot = ops.arange(written, dtype="int32")[None, None, :] * beams + ancestry
    first_slot = ops.arange(groups * heads, dtype="int32") * slots  # (C Hkv,)
    rows = ops.reshape(first_slot, (groups, 1, heads, 1)) + slot[:, :, None, :]
    rows = ops.reshape(rows, (-1,))  # (C, R, Hkv, t) flattened
    gathered = []
    for cache in (key_cache, value_cache):
        depth = cache.shape[-1]
        taken = ops.take(ops.reshape(cache, (-1, depth)), rows, axis=0)
        gathered.append(ops.reshape(taken, (-1, heads, written, depth)))
    return tuple(gathered)
