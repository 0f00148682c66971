"""examples/custom_models/decoder_only_lm.py: cached generation, round trip."""

import keras
import numpy as np
import pytest
from scipy import stats

from tests.examples import load_example

example = load_example("custom_models/decoder_only_lm")

TINY = [
    "--num-sequences", "64", "--sequence-length", "24", "--epochs", "1",
    "--steps-per-epoch", "4", "--batch-size", "8", "--num-layers", "2",
    "--d-model", "16", "--num-heads", "2", "--d-ff", "32",
    "--max-new-tokens", "6", "--no-jit-compile", "--verbose", "0",
    "--sampling", "--temperature", "0.8", "--top-k", "5",
]  # fmt: skip
PROMPTS = np.array(
    [
        example.encode("one , two , three"),
        example.encode("ninety eight , ninety nine"),
    ],
    "int32",
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("lm")
    return example.main(["--output-dir", str(output_dir), *TINY])


def test_number_words_and_vocabulary():
    assert example.number_words(0) == "zero"
    assert example.number_words(15) == "fifteen"
    assert example.number_words(40) == "forty"
    assert example.number_words(342) == "three hundred forty two"
    assert example.number_words(900) == "nine hundred"
    text = example.counting_text(99, 3)
    assert text == "ninety nine , one hundred , one hundred one"
    ids = example.encode(text, add_eos=True)
    assert ids[0] == 2 and ids[-1] == 3
    assert example.decode(ids + [0, 0]) == text
    with pytest.raises(ValueError):
        example.number_words(1000)


def test_trains_without_cross_attention(trained):
    model = trained["model"]
    assert np.isfinite(trained["history"]["loss"]).all()
    assert not model.decoder.has_cross_attention
    assert trained["generated_ids"].shape == (1, 6)
    # The output projection is the (tied) embedding matrix.
    assert len(model.embedding.weights) == 1


def test_cached_generation_equals_recompute(trained):
    model = trained["model"]
    for jit_compile in (False, True):
        ids, logits = model.generate(
            PROMPTS, 8, jit_compile=jit_compile, return_logits=True
        )
        reference_ids, reference_logits = model.generate_without_cache(
            PROMPTS, 8, return_logits=True
        )
        assert ids.shape == (2, 8) and ids.dtype == np.int32
        np.testing.assert_array_equal(ids, reference_ids)
        np.testing.assert_allclose(logits, reference_logits, atol=1e-4)
    # Rows are independent: a batch of one gives the same continuation.
    np.testing.assert_array_equal(model.generate(PROMPTS[1:], 8, False), ids[1:])


def test_stops_at_eos():
    keras.utils.set_random_seed(0)
    model = example.DecoderOnlyLM(len(example.VOCABULARY), 1, 8, 2, 16, dropout=0.0)
    model.build()
    # Make EOS the only likely next token: a huge EOS embedding row.
    embeddings = np.asarray(model.embedding.embeddings).copy()
    embeddings[3] *= 100.0
    model.embedding.embeddings.assign(embeddings)
    ids = model.generate(PROMPTS, 5, jit_compile=False)
    reference = model.generate_without_cache(PROMPTS, 5)
    np.testing.assert_array_equal(ids, reference)
    finished = [row for row in ids if (row[:-1] == 3).any()]
    assert finished, ids  # some row stopped early ...
    for row in finished:
        eos = np.flatnonzero(row == 3)[0]
        assert (row[eos + 1 :] == 0).all()  # ... and is padded after EOS
    assert (ids != 0).all(axis=1).any()  # while another kept going


def test_keras_round_trip(trained):
    model = trained["model"]
    loaded = keras.saving.load_model(trained["model_path"])  # safe mode
    assert type(loaded) is example.DecoderOnlyLM
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(
        np.asarray(loaded(PROMPTS, training=False)),
        np.asarray(model(PROMPTS, training=False)),
    )
    np.testing.assert_array_equal(
        loaded.generate(PROMPTS, 6, jit_compile=False),
        model.generate(PROMPTS, 6, jit_compile=False),
    )


def test_prompts_must_not_be_padded(trained):
    with pytest.raises(ValueError, match="padding"):
        trained["model"].generate([[2, 7, 0]], 3)


def test_cached_search_uses_the_librarys_cache_dtype(monkeypatch):
    from keras_transformer.decoding.generation import resolve_cache_dtype

    model = example.DecoderOnlyLM(
        len(example.VOCABULARY), 1, 8, 2, 16, dropout=0.0, dtype="mixed_bfloat16"
    )
    model.build()
    dtypes = []
    init_cache = model.decoder.init_cache

    def recording_init_cache(*args, dtype=None, **kwargs):
        dtypes.append(dtype)
        return init_cache(*args, dtype=dtype, **kwargs)

    monkeypatch.setattr(model.decoder, "init_cache", recording_init_cache)
    for jit_compile in (False, True):
        ids = model.generate(PROMPTS, 3, jit_compile=jit_compile)
        assert ids.shape == (2, 3)
    assert dtypes == [
        resolve_cache_dtype(model, jit_compile=False),
        resolve_cache_dtype(model, jit_compile=True),
    ]


def test_main_prints_a_sampled_continuation(trained):
    model = trained["model"]
    expected = example.continue_text(
        model, "twenty one , twenty two ,", 6, jit_compile=False, sampling=True,
        temperature=0.8, top_k=5, seed=0,
    )  # fmt: skip
    assert trained["sampled"] == expected


def test_sampling_limits_seeds_and_xla(trained):
    model = trained["model"]
    prompts = np.repeat(PROMPTS, 4, axis=0)
    greedy = model.generate(prompts, 8, jit_compile=False)
    assert not np.isin(greedy, [0, 2]).any()  # greedy never chose PAD or BOS
    top_1 = model.generate(prompts, 8, False, sampling=True, top_k=1, seed=1)
    np.testing.assert_array_equal(top_1, greedy)
    cold = model.generate(prompts, 8, False, sampling=True, temperature=1e-4)
    np.testing.assert_array_equal(cold, greedy)
    hot = {"sampling": True, "temperature": 2.0, "seed": 5}
    first = model.generate(prompts, 8, False, **hot)
    np.testing.assert_array_equal(model.generate(prompts, 8, False, **hot), first)
    np.testing.assert_array_equal(model.generate(prompts, 8, True, **hot), first)
    assert not np.array_equal(
        model.generate(prompts, 8, False, **hot | {"seed": 6}), first
    )
    with pytest.raises(ValueError, match="apply only with sampling=True"):
        model.generate(prompts, 8, top_k=3)
    with pytest.raises(ValueError, match="at most the vocabulary size"):
        model.generate(prompts, 8, sampling=True, top_k=1000)


def test_sampled_first_tokens_follow_the_model(trained):
    """Chi-square: 3,000 draws of the token after one prompt."""
    model = trained["model"]
    draws, temperature, top_p = 3000, 1.5, 0.9
    prompts = np.repeat(PROMPTS[:1], draws, axis=0)
    ids = model.generate(prompts, 1, jit_compile=False, sampling=True, seed=3,
                         temperature=temperature, top_p=top_p)  # fmt: skip
    logits = np.asarray(model(PROMPTS[:1], training=False), "float64")[0, -1]
    logits = (logits - logits.max()) / temperature
    logits[[0, 2]] = -np.inf  # PAD and BOS are never drawn
    probs = np.exp(logits) / np.exp(logits).sum()
    order = np.argsort(-probs, kind="stable")
    before = np.cumsum(probs[order]) - probs[order]
    kept = np.zeros(len(probs), bool)
    kept[order[before < top_p]] = True
    probs = np.where(kept, probs, 0) / probs[kept].sum()
    counts = np.bincount(ids[:, 0], minlength=len(probs))
    assert counts[~kept].sum() == 0 and kept.sum() >= 3
    assert stats.chisquare(counts[kept], draws * probs[kept]).pvalue > 1e-3
