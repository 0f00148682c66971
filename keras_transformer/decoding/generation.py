"""`generate()`: greedy search, beam search or sampling, compiled with XLA."""

import keras
import numpy as np
import tensorflow as tf

from keras_transformer.decoding.beam import beam_search
from keras_transformer.decoding.greedy import greedy_search
from keras_transformer.decoding.sampling import check_sampling_arguments
from keras_transformer.decoding.sampling import sampled_search
from keras_transformer.decoding.sampling import seed_key
from keras_transformer.utils import check_positive_int
from keras_transformer.utils import cpu_tuned_paths
from keras_transformer.utils import standardize_cache_dtype

# The paper's maximum output length: input length + 50.
EXTRA_LENGTH = 50


def _positive_int(name, value):
    """`value` as a Python int; a `ValueError` unless it is a positive integer.

    Numpy integers are accepted too (sizes often come from array shapes);
    the check itself is `keras_transformer.utils.check_positive_int`.
    """
    value = int(value) if isinstance(value, np.integer) else value
    check_positive_int(name, value)
    return value


def check_search_arguments(model, max_length, beam_size, num_return_sequences):
    """Validates `generate()`'s counts against each other and the model.

    Args:
        model: the model that will decode (`output_vocabulary_size`,
            `position_encoding`, `max_positions`).
        max_length: the most tokens to generate.
        beam_size: hypotheses per sentence.
        num_return_sequences: the n best hypotheses returned.

    Returns:
        `(max_length, beam_size, num_return_sequences)` as Python ints.

    Raises:
        ValueError: unless each is a positive integer,
            `num_return_sequences <= beam_size`, the vocabulary has at least
            `2 * beam_size` tokens, and a model with learned positions has
            `max_length` of them.
    """
    max_length = _positive_int("max_length", max_length)
    beam_size = _positive_int("beam_size", beam_size)
    num_return_sequences = _positive_int("num_return_sequences", num_return_sequences)
    if num_return_sequences > beam_size:
        raise ValueError(
            f"num_return_sequences={num_return_sequences} must be <= "
            f"beam_size={beam_size}."
        )
    vocabulary = model.output_vocabulary_size
    if 2 * beam_size > vocabulary:
        raise ValueError(
            f"beam_size={beam_size} needs a vocabulary of at least "
            f"{2 * beam_size} tokens; the model has {vocabulary}."
        )
    if model.position_encoding == "learned" and max_length > model.max_positions:
        raise ValueError(
            f"max_length={max_length} exceeds the {model.max_positions} learned "
            "positions of this model; pass a smaller `max_length`."
        )
    return max_length, beam_size, num_return_sequences


def resolve_cache_dtype(model, jit_compile, cache_dtype=None):
    """The key/value caches' dtype for `generate()`.

    XLA on a CPU computes bfloat16 and float16 dot products in float32, so
    16-bit caches would be converted in full at every decoding step; float32
    caches skip that conversion, which makes decoding faster there (see
    `benchmarks/README.md`). Whether this CPU-tuned choice applies is asked
    of `keras_transformer.utils.cpu_tuned_paths()`. The plain path (caches
    in the compute dtype) is safe on GPUs and TPUs: it is the precision the
    model already computes in, and there 16-bit caches halve the memory
    traffic. Graphs run without XLA (an exported `Translator`) keep 16-bit
    caches too: TensorFlow's CPU kernels compute them in 16 bits.

    Args:
        model: a `keras_transformer.Transformer`.
        jit_compile: bool, whether the search is compiled with XLA.
        cache_dtype: the caller's choice, or `None`.

    Returns:
        `cache_dtype` if given (validated); else `"float32"` for a 16-bit
        compute dtype compiled with XLA on a machine without GPU or TPU;
        else `None`: the model's compute dtype.
    """
    if cache_dtype is not None:
        return standardize_cache_dtype(cache_dtype, "cache_dtype")
    compute = keras.backend.standardize_dtype(model.compute_dtype)
    if jit_compile and compute in ("bfloat16", "float16") and cpu_tuned_paths():
        return "float32"
    return None


def search_function(
    model,
    max_length,
    beam_size=1,
    length_penalty=0.6,
    num_return_sequences=1,
    return_attention=False,
    cache_dtype=None,
    sampling=False,
    temperature=1.0,
    top_k=None,
    top_p=None,
):
    """The plain (uncompiled) search for these settings.

    Greedy when `beam_size == 1`, else beam search: `source_ids -> dict`.
    With `sampling=True` (and `beam_size == 1`), sampled decoding:
    `(source_ids, key) -> dict`, `key` int64 `(2,)` (see
    `decoding.sampling.seed_key`). See `generate`.
    """
    if sampling:
        return lambda source_ids, key: sampled_search(
            model,
            source_ids,
            max_length,
            key,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            return_attention=return_attention,
            cache_dtype=cache_dtype,
        )
    if beam_size == 1:
        return lambda source_ids: greedy_search(
            model,
            source_ids,
            max_length,
            return_attention=return_attention,
            cache_dtype=cache_dtype,
        )
    return lambda source_ids: beam_search(
        model,
        source_ids,
        max_length,
        beam_size=beam_size,
        alpha=length_penalty,
        num_return_sequences=num_return_sequences,
        return_attention=return_attention,
        cache_dtype=cache_dtype,
    )


