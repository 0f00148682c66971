"""Relative position representations of self-attention (Shaw et al., 2018).

Each clipped distance `key - query` in `-k..k` has a learned vector for the
keys (`a^K`) and one for the values (`a^V`), shared by the heads. They enter
attention as

- `e_ij = q_i . (k_j + a^K_ij) / sqrt(d_k)` (the scores, eq. 4), and
- `z_i = sum_j alpha_ij (v_j + a^V_ij)` (the context, eq. 3),

so the functions here compute the two extra terms: `relative_scores` gives
`q_i . a^K_ij` and `relative_context` gives `sum_j alpha_ij a^V_ij`. The
embedding tables are weights of the attention layer; these functions only
read them.

Example:

>>> import numpy as np
>>> index = relative_position_indices(3, 3, max_relative_position=1)
>>> np.asarray(index).tolist()
[[1, 2, 2], [0, 1, 2], [0, 0, 1]]

References:
    - [Shaw et al., 2018](https://arxiv.org/abs/1803.02155), eqs. 3-4.
"""

from keras import ops


def relative_position_indices(
    query_length, key_length, max_relative_position, offset=0
):
    """Clipped distances `key - query`, as indices into a relative table.

    Args:
        query_length: int or scalar int tensor, the number of queries `T`.
        key_length: int or scalar int tensor, the number of keys `S`.
        max_relative_position: int `k`, the largest distance told apart;
            longer ones are clipped to `-k` or `k`.
        offset: int or scalar int tensor, the position of the first query
            (the cache index during incremental decoding); key `j` is at
            position `j`.

    Returns:
        int32 `(T, S)`: `clip(j - (i + offset), -k, k) + k`, in `0..2k`.
    """
    query_positions = ops.arange(query_length, dtype="int32") + ops.cast(
        offset, "int32"
    )
    distance = ops.arange(key_length, dtype="int32")[None, :] - query_positions[:, None]
    k = max_relative_position
    return ops.clip(distance, -k, k) + k


def relative_scores(query, key_embeddings, indices):
    """The relative term of the attention scores, `q_i . a^K_ij`.

    Args:
        query: `(batch_size, T, num_heads, key_dim)`, already scaled by
            `1 / sqrt(key_dim)` when the result is added to scaled scores.
        key_embeddings: `(2k + 1, key_dim)`, the table `a^K`; cast to the
            dtype of `query`.
        indices: int `(T, S)`, from `relative_position_indices`.

    Returns:
        `(batch_size, num_heads, T, S)` in the dtype of `query`.
    """
    relative_keys = ops.take(
        ops.cast(key_embeddings, query.dtype), indices, axis=0
    )  # (T, S, dk)
    return ops.einsum("bthd,tsd->bhts", query, relative_keys)


def relative_context(weights, value_embeddings, indices):
    """The relative term of the attention context, `sum_j alpha_ij a^V_ij`.

    Args:
        weights: attention weights `(batch_size, num_heads, T, S)`.
        value_embeddings: `(2k + 1, value_dim)`, the table `a^V`; cast to the
            dtype of `weights`.
        indices: int `(T, S)`, from `relative_position_indices`.

    Returns:
        `(batch_size, T, num_heads, value_dim)` in the dtype of `weights`.
    """
    relative_values = ops.take(
        ops.cast(value_embeddings, weights.dtype), indices, axis=0
    )  # (T, S, dv)
    return ops.einsum("bhts,tsd->bthd", weights, relative_values)
