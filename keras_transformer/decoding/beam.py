"""Beam search with alive/finished hypotheses and the GNMT length penalty.

One search is a `while` loop over a state dict (see `initial_beams`). Each
step extends the alive hypotheses (`extend_beams`), keeps the best ones
that did not end (`select_alive`), reorders the self-attention caches after
them (`reorder_cache`) and merges the new endings into the finished set
(`select_finished`); `select_final` picks the returned hypotheses.
"""

from keras import ops

from keras_transformer.decoding.utils import best_extensions
from keras_transformer.decoding.utils import cross_attention_weights
from keras_transformer.decoding.utils import gather_beams
from keras_transformer.decoding.utils import length_penalty
from keras_transformer.decoding.utils import start_state
from keras_transformer.layers.attention_cache import in_place_writes
from keras_transformer.utils import dynamic_update

# Score of impossible hypotheses (dead beams, empty finished slots). A large
# finite number, so no arithmetic on it produces NaN.
_NEG = -1e9


def _merge_and_pick(first, second, pick):
    """`first` and `second` concatenated on the beam axis, gathered by `pick`."""
    return gather_beams(ops.concatenate([first, second], axis=1), pick)


def initial_beams(tokens, cache, projection, beam_size, attention_shape=None):
    """The state of a beam search before its first step.

    Only the first beam of each sentence is alive (the others score `-1e9`),
    so the beams differ after the first step; the finished set is empty.

    Args:
        tokens: int32 `(batch_size * beam_size, max_length + 1)`, BOS then
            padding (from `decoding.utils.start_state`).
        cache: the model's decoding cache.
        projection: the output projection, carried through the loop.
        beam_size: int.
        attention_shape: `(batch_size, beam_size, max_length,
            source_length)` to also track attention weights, or `None`.

    Returns:
        dict: `"index"` (int32 scalar, the position being read),
        `"alive_seq"` `(batch_size, beam_size, max_length + 1)`,
        `"alive_log_probs"` float32 `(batch_size, beam_size)`,
        `"finished_seq"`, `"finished_scores"`, `"finished_flags"` (the
        finished set, same shapes; its scores are length-penalized),
        `"cache"`, `"projection"`, and with `attention_shape`,
        `"alive_attention"` and `"finished_attention"`.
    """
    batch_size = ops.shape(tokens)[0] // beam_size
    length = tokens.shape[-1]
    if length is None:  # `max_length` is a tensor (an exported translator).
        length = ops.shape(tokens)[-1]
    alive_seq = ops.reshape(tokens, (batch_size, beam_size, length))
    first_beam = ops.convert_to_tensor([[0.0] + [_NEG] * (beam_size - 1)], "float32")
    state = {
        "index": ops.zeros((), "int32"),
        "alive_seq": alive_seq,
        "alive_log_probs": ops.tile(first_beam, (batch_size, 1)),
        "finished_seq": ops.zeros_like(alive_seq),
        "finished_scores": ops.full((batch_size, beam_size), _NEG, "float32"),
        "finished_flags": ops.zeros((batch_size, beam_size), "bool"),
        "cache": cache,
        "projection": projection,
    }
    if attention_shape is not None:
        state["alive_attention"] = ops.zeros(attention_shape, "float32")
        state["finished_attention"] = ops.zeros(attention_shape, "float32")
    return state


def sentences_done(state, num_return_sequences, alpha, final_penalty):
    """Which sentences no alive hypothesis can improve any more.

    A sentence is done when its `num_return_sequences` best finished
    hypotheses score at least as well as its best alive hypothesis could:
    a log-probability only falls as tokens are added, so the best reachable
    score is the current one divided by the largest length penalty still
    possible.

    Args:
        state: the search state (see `initial_beams`).
        num_return_sequences: int, the n best hypotheses returned.
        alpha: float, the length penalty exponent.
        final_penalty: the length penalty of `max_length`.

    Returns:
        bool `(batch_size,)`.
    """
    n = num_return_sequences
    penalty = ops.maximum(final_penalty, length_penalty(state["index"], alpha))
    bound = state["alive_log_probs"][:, 0] / penalty
    finished_scores = state["finished_scores"][:, n - 1]
    return ops.logical_and(state["finished_flags"][:, n - 1], finished_scores >= bound)


def _decode_alive(model, state, source_mask):
    """One decoder step for every alive hypothesis.

    Returns:
        `(logits (batch_size, beams, vocabulary), per-block attention
        weights, updated cache)`.
    """
    alive_seq = state["alive_seq"]
    batch_size, beams = ops.shape(alive_seq)[0], alive_seq.shape[1]
    ids = ops.slice(alive_seq, (0, 0, state["index"]), (batch_size, beams, 1))
    logits, weights, cache = model.decode(
        ops.reshape(ids, (batch_size * beams, 1)),
        None,
        source_padding_mask=source_mask,
        cache=state["cache"],
        cache_index=state["index"],
        return_attention_scores=True,
        output_projection=state["projection"],
    )
    vocabulary = model.output_vocabulary_size
    return ops.reshape(logits[:, 0], (batch_size, beams, vocabulary)), weights, cache


