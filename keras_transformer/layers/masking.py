"""Attention-mask helpers shared by the attention, block and model layers.

All masks here are boolean with Keras's convention: `True` means "may attend".
They broadcast against attention scores of shape
`(batch_size, num_heads, query_length, key_length)`.

Precedence: every mask that is given is combined with a logical AND, so an
explicit `attention_mask`, padding masks and the causal mask all apply at once.
"""

from keras import ops


def padding_mask(token_ids, pad_id=0):
    """Boolean mask, `True` where `token_ids != pad_id`.

    Args:
        token_ids: int tensor of shape `(batch_size, length)`.
        pad_id: int, the padding id.

    Returns:
        bool tensor of shape `(batch_size, length)`.
    """
    return ops.not_equal(token_ids, pad_id)


def causal_mask(query_length, key_length, query_offset=0):
    """Lower-triangular mask: query `i` may attend to keys `j <= i + offset`.

    Args:
        query_length: int or scalar tensor, number of query positions.
        key_length: int or scalar tensor, number of key positions.
        query_offset: int or scalar tensor, the absolute position of the first
            query (the cache index during incremental decoding).

    Returns:
        bool tensor of shape `(1, 1, query_length, key_length)`.
    """
    query_positions = ops.arange(query_length, dtype="int32") + ops.cast(
        query_offset, "int32"
    )
    key_positions = ops.arange(key_length, dtype="int32")
    mask = ops.less_equal(key_positions[None, :], query_positions[:, None])
    return mask[None, None, :, :]


def merge_masks(
    attention_mask=None,
    query_mask=None,
    key_mask=None,
    causal=None,
):
    """AND-combines the given masks into one broadcastable 4-D mask.

    Args:
        attention_mask: optional bool/int tensor of shape
            `(batch_size, query_length, key_length)` or
            `(batch_size, num_heads_or_1, query_length, key_length)`.
        query_mask: optional `(batch_size, query_length)` padding mask of the
            queries.
        key_mask: optional `(batch_size, key_length)` padding mask of the keys.
        causal: optional mask from `causal_mask`.

    Returns:
        A bool tensor broadcastable to
        `(batch_size, num_heads, query_length, key_length)`, or `None` when no
        mask was given.
    """
    masks = []
    if attention_mask is not None:
        attention_mask = ops.cast(attention_mask, "bool")
        if len(attention_mask.shape) == 3:
            attention_mask = attention_mask[:, None, :, :]
        masks.append(attention_mask)
    if query_mask is not None:
        masks.append(ops.cast(query_mask, "bool")[:, None, :, None])
    if key_mask is not None:
        masks.append(ops.cast(key_mask, "bool")[:, None, None, :])
    if causal is not None:
        masks.append(causal)
    if not masks:
        return None
    mask = masks[0]
    for other in masks[1:]:
        mask = ops.logical_and(mask, other)
    return mask
