import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_transformer.decoding.utils import best_extensions
from keras_transformer.decoding.utils import first_argmax
from keras_transformer.decoding.utils import top_k


def _with_ties(shape, seed):
    # Few distinct values, so every row has many ties.
    return np.random.default_rng(seed).integers(0, 7, size=shape).astype("float32")


@pytest.mark.parametrize("jit_compile", [False, True])
def test_first_argmax_equals_argmax_ties_to_the_lowest_index(jit_compile):
    values = np.concatenate(
        [_with_ties((5, 300), 0), np.random.default_rng(1).normal(size=(5, 300))]
    ).astype("float32")
    got = tf.function(first_argmax, jit_compile=jit_compile)(values)
    assert got.dtype == tf.int32
    np.testing.assert_array_equal(got, np.argmax(values, axis=-1))


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize(
    "n, k, values",
    [
        (4 * 8192, 8, "normal"),  # beam 4, vocabulary 8192: the blocked path
        (3 * 5000 + 7, 6, "normal"),  # not a multiple of the block: padded
        (4 * 8192, 8, "ties"),
        (3000, 6, "normal"),  # short: plain top_k
    ],
)
def test_top_k_equals_sorted_top_k(n, k, values, jit_compile):
    rng = np.random.default_rng(n)
    if values == "ties":
        x = _with_ties((3, n), n)
    else:
        x = rng.normal(size=(3, n)).astype("float32")
        x[0, :] = -1e9  # a dead row: every value equal
        x[1, rng.integers(0, n, 20)] = 50.0  # a tie among the largest
    got_values, got_indices = tf.function(
        lambda x: top_k(x, k), jit_compile=jit_compile
    )(x)
    want_values, want_indices = ops.top_k(x, k)
    assert got_indices.dtype == tf.int32
    np.testing.assert_array_equal(got_values, want_values)
    np.testing.assert_array_equal(got_indices, want_indices)


def _reference_extensions(logits, log_probs, k, banned_ids):
    """numpy: every `log_probs[b, r] + log_softmax(logits[b, r])[v]`, banned
    ids at -1e9 + log_probs, then a stable descending sort (ties to the
    lowest flat index r * V + v)."""
    logits = logits.astype("float64")
    top = logits.max(-1, keepdims=True)
    log_softmax = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    log_softmax[:, :, list(banned_ids)] = -1e9
    scores = (log_probs[:, :, None] + log_softmax).reshape(len(logits), -1)
    order = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    vocabulary = logits.shape[-1]
    return (
        np.take_along_axis(scores, order, -1),
        order // vocabulary,
        order % vocabulary,
    )


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize(
    "vocabulary, values, banned_ids",
    [
        (8192, "normal", (0, 2)),  # the blocked path, whole blocks
        (7000, "normal", (0, 2)),  # blocked, the last block padded
        (6144, "normal", (0, 2)),  # the smallest blocked vocabulary for k=8
        (8192, "normal", (0, 2, 200)),  # banned ids in two blocks
        (8192, "ties", (0, 2)),
        (8192, "same_beams", (0, 2)),  # ties across beams: lowest beam first
        (300, "normal", (0, 2)),  # short: materialized scores
        (300, "ties", (0, 2)),
    ],
)
def test_best_extensions_equal_the_materialized_top_k(
    vocabulary, values, banned_ids, jit_compile
):
    rng = np.random.default_rng(vocabulary)
    beams, k = 4, 8
    if values == "normal":
        logits = 3 * rng.normal(size=(3, beams, vocabulary)).astype("float32")
        logits[:, :, list(banned_ids)] = 40.0  # banned ids would win
        log_probs = -rng.uniform(0, 5, size=(3, beams)).astype("float32")
        log_probs[0, 1:] = -1e9  # sentence 0: only its first beam is alive
    else:
        logits = _with_ties((3, beams, vocabulary), vocabulary)
        if values == "same_beams":
            logits[:] = logits[:, :1]
        log_probs = np.zeros((3, beams), "float32")  # every beam scores alike
    scores, hypotheses, tokens = tf.function(
        lambda x, p: best_extensions(x, p, k, banned_ids), jit_compile=jit_compile
    )(logits, log_probs)
    want_scores, want_hypotheses, want_tokens = _reference_extensions(
        logits, log_probs, k, banned_ids
    )
    assert hypotheses.dtype == tokens.dtype == tf.int32
    np.testing.assert_array_equal(hypotheses, want_hypotheses)
    np.testing.assert_array_equal(tokens, want_tokens)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6, atol=1e-5)
    assert not np.isin(tokens, banned_ids).any()