def check_sampling_settings(
    vocabulary_size, beam_size, sampling, temperature, top_k, top_p, seed
):
    """Validates `generate()`'s sampling arguments against the search.

    Args:
        vocabulary_size: int, the model's output vocabulary.
        beam_size: int, validated.
        sampling: bool, whether to sample.
        temperature, top_k, top_p, seed: see `generate`.

    Returns:
        `None` without sampling; else `(temperature, top_k, top_p, seed)`
        validated (see `decoding.sampling.check_sampling_arguments`).

    Raises:
        ValueError: when `sampling` is not a bool; when sampling with
            `beam_size > 1`; when a sampling setting is given without
            `sampling=True`; when a setting breaks its rule.
    """
    if not isinstance(sampling, bool | np.bool_):
        raise ValueError(f"`sampling` must be a bool. Received: sampling={sampling}")
    if not sampling:
        given = {
            name: value
            for name, value, default in (
                ("temperature", temperature, 1.0),
                ("top_k", top_k, None),
                ("top_p", top_p, None),
                ("seed", seed, None),
            )
            if value != default
        }
        if given:
            names = ", ".join(f"{name}={value}" for name, value in given.items())
            raise ValueError(f"{names} apply only with sampling=True.")
        return None
    if beam_size != 1:
        raise ValueError(
            "sampling=True draws one sequence per input and needs beam_size=1. "
            f"Received: beam_size={beam_size}"
        )
    return check_sampling_arguments(temperature, top_k, top_p, seed, vocabulary_size)


def generate(
    model,
    source_ids,
    max_length=None,
    beam_size=1,
    length_penalty=0.6,
    num_return_sequences=1,
    return_scores=False,
    return_attention=False,
    jit_compile=True,
    cache_dtype=None,
    sampling=False,
    temperature=1.0,
    top_k=None,
    top_p=None,
    seed=None,
):
    """Translates token ids with greedy (`beam_size=1`) or beam search, or
    samples them.

    The whole search is one `tf.while_loop` with a fixed-size key/value
    cache (per decoder block, heads-major key and value buffers; see
    `Transformer.init_cache`), compiled with XLA when `jit_compile=True` (one
    compilation per source shape and settings; compiled functions are kept
    on the model). Beam search keeps one self-attention cache row per
    sentence with a slot per beam, read through each hypothesis's ancestry
    (nothing is copied when beams are reordered), and one cross-attention
    row per source sentence.

    Args:
        model: a `keras_transformer.Transformer`.
        source_ids: int `(batch_size, source_length)` padded with `pad_id`.
        max_length: int, the most tokens to generate. Defaults to
            `source_length + 50`, as in the paper.
        beam_size: int, 1 for greedy search.
        length_penalty: float, GNMT `alpha` of beam search (0.6 in the
            paper); greedy search does not use it.
        num_return_sequences: int, n-best list size (`<= beam_size`).
        return_scores: bool, also return scores (greedy: summed token
            log-probabilities; beam: length-penalized).
        return_attention: bool, also return the last decoder block's
            encoder-decoder attention weights (mean over heads), e.g. for
            alignments.
        jit_compile: bool, compile with XLA. Under XLA the key/value caches
            and the output ids are written in place (dynamic-update-slice);
            without it, the caches by the core `InplaceUpdate` op and the
            ids by a scatter (what an exported `Translator` runs; see
            `layers.attention_cache.in_place_writes`). Both give the same
            ids (under a 16-bit policy on a CPU, XLA's float32 caches may
            round a near-tie differently from the graph's 16-bit ones).
        cache_dtype: float dtype of the key/value caches. Defaults to the
            model's compute dtype, except float32 for a 16-bit policy
            compiled with XLA on a CPU-only machine (see
            `resolve_cache_dtype`).
        sampling: bool, draw each token from the model's distribution
            instead of searching (as for back-translation); needs
            `beam_size=1`. Greedy search's loop and cache, with the drawn
            token in place of the argmax; the `"scores"` are then the drawn
            tokens' summed log-probabilities under the model.
        temperature: positive float (sampling only): the logits are divided
            by it; below 1 sharpens the distribution, above 1 flattens it.
        top_k: int (sampling only): draw from the `top_k` most probable
            tokens only. `None`: all.
        top_p: float in `(0, 1]` (sampling only): draw from the nucleus,
            the most probable tokens whose probabilities first sum to
            `top_p` (after `top_k`). `None`: all.
        seed: int in `[0, 2**32 - 1]` (sampling only): the same seed gives
            the same ids, with and without XLA (the draws are stateless
            Philox random numbers keyed by the seed and the step). `None`:
            a seed drawn from NumPy's global generator.

    Returns:
        int32 ids `(batch_size, length)` (or `(batch_size, n, length)` when
        `num_return_sequences > 1`), each row ending with EOS (unless cut at
        `max_length`) and padded with `pad_id`, trimmed to the longest row.
        With `return_scores` or `return_attention`, a dict with `"ids"` and
        `"scores"` and/or `"attention"`.
    """
    source_ids = _standardize_source_ids(source_ids)
    if max_length is None:
        max_length = int(source_ids.shape[1]) + EXTRA_LENGTH
    max_length, beam_size, num_return_sequences = check_search_arguments(
        model, max_length, beam_size, num_return_sequences
    )
    sampled = check_sampling_settings(
        model.output_vocabulary_size,
        beam_size,
        sampling,
        temperature,
        top_k,
        top_p,
        seed,
    )
    cache_dtype = resolve_cache_dtype(model, jit_compile, cache_dtype)
    if not model.built:
        model.build()
    settings = (
        max_length,
        beam_size,
        float(length_penalty),
        num_return_sequences,
        bool(return_attention),
        cache_dtype,
        bool(jit_compile),
    )
    search = _compiled_search(model, settings, None if sampled is None else sampled[:3])
    if sampled is None:
        outputs = search(source_ids)
    else:
        outputs = search(source_ids, tf.constant(seed_key(sampled[3])))
    outputs = _trim_padding(outputs, model.pad_id)
    if num_return_sequences == 1 and beam_size > 1:
        outputs = {name: value[:, 0] for name, value in outputs.items()}
    return _requested_outputs(outputs, return_scores, return_attention)


