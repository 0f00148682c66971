"""`generate()`: greedy or beam search, compiled with XLA by default."""

import keras
import numpy as np
import tensorflow as tf

from keras_transformer.decoding.beam import beam_search
from keras_transformer.decoding.greedy import greedy_search
from keras_transformer.utils import cpu_tuned_paths
from keras_transformer.utils import standardize_cache_dtype

# The paper's maximum output length: input length + 50.
EXTRA_LENGTH = 50


def _check_positive(name, value):
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value}"
        )


def resolve_cache_dtype(model, jit_compile, cache_dtype=None):
    """The key/value caches' dtype for `generate()`.

    XLA:CPU computes bf16/fp16 dots in float32, so 16-bit caches would be
    converted in full at every decoding step: measured on a 2-core CPU
    (batch 16, 64 tokens, paired), greedy search under `mixed_bfloat16` took
    3.24 ms per step with bf16 caches and 2.96 with float32 ones (the same
    ids), beam 4 8.22 and 7.21 (`benchmarks/README.md`, session 10;
    `mixed_float16` takes the same path, not measured). Accelerators keep
    16-bit caches (half the memory traffic), and so do graphs run without
    XLA (an exported `Translator`), where TensorFlow's CPU kernels compute
    in 16 bits.

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
):
    """The plain (uncompiled) search for these settings: `source_ids -> dict`.

    Greedy when `beam_size == 1`, else beam search; see `generate`.
    """
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
):
    """Translates token ids with greedy (`beam_size=1`) or beam search.

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
            without it, by gather + select of core TensorFlow ops (what an
            exported `Translator` runs). Both give the same ids (under a
            16-bit policy on a CPU, XLA's float32 caches may round a
            near-tie differently from the graph's 16-bit ones).
        cache_dtype: float dtype of the key/value caches. Defaults to the
            model's compute dtype, except float32 for a 16-bit policy
            compiled with XLA on a CPU-only machine (see
            `resolve_cache_dtype`).

    Returns:
        int32 ids `(batch_size, length)` (or `(batch_size, n, length)` when
        `num_return_sequences > 1`), each row ending with EOS (unless cut at
        `max_length`) and padded with `pad_id`, trimmed to the longest row.
        With `return_scores` or `return_attention`, a dict with `"ids"` and
        `"scores"` and/or `"attention"`.
    """
    source_ids = tf.convert_to_tensor(source_ids)
    if source_ids.shape.rank != 2 or not source_ids.dtype.is_integer:
        raise ValueError(
            "`source_ids` must be integer ids of shape (batch_size, length). "
            f"Received: shape={tuple(source_ids.shape)}, dtype={source_ids.dtype.name}"
        )
    source_ids = tf.cast(source_ids, tf.int32)
    if max_length is None:
        max_length = int(source_ids.shape[1]) + EXTRA_LENGTH
    _check_positive("max_length", max_length)
    _check_positive("beam_size", beam_size)
    _check_positive("num_return_sequences", num_return_sequences)
    if num_return_sequences > beam_size:
        raise ValueError(
            f"num_return_sequences={num_return_sequences} must be <= "
            f"beam_size={beam_size}."
        )
    if 2 * beam_size > model.output_vocabulary_size:
        raise ValueError(
            f"beam_size={beam_size} needs a vocabulary of at least "
            f"{2 * beam_size} tokens; the model has {model.output_vocabulary_size}."
        )
    if model.position_encoding == "learned" and max_length > model.max_positions:
        raise ValueError(
            f"max_length={max_length} exceeds the {model.max_positions} learned "
            "positions of this model; pass a smaller `max_length`."
        )
    cache_dtype = resolve_cache_dtype(model, jit_compile, cache_dtype)
    if not model.built:
        model.build()
    key = (
        int(max_length),
        int(beam_size),
        float(length_penalty),
        int(num_return_sequences),
        bool(return_attention),
        cache_dtype,
        bool(jit_compile),
    )
    functions = model.__dict__.setdefault("_generate_functions", {})
    if key not in functions:
        functions[key] = tf.function(
            search_function(
                model,
                key[0],
                key[1],
                key[2],
                key[3],
                return_attention=key[4],
                cache_dtype=key[5],
            ),
            jit_compile=jit_compile,
            reduce_retracing=True,
            autograph=False,
        )
    outputs = functions[key](source_ids)

    # Trim trailing columns that are padding in every row.
    ids = outputs["ids"]
    used = tf.reduce_any(tf.not_equal(ids, model.pad_id), axis=0)
    while len(used.shape) > 1:
        used = tf.reduce_any(used, axis=0)
    length = (
        int(tf.reduce_max(tf.where(used)[:, 0] + 1)) if bool(tf.reduce_any(used)) else 0
    )
    outputs = dict(outputs)
    outputs["ids"] = ids[..., :length]
    if "attention" in outputs:
        outputs["attention"] = outputs["attention"][..., :length, :]
    if num_return_sequences == 1 and beam_size > 1:
        outputs = {name: value[:, 0] for name, value in outputs.items()}
    if not (return_scores or return_attention):
        return outputs["ids"]
    if not return_scores:
        outputs.pop("scores")
    return outputs
