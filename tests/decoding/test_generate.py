import importlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transformer import Transformer
from keras_transformer.decoding import beam_search
from keras_transformer.decoding import greedy_search
from keras_transformer.special_tokens import BOS_ID
from keras_transformer.special_tokens import EOS_ID
from keras_transformer.special_tokens import PAD_ID

generate_module = importlib.import_module("keras_transformer.decoding.generation")

VOCAB = 24
SOURCE = np.array([[5, 6, 7, 8, 9, 3], [10, 11, 12, 3, 0, 0], [13, 3, 0, 0, 0, 0]])


def _copy_batches(rng, count=64, max_len=6):
    """Copy task: target = source tokens; a tiny model learns it quickly."""
    lengths = rng.integers(1, max_len, count)
    source = np.zeros((count, max_len + 1), "int32")
    target_in = np.zeros((count, max_len + 1), "int32")
    target_out = np.zeros((count, max_len + 1), "int32")
    for row, length in enumerate(lengths):
        tokens = rng.integers(4, VOCAB, length)
        source[row, : length + 1] = [*tokens, EOS_ID]
        target_in[row, : length + 1] = [BOS_ID, *tokens]
        target_out[row, : length + 1] = [*tokens, EOS_ID]
    return {"source": source, "target": target_in}, target_out


@pytest.fixture(scope="module")
def trained_model():
    keras.utils.set_random_seed(7)
    model = Transformer(
        vocabulary_size=VOCAB, num_layers=2, d_model=32, num_heads=4, d_ff=64,
        dropout=0.0,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    inputs, targets = _copy_batches(rng, count=2048)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(inputs, targets, batch_size=64, epochs=4, verbose=0)
    return model


def _reference_greedy(model, source, max_length):
    """No cache: re-runs the full model on the whole prefix at every step."""
    prefix = np.full((len(source), 1), BOS_ID, "int32")
    finished = np.zeros(len(source), bool)
    for _ in range(max_length):
        logits = np.array(model({"source": source, "target": prefix}))[:, -1]
        logits[:, [PAD_ID, BOS_ID]] = -np.inf  # never generated
        next_ids = np.where(finished, PAD_ID, logits.argmax(-1))
        prefix = np.concatenate([prefix, next_ids[:, None]], axis=1)
        finished |= next_ids == EOS_ID
        if finished.all():
            break
    return prefix[:, 1:]


def _sequence_log_prob(model, source, ids):
    """Teacher-forced log P(ids | source), summed up to and including EOS."""
    target_in = np.concatenate([np.full((len(ids), 1), BOS_ID), ids[:, :-1]], 1)
    logits = np.asarray(model({"source": source, "target": target_in}), "float64")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    token = np.take_along_axis(log_probs, ids[..., None], -1)[..., 0]
    return (token * (ids != PAD_ID)).sum(-1)


def _gnmt(length, alpha=0.6):
    return ((5.0 + length) / 6.0) ** alpha


@pytest.mark.parametrize("untrained", [False, True])
def test_cached_greedy_equals_no_cache_reference(trained_model, untrained):
    model = trained_model
    if untrained:
        model = Transformer(vocabulary_size=VOCAB, num_layers=2, d_model=16,
                            num_heads=2, d_ff=32)  # fmt: skip
    expected = _reference_greedy(model, SOURCE, max_length=9)
    actual = np.asarray(model.generate(SOURCE, max_length=9))
    width = max(expected.shape[1], actual.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1])))
    np.testing.assert_array_equal(pad(actual), pad(expected))


def test_trained_model_copies(trained_model):
    ids = np.asarray(trained_model.generate(SOURCE))
    np.testing.assert_array_equal(ids[0, :6], SOURCE[0])
    np.testing.assert_array_equal(ids[1, :4], SOURCE[1, :4])
    assert (ids[1, 4:] == PAD_ID).all()


def test_beam_of_one_equals_greedy(trained_model):
    source = keras.ops.convert_to_tensor(SOURCE, "int32")
    greedy = greedy_search(trained_model, source, 10)
    beam = beam_search(trained_model, source, 10, beam_size=1, alpha=0.0)
    np.testing.assert_array_equal(beam["ids"][:, 0], greedy["ids"])
    np.testing.assert_allclose(beam["scores"][:, 0], greedy["scores"], atol=1e-4)


