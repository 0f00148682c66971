"""Sampling the next token: temperature, top-k and nucleus (top-p) filtering.

Pure functions over logits, and the sampled search: greedy search's loop
(`decoding.greedy.greedy_search`) with a sampled token in place of the
argmax. Random numbers come from stateless Philox integer ops keyed by the
seed and the step, so a seed gives the same draws with and without XLA.
"""

import math
import numbers

import numpy as np
import tensorflow as tf
from keras import ops

from keras_transformer.decoding.greedy import greedy_search
from keras_transformer.decoding.utils import first_argmax

# What a filtered-out token's logit becomes (a selection, never -inf).
REMOVED = -1e9
# Seeds are integers in [0, MAX_SEED], as the training seeds.
MAX_SEED = 2**32 - 1


def check_sampling_arguments(
    temperature=1.0, top_k=None, top_p=None, seed=None, vocabulary_size=None
):
    """Validates the sampling settings.

    Args:
        temperature: positive finite number; the logits are divided by it.
        top_k: `None` or a positive int, at most `vocabulary_size`.
        top_p: `None` or a number in `(0, 1]`.
        seed: `None` or an int in `[0, 2**32 - 1]`.
        vocabulary_size: int or `None` (then `top_k` is not bounded).

    Returns:
        `(temperature, top_k, top_p, seed)`: a Python float, int or `None`,
        float or `None`, int or `None`.

    Raises:
        ValueError: when a setting breaks its rule.
    """
    if not _is_real(temperature) or not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(
            "`temperature` must be a positive finite number. "
            f"Received: temperature={temperature}"
        )
    if top_k is not None:
        if not _is_int(top_k) or top_k < 1:
            raise ValueError(
                f"`top_k` must be a positive integer or None. Received: top_k={top_k}"
            )
        if vocabulary_size is not None and top_k > vocabulary_size:
            raise ValueError(
                f"`top_k` must be at most the vocabulary size {vocabulary_size}. "
                f"Received: top_k={top_k}"
            )
        top_k = int(top_k)
    if top_p is not None:
        if not _is_real(top_p) or not 0.0 < top_p <= 1.0:
            raise ValueError(
                f"`top_p` must be a number in (0, 1] or None. Received: top_p={top_p}"
            )
        top_p = float(top_p)
    if seed is not None:
        if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
            raise ValueError(
                f"`seed` must be an integer in [0, {MAX_SEED}] or None. "
                f"Received: seed={seed}"
            )
        seed = int(seed)
    return float(temperature), top_k, top_p, seed


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def seed_key(seed=None):
    """The int64 key `[seed, 0]` of a sampled search, shape `(2,)`.

    Args:
        seed: int in `[0, 2**32 - 1]`, or `None`: drawn from NumPy's global
            generator (which `keras.utils.set_random_seed` seeds).

    Returns:
        A NumPy int64 array of shape `(2,)`.
    """
    if seed is None:
        seed = int(np.random.randint(0, MAX_SEED, dtype=np.int64))
    return np.array([seed, 0], np.int64)


def step_key(key, step):
    """The key of one decoding step: `key` folded with `step` (Philox).

    Args:
        key: int64 `(2,)`, the search's key.
        step: int scalar, the decoding step.

    Returns:
        int64 `(2,)`.
    """
    return tf.random.experimental.stateless_fold_in(
        tf.cast(key, tf.int64), step, alg="philox"
    )


def filter_logits(logits, temperature=1.0, top_k=None, top_p=None, removed=None):
    """Logits to sample from: tempered, with the unlikely tokens removed.

    In order (as in fairseq and Hugging Face): the logits, shifted so that
    their maximum is 0, are divided by `temperature`; tokens where `removed`
    is true are set to `REMOVED` (-1e9); with `top_k`, every token below the
    `top_k`-th largest logit is removed; with `top_p`, of what remains, every
    token outside the nucleus is removed: the most likely tokens whose
    probabilities, summed in decreasing order, first reach `top_p` (a token
    is kept when the tokens before it sum to less than `top_p`; the most
    likely one always is). Tokens tied with the last kept one are kept.

    Args:
        logits: float `(batch, vocabulary)`.
        temperature: positive float.
        top_k: `None` or int, `1 <= top_k <= vocabulary`.
        top_p: `None` or float in `(0, 1]`.
        removed: `None` or bool `(vocabulary,)` or `(batch, vocabulary)`:
            tokens never sampled.

    Returns:
        float32 `(batch, vocabulary)`, `REMOVED` where filtered out.
    """
    logits = ops.cast(logits, "float32")
    logits = (logits - ops.max(logits, axis=-1, keepdims=True)) / temperature
    if removed is not None:
        logits = ops.where(removed, REMOVED, logits)
    vocabulary = logits.shape[-1]
    if top_k is not None and vocabulary is not None and top_k >= vocabulary:
        top_k = None
    if top_p is not None and top_p >= 1.0:
        top_p = None
    if top_k is None and top_p is None:
        return logits
    if top_k is not None:
        values, _ = ops.top_k(logits, top_k)  # (B, k), sorted
    else:
        values = -ops.sort(-logits, axis=-1)  # (B, V), sorted
    threshold = values[:, -1:]
    if top_p is not None:
        probs = ops.softmax(values, axis=-1)
        before = tf.math.cumsum(probs, axis=-1, exclusive=True)
        kept = ops.sum(ops.cast(before < top_p, "int32"), axis=-1)  # >= 1
        threshold = ops.take_along_axis(values, kept[:, None] - 1, axis=-1)
    return ops.where(logits >= threshold, logits, REMOVED)