def _requested_outputs(outputs, return_scores, return_attention):
    """The ids alone, or a dict with the ids and the outputs asked for."""
    if not (return_scores or return_attention):
        return outputs["ids"]
    if not return_scores:
        outputs.pop("scores")
    return outputs


def _standardize_source_ids(source_ids):
    """int32 `source_ids`; a `ValueError` unless they are 2-D integer ids."""
    source_ids = tf.convert_to_tensor(source_ids)
    if source_ids.shape.rank != 2 or not source_ids.dtype.is_integer:
        raise ValueError(
            "`source_ids` must be integer ids of shape (batch_size, length). "
            f"Received: shape={tuple(source_ids.shape)}, dtype={source_ids.dtype.name}"
        )
    return tf.cast(source_ids, tf.int32)


def _compiled_search(model, settings, sampling=None):
    """The `tf.function` of the search for `settings`, kept on the model.

    `settings` is `(max_length, beam_size, length_penalty,
    num_return_sequences, return_attention, cache_dtype, jit_compile)`;
    `sampling` is `None` or `(temperature, top_k, top_p)` (the sampled
    searches are kept apart, keyed by both). One function is traced (and
    with `jit_compile`, compiled) per settings and source shape, and reused
    by later calls (the sampling seed is an input: a new seed reuses it).
    """
    if sampling is None:
        functions = model.__dict__.setdefault("_generate_functions", {})
        key = settings
    else:
        functions = model.__dict__.setdefault("_sampling_functions", {})
        key = (settings, sampling)
    if key not in functions:
        max_length, beam_size, alpha, n, attention, cache_dtype, jit = settings
        search = search_function(
            model,
            max_length,
            beam_size,
            alpha,
            n,
            return_attention=attention,
            cache_dtype=cache_dtype,
            sampling=sampling is not None,
            **dict(zip(("temperature", "top_k", "top_p"), sampling or ())),
        )
        functions[key] = tf.function(
            search, jit_compile=jit, reduce_retracing=True, autograph=False
        )
    return functions[key]


def _trim_padding(outputs, pad_id):
    """`outputs` without the trailing positions that are padding in every row.

    Args:
        outputs: dict with `"ids"` int `(..., max_length)` and optionally
            `"attention"` `(..., max_length, source_length)`.
        pad_id: int.

    Returns:
        A new dict, `"ids"` and `"attention"` cut to the longest row.
    """
    ids = outputs["ids"]
    used = tf.reduce_any(
        tf.not_equal(ids, pad_id), axis=list(range(ids.shape.rank - 1))
    )
    length = (
        int(tf.reduce_max(tf.where(used)[:, 0] + 1)) if bool(tf.reduce_any(used)) else 0
    )
    outputs = dict(outputs)
    outputs["ids"] = ids[..., :length]
    if "attention" in outputs:
        outputs["attention"] = outputs["attention"][..., :length, :]
    return outputs
