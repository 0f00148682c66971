"""Sampling in `generate()`: the filters against numpy, the draws against
their distribution (chi-square), greedy limits, seeds, XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from keras_transformer import Transformer
from keras_transformer.decoding import sampling
from keras_transformer.special_tokens import BOS_ID
from keras_transformer.special_tokens import EOS_ID
from keras_transformer.special_tokens import PAD_ID

VOCAB = 40
SOURCE = np.array(
    [[5, 6, 7, 3], [8, 9, 3, 0], [10, 3, 0, 0], [11, 12, 13, 3], [20, 21, 3, 0]]
)


@pytest.fixture(scope="module")
def model():
    """An untrained model with spread-out logits: varied greedy outputs."""
    keras.utils.set_random_seed(1)
    model = Transformer(vocabulary_size=VOCAB, num_layers=1, d_model=16,
                        num_heads=2, d_ff=32, dropout=0.0)  # fmt: skip
    model.build()
    for weight in model.weights:
        if "kernel" in weight.path and "attention" in weight.path:
            weight.assign(weight * 3.0)
    embeddings = np.asarray(model.target_embedding.embeddings) * 3.0
    embeddings[EOS_ID] *= 0.5
    model.target_embedding.embeddings.assign(embeddings)
    return model


def _reference_filter(logits, temperature=1.0, top_k=None, top_p=None, removed=()):
    """numpy, float64: the documented filtering, token by token."""
    logits = np.asarray(logits, np.float64)
    out = (logits - logits.max(-1, keepdims=True)) / temperature
    out[:, list(removed)] = -np.inf
    for row in out:
        order = np.argsort(-row, kind="stable")
        keep = np.zeros(row.shape, bool)
        keep[order[: top_k or len(row)]] = True
        if top_p is not None:
            probs = np.exp(row[order] - row[order[0]]) * keep[order]
            probs /= probs.sum()
            total = 0.0
            for token, prob in zip(order, probs):
                if total >= top_p:
                    keep[token] = False
                total += prob
        row[~keep] = -np.inf
    return out


def _probabilities(filtered):
    filtered = np.where(np.isfinite(filtered), filtered, -np.inf)
    probs = np.exp(filtered - filtered.max(-1, keepdims=True))
    return probs / probs.sum(-1, keepdims=True)


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(1.0, None, None), (0.5, 3, None), (2.0, None, 0.7), (1.3, 10, 0.5),
     (1.0, 1, None), (1.0, None, 1e-6), (0.8, 50, 0.95), (1.0, None, 1.0)],
)  # fmt: skip
def test_filter_logits_matches_numpy(temperature, top_k, top_p):
    logits = np.random.default_rng(0).normal(0, 3, (16, 50)).astype("float32")
    removed = np.isin(np.arange(50), [0, 2])
    filtered = np.asarray(
        sampling.filter_logits(logits, temperature, top_k, top_p, removed)
    )
    reference = _reference_filter(logits, temperature, top_k, top_p, (0, 2))
    kept = np.isfinite(reference)
    np.testing.assert_array_equal(filtered > sampling.REMOVED, kept)
    np.testing.assert_allclose(filtered[kept], reference[kept], rtol=1e-5, atol=1e-4)
    assert (filtered[~kept] == sampling.REMOVED).all()
    if top_k is not None:
        assert (kept.sum(-1) <= top_k).all()
    if top_k is None and top_p is not None and top_p < 1:
        # The smallest set reaching top_p: without its least likely token,
        # the kept probability falls below top_p.
        probs = _probabilities(_reference_filter(logits, temperature, removed=(0, 2)))
        mass = np.where(kept, probs, 0).sum(-1)
        smallest = np.where(kept, probs, np.inf).min(-1)
        assert (mass >= top_p - 1e-6).all() and (mass - smallest < top_p).all()


def test_sampled_frequencies_match_the_distribution():
    """Chi-square: 40,000 draws from fixed logits, filtered."""
    logits = np.array([[2.0, 0.5, 1.0, -1.0, 0.0, 1.5, -0.5, 3.0]], "float32")
    removed = np.isin(np.arange(8), [1])
    filtered = sampling.filter_logits(logits, 1.5, top_k=6, removed=removed)
    draws = 40_000
    key = tf.constant(sampling.seed_key(7))
    ids = np.asarray(sampling.sample_from_logits(tf.tile(filtered, [draws, 1]), key))
    counts = np.bincount(ids, minlength=8)
    probs = _probabilities(_reference_filter(logits, 1.5, 6, None, (1,)))[0]
    assert counts[probs == 0].sum() == 0  # never a filtered-out token
    kept = probs > 0
    result = stats.chisquare(counts[kept], draws * probs[kept])
    assert result.pvalue > 1e-3, (counts, draws * probs)
    # The same draws are not those of the unfiltered distribution.
    unfiltered = _probabilities(logits.astype(np.float64))[0]
    assert stats.chisquare(counts, draws * unfiltered).pvalue < 1e-6


def _first_step_probabilities(model, source, temperature, top_k, top_p):
    target = np.array([[BOS_ID]], "int32")
    logits = np.asarray(model({"source": source, "target": target}))[:, 0]
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    filtered = _reference_filter(log_probs, temperature, top_k, top_p, (PAD_ID, BOS_ID))
    return _probabilities(filtered)[0]


@pytest.mark.parametrize(
    "temperature, top_k, top_p", [(1.5, 6, None), (1.0, None, 0.8)]
)
def test_generate_first_tokens_follow_the_model(model, temperature, top_k, top_p):
    """Chi-square: one source repeated 4,000 times, first generated tokens."""
    draws = 4000
    source = np.repeat(SOURCE[:1], draws, axis=0)
    ids = model.generate(source, max_length=1, sampling=True, seed=11,
                         temperature=temperature, top_k=top_k, top_p=top_p,
                         jit_compile=False)  # fmt: skip
    counts = np.bincount(np.asarray(ids)[:, 0], minlength=VOCAB)
    probs = _first_step_probabilities(model, SOURCE[:1], temperature, top_k, top_p)
    assert counts[probs == 0].sum() == 0
    assert (probs > 0).sum() >= 3
    kept = probs > 0
    result = stats.chisquare(counts[kept], draws * probs[kept])
    assert result.pvalue > 1e-3, (counts[kept], draws * probs[kept])


@pytest.mark.parametrize(
    "settings, jit_compile",
    [({"top_k": 1}, True), ({"temperature": 1e-4}, False), ({"top_p": 1e-6}, False)],
)
def test_greedy_limits(model, settings, jit_compile):
    greedy = np.asarray(model.generate(SOURCE, max_length=10, jit_compile=jit_compile))
    assert len(np.unique(greedy)) > 5  # varied outputs, not one token
    sampled = model.generate(SOURCE, max_length=10, sampling=True, seed=3,
                             jit_compile=jit_compile, **settings)  # fmt: skip
    np.testing.assert_array_equal(sampled, greedy)


def test_seeds(model):
    source = np.repeat(SOURCE, 4, axis=0)

    def sample(seed, jit_compile=True):
        return np.asarray(model.generate(source, max_length=10, sampling=True,
                                         seed=seed, jit_compile=jit_compile))  # fmt: skip

    first = sample(5)
    np.testing.assert_array_equal(sample(5), first)
    np.testing.assert_array_equal(sample(5, jit_compile=False), first)
    assert not np.array_equal(sample(6), first)
    # Rows draw independently: repeated sources get different samples.
    assert len({tuple(row) for row in first[:4]}) > 1
    # seed=None draws the seed from numpy's global generator.
    keras.utils.set_random_seed(9)
    unseeded = sample(None)
    keras.utils.set_random_seed(9)
    np.testing.assert_array_equal(sample(None), unseeded)
    # One compiled search per settings; XLA writes the caches in place.
    key = tf.constant(sampling.seed_key(5))
    for (settings, _), function in model._sampling_functions.items():
        graph = function.get_concrete_function(tf.constant(source, tf.int32), key).graph
        graph_def = graph.as_graph_def()
        op_types = {node.op for node in graph_def.node}
        for library_function in graph_def.library.function:
            op_types |= {node.op for node in library_function.node_def}
        assert ("XlaDynamicUpdateSlice" in op_types) == settings[-1], settings


def test_scores_are_the_samples_log_probabilities(model):
    outputs = model.generate(SOURCE, max_length=6, sampling=True, seed=2,
                             temperature=1.5, top_k=8, return_scores=True,
                             jit_compile=False)  # fmt: skip
    ids = np.asarray(outputs["ids"])
    target_in = np.concatenate([np.full((len(ids), 1), BOS_ID), ids[:, :-1]], 1)
    logits = np.asarray(model({"source": SOURCE, "target": target_in}), "float64")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    token = np.take_along_axis(log_probs, ids[..., None], -1)[..., 0]
    reference = (token * (ids != PAD_ID)).sum(-1)
    np.testing.assert_allclose(outputs["scores"], reference, rtol=1e-4, atol=1e-4)
    assert not np.isin(ids, [BOS_ID]).any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sampling": True, "beam_size": 2}, "needs beam_size=1"),
        ({"sampling": "yes"}, "`sampling` must be a bool"),
        ({"temperature": 0.5}, "temperature=0.5 apply only with sampling=True"),
        ({"top_k": 3, "seed": 1}, "top_k=3, seed=1 apply only"),
        ({"sampling": True, "temperature": 0.0}, "`temperature` must be a positive"),
        ({"sampling": True, "temperature": float("inf")}, "positive finite"),
        ({"sampling": True, "top_k": 0}, "`top_k` must be a positive integer"),
        ({"sampling": True, "top_k": 2.0}, "`top_k` must be a positive integer"),
        ({"sampling": True, "top_k": VOCAB + 1}, f"at most the vocabulary size {VOCAB}"),
        ({"sampling": True, "top_p": 0.0}, r"`top_p` must be a number in \(0, 1\]"),
        ({"sampling": True, "top_p": 1.5}, r"top_p=1.5"),
        ({"sampling": True, "seed": -1}, r"`seed` must be an integer in \[0, "),
        ({"sampling": True, "seed": 2**32}, "seed=4294967296"),
        ({"sampling": True, "seed": 1.0}, "seed=1.0"),
    ],
)  # fmt: skip
def test_arguments_are_validated(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.generate(SOURCE, max_length=3, **kwargs)


def test_limits_are_accepted(model):
    ids = model.generate(SOURCE, max_length=3, sampling=True, top_k=VOCAB,
                         top_p=1.0, seed=2**32 - 1, temperature=1,
                         jit_compile=False)  # fmt: skip
    assert ids.shape[0] == len(SOURCE)


def test_uniform_noise_is_in_the_open_interval_and_uniform():
    u = np.asarray(sampling.uniform_noise((200, 500), tf.constant([3, 0], tf.int64)))
    assert u.min() > 0 and u.max() < 1
    counts = np.histogram(u, bins=20, range=(0, 1))[0]
    assert stats.chisquare(counts).pvalue > 1e-3


def test_sampled_search_exports_with_core_ops(model):
    search = tf.function(
        lambda ids, key: sampling.sampled_search(
            model, ids, 5, key, top_k=4, top_p=0.9
        ),
        autograph=False,
    )
    concrete = search.get_concrete_function(
        tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([2], tf.int64)
    )
    graph_def = concrete.graph.as_graph_def()
    op_types = {node.op for node in graph_def.node}
    for library_function in graph_def.library.function:
        op_types |= {node.op for node in library_function.node_def}
    assert op_types <= set(dir(tf.raw_ops)), op_types - set(dir(tf.raw_ops))
    assert not {op for op in op_types if op.startswith("Xla")}
    assert "StatelessRandomUniformFullIntV2" in op_types
