"""Beam search with alive/finished hypotheses and the GNMT length penalty."""

from keras import ops

from keras_transformer.decoding.utils import best_extensions
from keras_transformer.decoding.utils import cross_attention_weights
from keras_transformer.decoding.utils import length_penalty
from keras_transformer.decoding.utils import start_state
from keras_transformer.utils import dynamic_update

# Score of impossible hypotheses (dead beams, empty finished slots). A large
# finite number, so no arithmetic on it produces NaN.
_NEG = -1e9


def _gather_beams(values, indices):
    """`values` `(B, K, ...)` gathered along the beam axis by `(B, K')`."""
    expand = indices
    for _ in range(len(values.shape) - 2):
        expand = expand[..., None]
    return ops.take_along_axis(values, expand, axis=1)


def beam_search(
    model,
    source_ids,
    max_length,
    beam_size=4,
    alpha=0.6,
    num_return_sequences=1,
    return_attention=False,
    cache_dtype=None,
):
    """Beam search (Vaswani et al., 2017, section 6.1; Wu et al., 2016).

    Keeps `beam_size` alive hypotheses and `beam_size` finished ones per
    sentence. Each step extends every alive hypothesis by every token,
    keeps the `2 * beam_size` best extensions, moves those ending in EOS to
    the finished set (scored `log P / ((5 + length) / 6) ** alpha`), and
    keeps the best `beam_size` others alive. A sentence is done when its
    `num_return_sequences` best finished hypotheses score at least as well
    as any alive hypothesis could (its log-probability can only fall); the
    loop ends when every sentence is done or after `max_length` tokens. The
    self-attention keys/values never move: each hypothesis carries its
    ancestry (which beam's slots hold each of its positions), and only that
    small table is reordered (see `MultiHeadAttention`'s beam cache); the
    encoder and its cross-attention keys/values are computed and stored once
    per sentence and shared by its beams. The `2 * beam_size` best of the
    `beam_size x vocabulary` extensions come from a two-stage top-k over
    the raw logits (`decoding.utils.best_extensions`).

    Args:
        model: a `keras_transformer.Transformer`.
        source_ids: int `(batch_size, source_length)`.
        max_length: int, the most tokens to generate (EOS included).
        beam_size: int.
        alpha: float, length penalty exponent (0.6 in the paper).
        num_return_sequences: int, the n best hypotheses to return.
        return_attention: bool, also return the last decoder block's
            encoder-decoder attention (mean over heads) of each hypothesis.
        cache_dtype: float dtype of the key/value caches. Defaults to the
            model's compute dtype.

    Returns:
        dict with `"ids"` int32 `(batch_size, n, max_length)`, `"scores"`
        float32 `(batch_size, n)` (length-penalized log-probabilities) and,
        if asked, `"attention"` `(batch_size, n, max_length, source_length)`.
    """
    K, n = beam_size, num_return_sequences
    batch_size = ops.shape(source_ids)[0]
    source_length = ops.shape(source_ids)[1]
    vocabulary = model.output_vocabulary_size
    state = start_state(
        model, source_ids, max_length, batch_size, K, cache_dtype=cache_dtype
    )
    alive_seq = ops.reshape(state["tokens"], (batch_size, K, max_length + 1))
    # Only the first beam is live at the start, so the K beams differ.
    alive_log_probs = ops.tile(
        ops.convert_to_tensor([[0.0] + [_NEG] * (K - 1)], "float32"), (batch_size, 1)
    )
    finished_seq = ops.zeros_like(alive_seq)
    finished_scores = ops.full((batch_size, K), _NEG, "float32")
    finished_flags = ops.zeros((batch_size, K), "bool")
    attention_shape = (batch_size, K, max_length, source_length)
    alive_attention = ops.zeros(attention_shape if return_attention else (), "float32")
    finished_attention = ops.zeros_like(alive_attention)
    final_penalty = length_penalty(max_length, alpha)

    def cond(index, alive_seq, alive_log_probs, cache, fin_seq, fin_scores, *rest):
        fin_flags = rest[0]
        # Best score any alive hypothesis can still reach.
        bound = alive_log_probs[:, 0] / ops.maximum(
            final_penalty, length_penalty(index, alpha)
        )
        done = ops.logical_and(fin_flags[:, n - 1], fin_scores[:, n - 1] >= bound)
        return ops.logical_and(index < max_length, ops.logical_not(ops.all(done)))

    def body(
        index,
        alive_seq,
        alive_log_probs,
        cache,
        fin_seq,
        fin_scores,
        fin_flags,
        alive_attention,
        fin_attention,
        projection,
    ):
        ids = ops.reshape(
            ops.slice(alive_seq, (0, 0, index), (batch_size, K, 1)),
            (batch_size * K, 1),
        )
        logits, weights, cache = model.decode(
            ids,
            None,
            source_padding_mask=state["source_mask"],
            cache=cache,
            cache_index=index,
            return_attention_scores=True,
            output_projection=projection,
        )
        # The 2K best extensions (B, 2K): score, beam, token; PAD and BOS
        # never win.
        top_log_probs, top_beams, top_tokens = best_extensions(
            ops.reshape(logits[:, 0], (batch_size, K, vocabulary)),
            alive_log_probs,
            2 * K,
            banned_ids=(model.pad_id, model.bos_id),
        )
        top_seq = _gather_beams(alive_seq, top_beams)  # (B, 2K, L + 1)
        top_seq = dynamic_update(top_seq, top_tokens[:, :, None], index + 1, axis=2)
        top_is_eos = ops.equal(top_tokens, model.eos_id)
        top_scores = top_log_probs / length_penalty(index + 1, alpha)
        if return_attention:
            step = ops.reshape(
                cross_attention_weights(weights), (batch_size, K, source_length)
            )
            top_attention = _gather_beams(alive_attention, top_beams)
            top_attention = dynamic_update(
                top_attention, _gather_beams(step, top_beams)[:, :, None], index, axis=2
            )

        # Alive: the K best extensions that did not end.
        alive_log_probs, keep = ops.top_k(ops.where(top_is_eos, _NEG, top_log_probs), K)
        alive_seq = _gather_beams(top_seq, keep)
        parent = _gather_beams(top_beams, keep)  # (B, K) beam each came from
        if "ancestry" in cache:
            # Beam caches never move: each hypothesis takes its parent's
            # ancestry (which beam's slots hold each of its positions).
            cache = dict(cache)
            cache["ancestry"] = _gather_beams(cache["ancestry"], parent)
        elif K > 1:
            # Caches with one row per beam (a model whose `init_cache` has
            # no beam caches): every self-attention buffer follows its beam.
            rows = ops.reshape(
                ops.arange(batch_size, dtype="int32")[:, None] * K
                + ops.cast(parent, "int32"),
                (-1,),
            )
            cache = dict(cache)
            cache["self"] = [
                {name: ops.take(buffer, rows, axis=0) for name, buffer in c.items()}
                for c in cache["self"]
            ]
        if return_attention:
            alive_attention = _gather_beams(top_attention, keep)

        # Finished: the K best of the old finished and the new EOS endings.
        merged_scores = ops.concatenate(
            [fin_scores, ops.where(top_is_eos, top_scores, _NEG)], axis=1
        )
        fin_scores, pick = ops.top_k(merged_scores, K)
        fin_seq = _gather_beams(ops.concatenate([fin_seq, top_seq], axis=1), pick)
        fin_flags = _gather_beams(
            ops.concatenate([fin_flags, top_is_eos], axis=1), pick
        )
        if return_attention:
            fin_attention = _gather_beams(
                ops.concatenate([fin_attention, top_attention], axis=1), pick
            )
        return (
            index + 1,
            alive_seq,
            alive_log_probs,
            cache,
            fin_seq,
            fin_scores,
            fin_flags,
            alive_attention,
            fin_attention,
            projection,
        )

    loop_vars = (
        ops.zeros((), "int32"),
        alive_seq,
        alive_log_probs,
        state["cache"],
        finished_seq,
        finished_scores,
        finished_flags,
        alive_attention,
        finished_attention,
        state["output_projection"],
    )
    (
        _,
        alive_seq,
        alive_log_probs,
        _,
        finished_seq,
        finished_scores,
        finished_flags,
        alive_attention,
        finished_attention,
        _,
    ) = ops.while_loop(cond, body, loop_vars, maximum_iterations=max_length)

    # Sentences with fewer than n finished hypotheses fall back on alive ones.
    scores = ops.concatenate(
        [
            ops.where(finished_flags, finished_scores, 2 * _NEG),
            alive_log_probs / final_penalty,
        ],
        axis=1,
    )
    scores, pick = ops.top_k(scores, n)
    outputs = {
        "ids": _gather_beams(ops.concatenate([finished_seq, alive_seq], 1), pick)[
            :, :, 1:
        ],
        "scores": scores,
    }
    if return_attention:
        outputs["attention"] = _gather_beams(
            ops.concatenate([finished_attention, alive_attention], 1), pick
        )
    return outputs
