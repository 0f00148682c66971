"""The XLA-compiled, bucketed search: in process (`Translator.translate_fast`,
`translate_all`, `evaluate_translator`) and as the exported `translate_xla`
and `translate_greedy_xla` signatures, with their TF Serving warm-up."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from num2words import num2words

from keras_transformer import Transformer
from keras_transformer import model_directory
from keras_transformer.evaluation import evaluate_translator
from keras_transformer.evaluation import translate_all
from keras_transformer.export import Translator
from keras_transformer.export import export_translator
from keras_transformer.export.saved_model import WARMUP_FILE
from keras_transformer.export.saved_model import XLA_WARMUP_FILE
from keras_transformer.export.translator import default_length_buckets

# Varied lengths: 1 to ~20 subword tokens, an empty one, and one cut at
# `max_input_tokens`.
SENTENCES = [
    "four hundred and two",
    "seventy",
    "",
    "one thousand nine hundred and ninety nine",
    "nine",
    "two hundred thousand three hundred and forty five and six and seven",
]


@pytest.fixture(scope="module")
def tiny(tokenizer):
    """An untrained model: its searches run into the length limit, where a
    bucketed search that stopped late would differ."""
    model = Transformer(vocabulary_size=tokenizer.vocab_size, num_layers=1,
                        d_model=32, num_heads=2, d_ff=64)  # fmt: skip
    return Translator(model, tokenizer, tokenizer, beam_size=3, max_input_tokens=16,
                      max_extra_length=5, batch_buckets=(1, 4),
                      length_buckets=(4, 8))  # fmt: skip


def _texts(outputs):
    return [t.decode("utf-8") for t in outputs["translations"].numpy()]


def _expected_shapes(translator, sentences):
    """The (batch bucket, length bucket) shapes a batch is searched in,
    computed from the token counts with NumPy."""
    counts = translator.count_source_tokens(tf.constant(sentences)).numpy()
    longest = min(int(counts.max()), translator.max_input_tokens)
    length = next(b for b in translator.length_buckets if b >= longest)
    fits = [b for b in translator.batch_buckets if b >= len(sentences)]
    return {(fits[0] if fits else translator.batch_buckets[-1], length)}


def test_buckets_and_their_validation(tiny, tokenizer):
    assert tiny.length_buckets == (4, 8, 16)
    assert default_length_buckets(256) == (16, 32, 64, 128, 256)
    assert default_length_buckets(10) == (10,)
    model = tiny.model
    for bad in ((), (0, 8), (2.5,), "8", (True,)):
        with pytest.raises(ValueError, match="batch_buckets"):
            Translator(model, tokenizer, tokenizer, batch_buckets=bad)
    with pytest.raises(ValueError, match="length_buckets"):
        Translator(model, tokenizer, tokenizer, length_buckets=(-1,))


@pytest.mark.parametrize("greedy", [False, True])
def test_fast_path_equals_translate_and_compiles_once_per_bucket(tiny, greedy):
    plain = tiny.translate_greedy if greedy else tiny.translate
    before = tiny.xla_compilations
    shapes = set()
    # One by one, then a batch of 6 (two chunks of 4) and a batch of 3.
    batches = [[s] for s in SENTENCES] + [SENTENCES, SENTENCES[:3]]
    for batch in batches:
        expected = plain(tf.constant(batch))
        fast = tiny.translate_fast(batch, greedy=greedy)
        assert _texts(fast) == _texts(expected)
        np.testing.assert_allclose(
            fast["scores"].numpy(), expected["scores"].numpy(), rtol=1e-4, atol=1e-4
        )
        shapes |= _expected_shapes(tiny, batch)
    assert tiny.xla_compilations - before == len(shapes)
    # Again: nothing new is compiled.
    for batch in batches:
        tiny.translate_fast(batch, greedy=greedy)
    assert tiny.xla_compilations - before == len(shapes)


def test_the_length_limit_is_the_sources_not_the_buckets(tiny):
    # An untrained model runs to the limit: source length + 5 tokens, not
    # length bucket + 5. The ids themselves, before detokenizing.
    source = tiny._xla.bucketed_source(tf.constant(["seventy"]))
    ids, _ = tiny._xla.eager[1](source["source_ids"], source["max_steps"])
    length = int(tiny.count_source_tokens(tf.constant(["seventy"]))[0])
    assert length < 4  # so the buffer is longer than the limit
    assert ids.shape[1] == 4 + 5  # the buffer of the length bucket 4
    generated = int(np.sum(ids.numpy()[0] != tiny.model.pad_id))
    assert generated == length + 5  # untrained: no EOS before the limit


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    return export_translator(tiny, tmp_path_factory.mktemp("export"))


def test_signatures_and_warmup_cover_each_bucket(tiny, exported):
    path = exported
    loaded = tf.saved_model.load(path)
    assert {"serving_default", "translate_greedy", "translate_xla",
            "translate_greedy_xla"} <= set(loaded.signatures)  # fmt: skip
    for name, plain in (("translate_xla", tiny.translate),
                        ("translate_greedy_xla", tiny.translate_greedy)):  # fmt: skip
        for batch in (SENTENCES, SENTENCES[1:2]):
            served = loaded.signatures[name](sentences=tf.constant(batch))
            assert _texts(served) == _texts(plain(tf.constant(batch)))
    # TF Serving's file warms up the signatures without XLA only (a server
    # without XLA would fail the load); the `_xla` file covers each bucket.
    assert len(list(tf.data.TFRecordDataset(os.path.join(path, WARMUP_FILE)))) == 2
    records = list(tf.data.TFRecordDataset(os.path.join(path, XLA_WARMUP_FILE)))
    from tensorflow_serving.apis import prediction_log_pb2

    covered = {}
    for record in records:
        request = prediction_log_pb2.PredictionLog.FromString(
            record.numpy()
        ).predict_log.request
        batch = [s.decode() for s in tf.make_ndarray(request.inputs["sentences"])]
        name = request.model_spec.signature_name
        if name.endswith("_xla"):
            shape = _expected_shapes(tiny, batch).pop()
            assert shape[0] == len(batch)
            covered.setdefault(name, set()).add(shape)
    buckets = {(b, n) for b in (1, 4) for n in (4, 8, 16)}
    assert covered == {"translate_xla": buckets, "translate_greedy_xla": buckets}
    assert len(records) == 2 + 2 * len(buckets)


def test_without_xla_only_the_xla_signatures_fail(exported):
    # What `tensorflow_model_server` does without
    # `--xla_cpu_compilation_enabled=true`: tensorflow::DisableXlaCompilation().
    path = exported
    script = textwrap.dedent(
        """
        import ctypes, os, sys
        import tensorflow as tf
        import tensorflow_text
        lib = os.path.join(os.path.dirname(tf.__file__), "libtensorflow_cc.so.2")
        ctypes.CDLL(lib)._ZN10tensorflow21DisableXlaCompilationEv()
        loaded = tf.saved_model.load(sys.argv[1])
        for name in ("serving_default", "translate_greedy"):
            loaded.signatures[name](sentences=tf.constant(["seventy"]))
        for name in ("translate_xla", "translate_greedy_xla"):
            try:
                loaded.signatures[name](sentences=tf.constant(["seventy"]))
            except tf.errors.InternalError as error:
                print(name, "XLA compilation disabled" in str(error))
        """
    )
    result = subprocess.run([sys.executable, "-c", script, path],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [
        "translate_xla", "True", "translate_greedy_xla", "True"
    ]  # fmt: skip


def test_sampling_translator_has_greedy_xla_only(tiny, tokenizer):
    sampler = Translator(tiny.model, tokenizer, tokenizer, beam_size=1,
                         sampling=True, seed=3, max_input_tokens=16)  # fmt: skip
    assert "translate_xla" not in sampler.signatures()
    assert "translate_greedy_xla" in sampler.signatures()
    # `translate_fast` samples with `translate`: the same draws as a twin.
    twin = Translator(tiny.model, tokenizer, tokenizer, beam_size=1,
                      sampling=True, seed=3, max_input_tokens=16)  # fmt: skip
    assert _texts(sampler.translate_fast(SENTENCES)) == _texts(
        twin.translate(tf.constant(SENTENCES))
    )


def test_evaluate_translator_uses_the_fast_path(tiny, tokenizer, monkeypatch):
    calls = []
    fast = Translator.translate_fast

    def counted(self, sentences, greedy=False):
        calls.append(len(sentences))
        return fast(self, sentences, greedy)

    monkeypatch.setattr(Translator, "translate_fast", counted)
    pairs = [(s, s) for s in SENTENCES]
    scores = evaluate_translator(
        tiny.model, tokenizer, tokenizer, pairs, beam_size=2, batch_size=4
    )
    assert calls == [4, 2]
    plain = Translator(tiny.model, tokenizer, tokenizer, beam_size=2)
    assert scores["hypotheses"] == translate_all(plain, SENTENCES, 4, xla=False)


def test_small_model_fast_path_equals_translate(small_model_dir):
    model, source, target = model_directory.load_model_and_vocabularies(small_model_dir)
    sentences = [num2words(n) for n in (3, 17, 40, 115, 999, 12345, 777777)]
    for beam in (1, 4):
        translator = Translator(model, source, target, beam_size=beam)
        plain = translate_all(translator, sentences, batch_size=4, xla=False)
        assert translator.xla_compilations == 0
        fast = translate_all(translator, sentences, batch_size=4)
        assert fast == plain
        shapes = _expected_shapes(translator, sentences[:4])
        shapes |= _expected_shapes(translator, sentences[4:])
        assert {shape[0] for shape in shapes} == {8}  # batches of 4 and 3
        assert translator.xla_compilations == len(shapes)


def test_cli_export_xla_warmup(small_model_dir, tmp_path, capsys):
    from keras_transformer import cli

    output = tmp_path / "export"
    assert cli.main(["export", "--model", str(small_model_dir), "--output",
                     str(output), "--xla-warmup"]) == 0  # fmt: skip
    served = os.path.join(output, "1", WARMUP_FILE)
    xla = os.path.join(output, "1", XLA_WARMUP_FILE)
    # With --xla-warmup, the file TF Serving reads is the one with every bucket.
    assert (
        len(list(tf.data.TFRecordDataset(served)))
        == len(list(tf.data.TFRecordDataset(xla)))
        > 2
    )
    assert cli.main(["export", "--model", str(small_model_dir), "--format",
                     "ctranslate2", "--xla-warmup", "--output",
                     str(tmp_path / "ct2")]) == 2  # fmt: skip
    assert "--xla-warmup: applies to --format saved_model" in capsys.readouterr().err