def extend_beams(model, state, source_mask, alpha):
    """The `2 * beams` best one-token extensions of the alive hypotheses.

    Runs the decoder once, scores every extension of every alive hypothesis
    (`decoding.utils.best_extensions`; PAD and BOS never win) and writes
    the chosen tokens after their hypotheses.

    Args:
        model: an object with `decode` (see `beam_search`).
        state: the search state (see `initial_beams`).
        source_mask: bool `(batch_size, source_length)`.
        alpha: float, the length penalty exponent.

    Returns:
        `(candidates, cache)`: `candidates` is a dict of `(batch_size, 2 *
        beams)` tensors `"log_probs"` (float32), `"beams"` (int32, the
        alive hypothesis each extends), `"is_eos"` (bool), `"scores"`
        (length-penalized `"log_probs"`), plus `"seq"` `(batch_size, 2 *
        beams, max_length + 1)` and, when the state tracks attention,
        `"attention"` `(batch_size, 2 * beams, max_length, source_length)`;
        `cache` is the cache after this step, in the alive beams' order.
    """
    index = state["index"]
    logits, weights, cache = _decode_alive(model, state, source_mask)
    log_probs, beams, tokens = best_extensions(
        logits,
        state["alive_log_probs"],
        2 * logits.shape[1],
        banned_ids=(model.pad_id, model.bos_id),
    )
    seq = gather_beams(state["alive_seq"], beams)  # (B, 2K, L + 1)
    candidates = {
        "log_probs": log_probs,
        "beams": beams,
        "is_eos": ops.equal(tokens, model.eos_id),
        "scores": log_probs / length_penalty(index + 1, alpha),
        "seq": dynamic_update(seq, tokens[:, :, None], index + 1, axis=2),
    }
    if "alive_attention" in state:
        step = ops.reshape(
            cross_attention_weights(weights), ops.shape(logits)[:2] + (-1,)
        )
        attention = gather_beams(state["alive_attention"], beams)
        step = gather_beams(step, beams)[:, :, None]
        candidates["attention"] = dynamic_update(attention, step, index, axis=2)
    return candidates, cache


def select_alive(candidates, beam_size):
    """The `beam_size` best candidates that did not end with EOS.

    Args:
        candidates: dict from `extend_beams`.
        beam_size: int.

    Returns:
        `(alive, parents)`: `alive` has the state's `"alive_log_probs"`,
        `"alive_seq"` (and `"alive_attention"` when the candidates carry
        attention), best first; `parents` int32 `(batch_size, beam_size)`
        is the previous alive hypothesis each one extends.
    """
    log_probs = ops.where(candidates["is_eos"], _NEG, candidates["log_probs"])
    log_probs, keep = ops.top_k(log_probs, beam_size)
    alive = {
        "alive_log_probs": log_probs,
        "alive_seq": gather_beams(candidates["seq"], keep),
    }
    if "attention" in candidates:
        alive["alive_attention"] = gather_beams(candidates["attention"], keep)
    return alive, gather_beams(candidates["beams"], keep)


def select_finished(state, candidates, beam_size):
    """The `beam_size` best of the finished set and the new EOS endings.

    Args:
        state: the search state (see `initial_beams`).
        candidates: dict from `extend_beams`.
        beam_size: int.

    Returns:
        dict with the state's `"finished_scores"` (best first),
        `"finished_seq"`, `"finished_flags"` (and `"finished_attention"`
        when the state tracks attention).
    """
    is_eos = candidates["is_eos"]
    endings = ops.where(is_eos, candidates["scores"], _NEG)
    scores = ops.concatenate([state["finished_scores"], endings], axis=1)
    scores, pick = ops.top_k(scores, beam_size)
    finished = {
        "finished_scores": scores,
        "finished_seq": _merge_and_pick(state["finished_seq"], candidates["seq"], pick),
        "finished_flags": _merge_and_pick(state["finished_flags"], is_eos, pick),
    }
    if "finished_attention" in state:
        finished["finished_attention"] = _merge_and_pick(
            state["finished_attention"], candidates["attention"], pick
        )
    return finished


