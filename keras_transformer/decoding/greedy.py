"""Greedy decoding with the fixed-size key/value cache, in one while loop."""

from keras import ops

from keras_transformer.decoding.utils import cross_attention_weights
from keras_transformer.decoding.utils import first_argmax
from keras_transformer.decoding.utils import next_token_log_probs
from keras_transformer.decoding.utils import start_state
from keras_transformer.layers.attention_cache import in_place_writes
from keras_transformer.utils import dynamic_update


@in_place_writes()  # the search owns its caches: written in place outside XLA
def greedy_search(
    model,
    source_ids,
    max_length,
    return_attention=False,
    cache_dtype=None,
    next_token=None,
    max_steps=None,
):
    """Greedy decoding: the most probable token at every step.

    The encoder runs once; its keys/values are projected once into the
    cross-attention cache; each step feeds one token through the decoder
    with the self-attention cache and writes the argmax. The loop stops when
    every sentence has produced EOS, or after `max_length` tokens. All shapes
    are fixed, so the whole function compiles with XLA.

    Args:
        model: a `keras_transformer.Transformer`.
        source_ids: int `(batch_size, source_length)`, padded with `pad_id`.
        max_length: int, the most tokens to generate (EOS included).
        return_attention: bool, also return the last decoder block's
            encoder-decoder attention weights, averaged over heads.
        cache_dtype: float dtype of the key/value caches. Defaults to the
            model's compute dtype.
        next_token: `None` (the argmax) or a function
            `(log_probs, step) -> int32 (batch_size,)` that picks each
            step's token from the float32 `(batch_size, vocabulary)`
            log-probabilities (PAD and BOS at -1e9) and the int32 step
            index; `decoding.sampling.sampled_search` passes one that
            samples.
        max_steps: `None` (`max_length`) or an int32 scalar tensor
            `<= max_length`: the most tokens to generate, when the buffers
            are longer than that (bucketed XLA shapes; see
            `export.Translator`).

    Returns:
        A dict with `"ids"` int32 `(batch_size, max_length)` (EOS included
        when produced, `pad_id` after it), `"scores"` float32
        `(batch_size,)` (sum of the chosen tokens' log-probabilities) and, if asked,
        `"attention"` float32 `(batch_size, max_length, source_length)`.
    """
    if next_token is None:
        next_token = _most_probable
    batch_size = ops.shape(source_ids)[0]
    state = start_state(
        model, source_ids, max_length, batch_size, cache_dtype=cache_dtype
    )
    tokens = state["tokens"]  # (B, max_length + 1), BOS at 0
    finished = ops.zeros((batch_size,), "bool")
    scores = ops.zeros((batch_size,), "float32")
    attention_shape = (batch_size, max_length, ops.shape(source_ids)[1])
    attention = ops.zeros(attention_shape if return_attention else (), "float32")

    limit = max_length if max_steps is None else max_steps

    def cond(index, tokens, cache, finished, *rest):
        return ops.logical_and(index < limit, ops.logical_not(ops.all(finished)))

    def body(index, tokens, cache, finished, scores, attention, projection):
        ids = ops.slice(tokens, (0, index), (batch_size, 1))  # (B, 1)
        logits, weights, cache = model.decode(
            ids,
            None,
            source_padding_mask=state["source_mask"],
            cache=cache,
            cache_index=index,
            return_attention_scores=True,
            output_projection=projection,
        )
        log_probs = next_token_log_probs(model, logits[:, 0])  # (B, V)
        next_ids = next_token(log_probs, index)
        next_ids = ops.where(finished, model.pad_id, next_ids)
        token_log_probs = ops.take_along_axis(log_probs, next_ids[:, None], axis=-1)
        scores = scores + ops.where(finished, 0.0, token_log_probs[:, 0])
        tokens = dynamic_update(tokens, next_ids[:, None], index + 1, axis=1)
        if return_attention:
            step_attention = cross_attention_weights(weights)  # (B, 1, S)
            attention = dynamic_update(attention, step_attention, index, axis=1)
        finished = ops.logical_or(finished, ops.equal(next_ids, model.eos_id))
        return index + 1, tokens, cache, finished, scores, attention, projection

    loop_vars = (
        ops.zeros((), "int32"),
        tokens,
        state["cache"],
        finished,
        scores,
        attention,
        state["output_projection"],
    )
    _, tokens, _, _, scores, attention, _ = ops.while_loop(
        cond, body, loop_vars, maximum_iterations=max_length
    )
    outputs = {"ids": tokens[:, 1:], "scores": scores}
    if return_attention:
        outputs["attention"] = attention
    return outputs


def _most_probable(log_probs, step):
    """Greedy search's choice: the first most probable token."""
    return first_argmax(log_probs)
