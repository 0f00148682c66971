"""Pieces shared by greedy and beam search."""

from keras import ops


def start_state(
    model, source_ids, max_length, batch_size, beam_size=1, cache_dtype=None
):
    """Encodes once and prepares the decoding state.

    With `beam_size > 1`, the tokens have one row per beam (beams of one
    sentence are adjacent) and the self-attention caches are beam caches
    read through `cache["ancestry"]`, while the encoder output, its
    cross-attention keys/values and the source mask keep one row per
    sentence: the beams of a sentence share them (see
    `Transformer.init_cache`), so the keys/values are projected and stored
    once per sentence, not once per beam.

    Args:
        model: a `keras_transformer.Transformer`.
        source_ids: int `(batch_size, source_length)`.
        max_length: int, the most tokens to generate.
        batch_size: int or scalar int tensor, `source_ids`' rows.
        beam_size: int, hypotheses per sentence.
        cache_dtype: float dtype of the key/value caches, or `None` (the
            model's compute dtype; `model.init_cache` is then called
            without `dtype`, so a model whose `init_cache` takes no
            `dtype` still decodes).

    Returns:
        dict with `"tokens"` int32 `(batch_size * beam_size, max_length + 1)`
        (BOS, then padding), `"cache"` (see `Transformer.init_cache`),
        `"source_mask"` bool `(batch_size, source_length)` and
        `"output_projection"` `(d_model, vocabulary)`, which the search
        carries through its loop unchanged (see
        `TokenEmbedding.output_projection`).
    """
    source_ids = ops.cast(source_ids, "int32")
    encoder_outputs = model.encode(source_ids, training=False)
    source_mask = ops.not_equal(source_ids, model.pad_id)
    rows = batch_size * beam_size
    tokens = ops.concatenate(
        [
            ops.full((rows, 1), model.bos_id, "int32"),
            ops.full((rows, max_length), model.pad_id, "int32"),
        ],
        axis=1,
    )
    dtype = {} if cache_dtype is None else {"dtype": cache_dtype}
    cache = model.init_cache(encoder_outputs, max_length, beam_size=beam_size, **dtype)
    return {
        "tokens": tokens,
        "cache": cache,
        "source_mask": source_mask,
        "output_projection": model.target_embedding.output_projection(),
    }


def gather_beams(values, indices):
    """Gathers hypotheses along the beam axis.

    One gather of whole rows: `values` is read as `batch_size * beams` rows
    and row `b * beams + indices[b, j]` is taken for `[b, j]`, so nothing
    is transposed or broadcast (as `ops.take_along_axis` would) and only
    the `k` taken rows are copied.

    Args:
        values: `(batch_size, beams, ...)`, `beams` known when traced.
        indices: int `(batch_size, k)`, beams of `values`.

    Returns:
        `(batch_size, k, ...)`: `values[b, indices[b, j]]` at `[b, j]`.
    """
    batch_size, beams = ops.shape(values)[0], values.shape[1]
    trailing = tuple(ops.shape(values)[2:])
    rows = ops.arange(batch_size, dtype="int32")[:, None] * beams + ops.cast(
        indices, "int32"
    )  # (B, k)
    taken = ops.take(
        ops.reshape(values, (-1,) + trailing), ops.reshape(rows, (-1,)), axis=0
    )
    return ops.reshape(taken, (batch_size, indices.shape[1] or -1) + trailing)


def cross_attention_weights(decoder_scores):
    """Last decoder block's encoder-decoder weights, mean over heads.

    Args:
        decoder_scores: the per-block list returned by the decoder with
            `return_attention_scores=True`.

    Returns:
        float32 `(batch, query_length, source_length)`.
    """
    return ops.mean(decoder_scores[-1]["cross_attention"], axis=1)


def length_penalty(length, alpha):
    """GNMT length penalty `((5 + length) / 6) ** alpha` (Wu et al., 2016)."""
    return ops.power((5.0 + ops.cast(length, "float32")) / 6.0, alpha)


def next_token_log_probs(model, logits):
    """float32 log-probabilities of the next token; PAD and BOS never win.

    Args:
        model: the `Transformer` (for its special ids).
        logits: `(batch, vocabulary)`.

    Returns:
        `(batch, vocabulary)` log-softmax with PAD and BOS set to -1e9.
    """
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    ids = ops.arange(ops.shape(log_probs)[-1], dtype="int32")
    banned = _is_banned(ids, (model.pad_id, model.bos_id))
    return ops.where(banned[None, :], -1e9, log_probs)