def reorder_cache(cache, parents, beam_size):
    """The self-attention cache for the new alive hypotheses.

    A beam cache (with `"ancestry"`) never moves: each hypothesis takes its
    parent's ancestry, the table of which beam's slots hold each of its
    positions. A cache with one row per beam (a model whose `init_cache`
    has no beam caches) has every self-attention buffer gathered after the
    beams.

    Args:
        cache: the cache after the step, in the previous beams' order.
        parents: int32 `(batch_size, beam_size)`, from `select_alive`.
        beam_size: int.

    Returns:
        The cache, same structure, in the new beams' order.
    """
    if "ancestry" in cache:
        return {**cache, "ancestry": gather_beams(cache["ancestry"], parents)}
    if beam_size == 1:
        return cache
    sentences = ops.arange(ops.shape(parents)[0], dtype="int32")[:, None]
    rows = ops.reshape(sentences * beam_size + ops.cast(parents, "int32"), (-1,))
    self_caches = [
        {name: ops.take(buffer, rows, axis=0) for name, buffer in block.items()}
        for block in cache["self"]
    ]
    return {**cache, "self": self_caches}


def select_final(state, num_return_sequences, final_penalty):
    """The `num_return_sequences` best hypotheses of each sentence.

    Finished hypotheses come first; a sentence with fewer of them falls
    back on alive ones, scored with the length penalty of `max_length`.

    Args:
        state: the search state (see `initial_beams`).
        num_return_sequences: int.
        final_penalty: the length penalty of `max_length`.

    Returns:
        dict with `"ids"` `(batch_size, n, max_length)` (BOS dropped),
        `"scores"` `(batch_size, n)` and, when the state tracks attention,
        `"attention"`.
    """
    finished_scores = ops.where(
        state["finished_flags"], state["finished_scores"], 2 * _NEG
    )
    alive_scores = state["alive_log_probs"] / final_penalty
    scores = ops.concatenate([finished_scores, alive_scores], axis=1)
    scores, pick = ops.top_k(scores, num_return_sequences)
    ids = _merge_and_pick(state["finished_seq"], state["alive_seq"], pick)
    outputs = {"ids": ids[:, :, 1:], "scores": scores}
    if "alive_attention" in state:
        outputs["attention"] = _merge_and_pick(
            state["finished_attention"], state["alive_attention"], pick
        )
    return outputs


@in_place_writes()  # the search owns its caches: written in place outside XLA
def beam_search(
    model,
    source_ids,
    max_length,
    beam_size=4,
    alpha=0.6,
    num_return_sequences=1,
    return_attention=False,
    cache_dtype=None,
    max_steps=None,
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
        model: a `keras_transformer.Transformer`, or any object with its
            `encode`, `init_cache`, `decode`, `target_embedding`,
            `output_vocabulary_size` and special ids.
        source_ids: int `(batch_size, source_length)`.
        max_length: int, the most tokens to generate (EOS included).
        beam_size: int.
        alpha: float, length penalty exponent (0.6 in the paper).
        num_return_sequences: int, the n best hypotheses to return.
        return_attention: bool, also return the last decoder block's
            encoder-decoder attention (mean over heads) of each hypothesis.
        cache_dtype: float dtype of the key/value caches. Defaults to the
            model's compute dtype.
        max_steps: `None` (`max_length`) or an int32 scalar tensor
            `<= max_length`: the most tokens to generate (and the length of
            the final penalty), when the buffers are longer than that
            (bucketed XLA shapes; see `export.Translator`).

    Returns:
        dict with `"ids"` int32 `(batch_size, n, max_length)`, `"scores"`
        float32 `(batch_size, n)` (length-penalized log-probabilities) and,
        if asked, `"attention"` `(batch_size, n, max_length, source_length)`.
    """
    batch_size, source_length = ops.shape(source_ids)[0], ops.shape(source_ids)[1]
    start = start_state(
        model, source_ids, max_length, batch_size, beam_size, cache_dtype=cache_dtype
    )
    attention_shape = (batch_size, beam_size, max_length, source_length)
    state = initial_beams(
        start["tokens"],
        start["cache"],
        start["output_projection"],
        beam_size,
        attention_shape if return_attention else None,
    )
    limit = max_length if max_steps is None else max_steps
    final_penalty = length_penalty(limit, alpha)

    def cond(state):
        done = sentences_done(state, num_return_sequences, alpha, final_penalty)
        searching = ops.logical_not(ops.all(done))
        return ops.logical_and(state["index"] < limit, searching)

    def body(state):
        candidates, cache = extend_beams(model, state, start["source_mask"], alpha)
        alive, parents = select_alive(candidates, beam_size)
        return {
            **state,
            **alive,
            **select_finished(state, candidates, beam_size),
            "cache": reorder_cache(cache, parents, beam_size),
            "index": state["index"] + 1,
        }

    state = ops.while_loop(cond, body, state, maximum_iterations=max_length)
    return select_final(state, num_return_sequences, final_penalty)