def test_beam_search_is_at_least_as_probable_as_greedy(trained_model):
    rng = np.random.default_rng(3)
    inputs, _ = _copy_batches(rng, count=16)
    source = inputs["source"]
    greedy = np.asarray(trained_model.generate(source, max_length=10))
    beam = trained_model.generate(
        source, max_length=10, beam_size=4, return_scores=True
    )
    greedy_lengths = (greedy != PAD_ID).sum(-1)
    greedy_scores = _sequence_log_prob(trained_model, source, greedy) / _gnmt(
        greedy_lengths
    )
    assert np.all(np.asarray(beam["scores"]) >= greedy_scores - 1e-4)
    # The beam's own score is its sequence's length-penalized log-probability.
    beam_ids = np.asarray(beam["ids"])
    rescored = _sequence_log_prob(trained_model, source, beam_ids) / _gnmt(
        (beam_ids != PAD_ID).sum(-1)
    )
    np.testing.assert_allclose(beam["scores"], rescored, atol=1e-3)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_xla_and_eager_graph_agree(trained_model, beam_size):
    kwargs = dict(max_length=8, beam_size=beam_size, return_scores=True)
    xla = trained_model.generate(SOURCE, jit_compile=True, **kwargs)
    graph = trained_model.generate(SOURCE, jit_compile=False, **kwargs)
    np.testing.assert_array_equal(xla["ids"], graph["ids"])
    np.testing.assert_allclose(xla["scores"], graph["scores"], atol=1e-4)


def _graph_ops(function, *args):
    graph = function.get_concrete_function(*args).graph.as_graph_def()
    ops = {node.op for node in graph.node}
    for library_function in graph.library.function:
        ops |= {node.op for node in library_function.node_def}
    return ops


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"num_key_value_heads": 1},
        {"num_heads": 4, "num_key_value_heads": 2},
        {"position_encoding": "rotary"},
        {"position_encoding": "relative", "max_relative_position": 3},
    ],
    ids=lambda v: "-".join(map(str, v.values())) or "mha",
)
def test_in_place_xla_and_core_op_caches_give_identical_ids(variant):
    # generate(jit_compile=True) writes the caches in place with XLA's
    # dynamic-update-slice; jit_compile=False (and the exported graph) with
    # the core InplaceUpdate op into buffers each run allocates (Empty), and
    # reads only the written positions. Same ids, greedy and beam, on every
    # run of the same graph.
    keras.utils.set_random_seed(11)
    config = dict(num_layers=2, d_model=16, num_heads=2, d_ff=32, dropout=0.0)
    model = Transformer(vocabulary_size=VOCAB, **{**config, **variant})
    for beam_size in (1, 3):
        kwargs = dict(max_length=10, beam_size=beam_size, return_scores=True)
        xla = model.generate(SOURCE, jit_compile=True, **kwargs)
        for _ in range(2):
            graph = model.generate(SOURCE, jit_compile=False, **kwargs)
            np.testing.assert_array_equal(xla["ids"], graph["ids"])
            np.testing.assert_allclose(xla["scores"], graph["scores"], atol=1e-4)
    source = tf.constant(SOURCE, tf.int32)
    for key, function in model._generate_functions.items():
        ops = _graph_ops(function, source)
        jit_compile = key[-1]
        assert ("XlaDynamicUpdateSlice" in ops) == jit_compile, key
        assert ("InplaceUpdate" in ops) != jit_compile, key
        if not jit_compile:
            assert not {op for op in ops if op.startswith("Xla")}


def test_n_best_is_sorted_and_distinct(trained_model):
    out = trained_model.generate(
        SOURCE, beam_size=4, num_return_sequences=3, return_scores=True
    )
    scores = np.asarray(out["scores"])
    assert out["ids"].shape[:2] == (3, 3)
    assert np.all(np.diff(scores, axis=1) <= 0)
    ids = np.asarray(out["ids"])
    for row in ids:
        assert len({tuple(r) for r in row}) == 3


def test_attention_weights_for_alignment(trained_model):
    out = trained_model.generate(SOURCE, return_attention=True)
    attention, ids = np.asarray(out["attention"]), np.asarray(out["ids"])
    assert attention.shape == ids.shape + (SOURCE.shape[1],)
    real = ids != PAD_ID
    np.testing.assert_allclose(attention.sum(-1)[real], 1.0, atol=1e-5)
    np.testing.assert_array_equal(attention[1][:, 4:], 0.0)  # source padding
    beam = trained_model.generate(SOURCE, beam_size=3, return_attention=True)
    assert beam["attention"].shape == beam["ids"].shape + (SOURCE.shape[1],)


def test_default_max_length_is_source_plus_50():
    model = Transformer(vocabulary_size=VOCAB, num_layers=1, d_model=16,
                        num_heads=2, d_ff=32)  # fmt: skip
    out = model.generate(SOURCE[:1, :2], jit_compile=False, return_scores=True)
    assert out["ids"].shape[1] <= 52


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"beam_size": 0}, "beam_size"),
        ({"beam_size": 2, "num_return_sequences": 3}, "num_return_sequences=3"),
        ({"beam_size": 20}, "vocabulary"),
        ({"max_length": -1}, "max_length"),
    ],
)
def test_invalid_arguments(kwargs, message):
    model = Transformer(vocabulary_size=VOCAB, num_layers=1, d_model=16,
                        num_heads=2, d_ff=32)  # fmt: skip
    with pytest.raises(ValueError, match=message):
        model.generate(SOURCE, **kwargs)