def uniform_noise(shape, key):
    """Uniform float32 in `(0, 1)` from Philox integers keyed by `key`.

    Made from 24 random bits per value, `(bits + 0.5) / 2**24`, so the
    values never reach 0 or 1, and are the same with and without XLA
    (whose float random ops differ from TensorFlow's kernels).

    Args:
        shape: the output shape.
        key: int64 `(2,)`.

    Returns:
        float32 of `shape`.
    """
    bits = tf.random.stateless_uniform(
        shape, key, minval=None, maxval=None, dtype=tf.int32, alg="philox"
    )
    bits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 8), 0xFFFFFF)
    return (tf.cast(bits, tf.float32) + 0.5) * (2.0**-24)


def sample_from_logits(logits, key):
    """One token per row, drawn with probabilities `softmax(logits)`.

    The Gumbel-max draw: `argmax(logits - log(-log(u)))` with `u` uniform
    (`uniform_noise`), exactly a draw from the softmax; `REMOVED` tokens are
    never drawn while a row has a token above them.

    Args:
        logits: float32 `(batch, vocabulary)`.
        key: int64 `(2,)`.

    Returns:
        int32 `(batch,)`.
    """
    gumbel = -ops.log(-ops.log(uniform_noise(ops.shape(logits), key)))
    return first_argmax(logits + gumbel)


def sampling_next_token(
    temperature=1.0, top_k=None, top_p=None, banned_ids=(), key=None
):
    """A `next_token(log_probs, step)` function of greedy search that samples.

    Args:
        temperature, top_k, top_p: see `filter_logits`.
        banned_ids: token ids never sampled (PAD and BOS).
        key: int64 `(2,)`, the search's key (see `seed_key`); each step
            draws with `step_key(key, step)`.

    Returns:
        A function `(log_probs (B, V), step) -> int32 (B,)`.
    """

    def next_token(log_probs, step):
        vocabulary = ops.shape(log_probs)[-1]
        ids = ops.arange(vocabulary, dtype="int32")
        removed = ops.zeros((vocabulary,), "bool")
        for banned_id in banned_ids:
            removed = ops.logical_or(removed, ops.equal(ids, banned_id))
        logits = filter_logits(log_probs, temperature, top_k, top_p, removed)
        return sample_from_logits(logits, step_key(key, step))

    return next_token


def sampled_search(
    model,
    source_ids,
    max_length,
    key,
    temperature=1.0,
    top_k=None,
    top_p=None,
    return_attention=False,
    cache_dtype=None,
):
    """Sampled decoding: greedy search's loop, drawing each next token.

    Each step's token is drawn from the model's next-token distribution
    filtered by `filter_logits` (PAD and BOS never drawn), with the key
    `step_key(key, step)`. Same cache, stopping rule and outputs as
    `greedy_search`; the `"scores"` are the summed (untempered, unfiltered)
    log-probabilities of the drawn tokens under the model.

    Args:
        model: a `keras_transformer.Transformer`.
        source_ids: int `(batch_size, source_length)`.
        max_length: int, the most tokens to generate.
        key: int64 `(2,)` (see `seed_key`).
        temperature, top_k, top_p: see `filter_logits`.
        return_attention, cache_dtype: see `greedy_search`.

    Returns:
        The dict of `greedy_search`.
    """
    next_token = sampling_next_token(
        temperature, top_k, top_p, (model.pad_id, model.bos_id), key
    )
    return greedy_search(
        model,
        source_ids,
        max_length,
        return_attention=return_attention,
        cache_dtype=cache_dtype,
        next_token=next_token,
    )