def _is_banned(ids, banned_ids):
    """bool, the shape of int32 `ids`: which of them are in `banned_ids`."""
    banned = ops.zeros(ops.shape(ids), "bool")
    for banned_id in banned_ids:
        banned = ops.logical_or(banned, ops.equal(ids, banned_id))
    return banned


def first_argmax(values):
    """Index of the first maximum along the last axis, int32.

    Same result as `ops.argmax` (ties go to the lowest index), computed as a
    max, then the smallest index holding it: two plain reductions that XLA
    vectorizes, where its `argmax` is a variadic value/index reduction that
    XLA's CPU backend runs more slowly (see `benchmarks/README.md`).

    Args:
        values: float `(..., n)`, no NaN.

    Returns:
        int32 `(...)`.
    """
    n = ops.shape(values)[-1]
    largest = ops.max(values, axis=-1, keepdims=True)
    indices = ops.arange(n, dtype="int32")
    return ops.min(ops.where(ops.equal(values, largest), indices, n), axis=-1)


# Block size of `top_k`'s first stage, and the padding value of its last block.
_TOP_K_BLOCK = 128
_LOWEST_FLOAT32 = -3.4028234e38


def top_k(values, k):
    """The `k` largest values along the last axis and their indices.

    Same result as `ops.top_k(values, k)` (sorted, ties to the lowest
    index), in two stages when the axis is long: the maximum of each block
    of 128 values; the `k` blocks with the largest maxima (every one of the
    `k` largest values lies in one of them: a value outside them is beaten
    by those `k` block maxima); then the top `k` of those `k * 128`
    candidates, kept in index order so ties still go to the lowest index.
    XLA's CPU TopK sorts every value; the blocks let it sort only the
    `k * 128` candidates (see `benchmarks/README.md`). `best_extensions` is
    built on the same blocks.

    Args:
        values: float32 `(batch, n)`, no NaN.
        k: int, `k <= n`.

    Returns:
        `(values (batch, k), int32 indices (batch, k))`.
    """
    n = values.shape[-1]
    if n is None or n < 4 * k * _TOP_K_BLOCK:
        top_values, top_indices = ops.top_k(values, k)
        return top_values, ops.cast(top_indices, "int32")
    blocked = _blocks(values[:, None, :])  # (batch, blocks, 128)
    return _top_k_of_blocks(blocked, ops.max(blocked, axis=-1), k)