def test_rejects_bad_source():
    model = Transformer(vocabulary_size=VOCAB, num_layers=1, d_model=16,
                        num_heads=2, d_ff=32)  # fmt: skip
    with pytest.raises(ValueError, match="integer ids"):
        model.generate(SOURCE.astype("float32"))
    with pytest.raises(ValueError, match="integer ids"):
        model.generate(SOURCE[0])


@pytest.mark.parametrize("jit_compile", [False, True])
def test_beam_caches_with_ancestry_equal_caches_reordered_every_step(
    trained_model, jit_compile
):
    # Two independent implementations of one search: the library's beam
    # caches (never moved, read through the ancestry table) and one cache
    # row per beam, every buffer gathered into the new beam order after
    # each step (what beam search does when a cache has no "ancestry").
    source = keras.ops.convert_to_tensor(SOURCE, "int32")
    model = trained_model

    def search():
        return tf.function(
            lambda s: beam_search(
                model, s, 8, beam_size=3, num_return_sequences=3,
                return_attention=True,
            ),
            jit_compile=jit_compile,
            autograph=False,
        )(source)  # fmt: skip

    library = search()
    per_row = lambda outputs, length, beam_size=1: model.decoder.init_cache(
        keras.ops.shape(outputs)[0] * beam_size, length, outputs
    )
    model.init_cache = per_row
    try:
        reordered = search()
    finally:
        del model.init_cache  # the class method again
    np.testing.assert_array_equal(library["ids"], reordered["ids"])
    np.testing.assert_allclose(library["scores"], reordered["scores"], atol=1e-5)
    np.testing.assert_allclose(library["attention"], reordered["attention"], atol=1e-5)


def _tiny_model(policy="float32", **overrides):
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(3)
    config = dict(num_layers=2, d_model=16, num_heads=2, d_ff=32, dropout=0.0)
    return Transformer(vocabulary_size=VOCAB, **{**config, **overrides})


def test_cache_dtype_default(monkeypatch):
    resolve = generate_module.resolve_cache_dtype
    # None: the model's compute dtype (`init_cache` is called without one).
    assert resolve(_tiny_model("float32"), jit_compile=True) is None
    mixed = _tiny_model("mixed_bfloat16")
    monkeypatch.setattr(generate_module, "cpu_tuned_paths", lambda: True)
    # XLA:CPU computes 16-bit dots in float32: float32 caches.
    assert resolve(mixed, jit_compile=True) == "float32"
    assert resolve(_tiny_model("mixed_float16"), jit_compile=True) == "float32"
    # Without XLA (an exported Translator's graph) and on accelerators: the
    # compute dtype.
    assert resolve(mixed, jit_compile=False) is None
    monkeypatch.setattr(generate_module, "cpu_tuned_paths", lambda: False)
    assert resolve(mixed, jit_compile=True) is None
    assert resolve(mixed, jit_compile=True, cache_dtype="float32") == "float32"
    with pytest.raises(ValueError, match="Received: cache_dtype=int32"):
        resolve(mixed, jit_compile=True, cache_dtype="int32")


def test_generate_under_mixed_bfloat16_uses_float32_caches_on_cpu(monkeypatch):
    monkeypatch.setattr(generate_module, "cpu_tuned_paths", lambda: True)
    model = _tiny_model("mixed_bfloat16")
    model.generate(SOURCE, max_length=4)
    model.generate(SOURCE, max_length=4, jit_compile=False)
    # (max_length, beam, alpha, n, attention, cache dtype, jit_compile)
    assert {(key[5], key[6]) for key in model._generate_functions} == {
        ("float32", True),
        (None, False),
    }


@pytest.mark.parametrize("beam_size", [1, 3])
def test_generate_under_mixed_bfloat16_with_float32_caches(trained_model, beam_size):
    # The trained copy model's weights under mixed_bfloat16: clear argmax
    # margins, so the caches' rounding cannot flip a token. (The attention
    # variants with float32 caches: tests/models/test_transformer.py.)
    keras.config.set_dtype_policy("mixed_bfloat16")
    config = dict(num_layers=2, d_model=32, num_heads=4, d_ff=64, dropout=0.0)
    model = Transformer(vocabulary_size=VOCAB, **config)
    model.build()
    model.set_weights(trained_model.get_weights())
    kwargs = dict(max_length=8, beam_size=beam_size, return_scores=True)
    runs = {
        (cache_dtype, jit): model.generate(
            SOURCE, cache_dtype=cache_dtype, jit_compile=jit, **kwargs
        )
        for cache_dtype in ("float32", "bfloat16")
        for jit in (True, False)
    }
    reference = runs[("bfloat16", False)]  # what an exported Translator runs
    for out in runs.values():
        np.testing.assert_array_equal(out["ids"], reference["ids"])
        np.testing.assert_allclose(out["scores"], reference["scores"], atol=0.1)
    # And it still translates: it copies the source.
    np.testing.assert_array_equal(runs[("float32", True)]["ids"][0, :6], SOURCE[0])
