"""Pieces shared by greedy and beam search."""

from keras import ops


def start_state(model, source_ids, max_length, batch_size, beam_size=1):
    """Encodes once and prepares the decoding state.

    With `beam_size > 1`, the self-attention caches and the tokens have one
    row per beam (beams of one sentence are adjacent), while the encoder
    output, its cross-attention keys/values and the source mask keep one row
    per sentence: the beams of a sentence share them (see
    `Transformer.init_cache`), so the keys/values are projected and stored
    once per sentence, not once per beam.

    Returns:
        dict with `"tokens"` int32 `(batch_size * beam_size, max_length + 1)`
        (BOS, then padding), `"cache"` (see `Transformer.init_cache`) and
        `"source_mask"` bool `(batch_size, source_length)`.
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
    cache = model.init_cache(encoder_outputs, max_length, beam_size=beam_size)
    return {"tokens": tokens, "cache": cache, "source_mask": source_mask}


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
    banned = ops.logical_or(ops.equal(ids, model.pad_id), ops.equal(ids, model.bos_id))
    return ops.where(banned[None, :], -1e9, log_probs)