def best_extensions(logits, log_probs, k, banned_ids=()):
    """The `k` best one-token extensions of each sentence's hypotheses.

    Extension `(r, v)` of sentence `b` scores
    `log_probs[b, r] + log_softmax(logits[b, r])[v]`; token ids in
    `banned_ids` never win. Returns the `k` best over all `(r, v)` of each
    sentence, ordered as `ops.top_k` orders the flattened
    `(hypotheses x vocabulary)` scores (ties to the lowest `r`, then `v`).

    Same extensions as `top_k` over the materialized scores (up to float32
    rounding: `logits + (log_probs - logsumexp)` is summed in another
    order), without materializing them, in two passes over the logits:

    1. the maximum of each block of 128 raw logits (their maximum is the
       row maximum the log-sum-exp needs);
    2. the log-sum-exp, giving each hypothesis's offset
       `log_probs - logsumexp`;

    then the blocks are ranked by maximum + offset, and only the best
    blocks' scores are formed, banned ids masked there. A block holding a
    banned id may rank too high (its maximum may be that id), so
    `k + hypotheses x (blocks holding banned ids)` blocks are kept: at least
    `k` of them rank by a true maximum, which is the `top_k` argument. The
    materialized path would write and read several more
    `(batch x hypotheses, vocabulary)` arrays per step; this one reads the
    logits twice and forms scores only for the kept blocks (see
    `benchmarks/README.md`). Short vocabularies take the materialized path.

    Args:
        logits: finite float `(batch, hypotheses, vocabulary)`, the
            vocabulary size known when traced.
        log_probs: float32 `(batch, hypotheses)`, the hypotheses' scores.
        k: int, `k <= hypotheses * (vocabulary - len(banned_ids))`.
        banned_ids: ints in `[0, vocabulary)`, token ids never chosen.

    Returns:
        `(scores, hypotheses, tokens)`: float32 `(batch, k)` (sorted,
        best first), int32 `(batch, k)`, int32 `(batch, k)`.
    """
    logits = ops.cast(logits, "float32")
    hypotheses, vocabulary = logits.shape[1], logits.shape[2]
    banned_blocks = {int(i) // _TOP_K_BLOCK for i in banned_ids}
    kept = k + hypotheses * len(banned_blocks)
    if vocabulary < 4 * kept * _TOP_K_BLOCK:
        banned = _is_banned(ops.arange(vocabulary, dtype="int32"), banned_ids)
        # Banned words score -1e9 + log_probs (chosen only when a sentence
        # has fewer than k other extensions).
        next_log_probs = ops.where(
            banned, -1e9, logits - ops.logsumexp(logits, axis=-1)[:, :, None]
        )
        scores = log_probs[:, :, None] + next_log_probs
        top, index = top_k(ops.reshape(scores, (ops.shape(scores)[0], -1)), k)
        return top, index // vocabulary, index % vocabulary
    batch_size = ops.shape(logits)[0]
    blocked = _blocks(logits)  # (B, R * blocks, 128)
    blocks = blocked.shape[1] // hypotheses  # per hypothesis
    block_max = ops.max(blocked, axis=-1)  # (B, R * blocks)
    row_max = ops.max(ops.reshape(block_max, (batch_size, hypotheses, blocks)), -1)
    log_sum_exp = row_max + ops.log(
        ops.sum(ops.exp(logits - row_max[:, :, None]), axis=-1)
    )
    block_offsets = ops.repeat(log_probs - log_sum_exp, blocks, axis=1)
    width = blocks * _TOP_K_BLOCK  # the padded vocabulary
    token_ids = ops.reshape(ops.arange(width, dtype="int32"), (blocks, -1))
    banned = _is_banned(token_ids, banned_ids)
    top, index = _top_k_of_blocks(
        blocked, block_max + block_offsets, k, kept, block_offsets, banned
    )
    return top, index // width, index % width


def _blocks(values):
    """`(batch, rows, n)` -> `(batch, rows * blocks, 128)`, each row padded
    with the lowest float32 to whole blocks (a value never chosen)."""
    batch_size, rows, n = ops.shape(values)[0], values.shape[1], values.shape[2]
    blocks = -(-n // _TOP_K_BLOCK)
    if blocks * _TOP_K_BLOCK != n:
        values = ops.pad(
            values,
            [(0, 0), (0, 0), (0, blocks * _TOP_K_BLOCK - n)],
            constant_values=_LOWEST_FLOAT32,
        )
    return ops.reshape(values, (batch_size, rows * blocks, _TOP_K_BLOCK))


def _top_k_of_blocks(
    blocked, block_scores, k, kept=None, block_offsets=None, banned=None
):
    """Top `k` of `blocked + block_offsets[..., None]` `(batch, blocks, 128)`.

    Keeps the `kept` (default `k`) blocks with the best `block_scores`
    `(batch, blocks)`, masks `banned` `(blocks per row, 128)` bool there,
    and returns values and int32 flat indices (block * 128 + position).
    """
    batch_size = ops.shape(blocked)[0]
    kept = kept or k
    _, best_blocks = ops.top_k(block_scores, kept)  # (batch, kept)
    best_blocks = ops.sort(ops.cast(best_blocks, "int32"), axis=-1)
    candidates = gather_beams(blocked, best_blocks)  # (batch, kept, 128)
    if block_offsets is not None:
        offsets = gather_beams(block_offsets, best_blocks)
        candidates = candidates + offsets[:, :, None]
    if banned is not None:
        is_banned = ops.take(banned, best_blocks % banned.shape[0], axis=0)
        candidates = ops.where(is_banned, _LOWEST_FLOAT32, candidates)
    top_values, position = ops.top_k(
        ops.reshape(candidates, (batch_size, kept * _TOP_K_BLOCK)), k
    )
    position = ops.cast(position, "int32")
    block = gather_beams(best_blocks, position // _TOP_K_BLOCK)
    return top_values, block * _TOP_K_BLOCK + position % _TOP_K_BLOCK
