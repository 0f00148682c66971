"""CTranslate2 export: the converted model computes what the Keras model does.

References are independent of the conversion: the Keras model's own
forward pass (token log-probabilities, with PAD and BOS removed in numpy)
and `model.generate`'s ids, against CTranslate2's `score_batch` and
`translate_batch` on the exported directory.
"""

import os
import sys

import numpy as np
import pytest
import sacrebleu
import tensorflow as tf

ctranslate2 = pytest.importorskip("ctranslate2")

from keras_transformer import Transformer  # noqa: E402
from keras_transformer import cli  # noqa: E402
from keras_transformer import data  # noqa: E402
from keras_transformer.export import CTranslate2Translator  # noqa: E402
from keras_transformer.export import is_ctranslate2_dir  # noqa: E402
from keras_transformer.export import to_ctranslate2  # noqa: E402
from keras_transformer.model_directory import load_model_and_vocabularies  # noqa: E402
from keras_transformer.special_tokens import BOS_ID  # noqa: E402
from keras_transformer.special_tokens import EOS_ID  # noqa: E402
from keras_transformer.special_tokens import PAD_ID  # noqa: E402
from keras_transformer.text import build_vocabularies  # noqa: E402

SENTENCES = ["one hundred and five", "twenty-two", "nine hundred and ninety-nine"]
TARGETS = ["einhundertfünf", "zweiundzwanzig", "neunhundertneunundneunzig"]


# --- references ------------------------------------------------------------


def _source_ids(tokenizer, sentences):
    """What the package's pipeline feeds the encoder: pieces, EOS, padding."""
    rows = [tokenizer.tokenize(s).numpy().tolist() + [EOS_ID] for s in sentences]
    width = max(len(row) for row in rows)
    return np.array([row + [PAD_ID] * (width - len(row)) for row in rows], "int32")


def _strip(ids):
    """Generated ids up to (not including) EOS; padding dropped."""
    ids = [int(i) for i in ids if i != PAD_ID]
    return ids[: ids.index(EOS_ID)] if EOS_ID in ids else ids


def _generate(model, tokenizer, sentences, beam_size=1, length_penalty=0.0):
    ids = model.generate(
        _source_ids(tokenizer, sentences),
        beam_size=beam_size,
        length_penalty=length_penalty,
        jit_compile=False,
    )
    return [_strip(row) for row in np.asarray(ids)]


def _ct2_ids(translator, sentences, beam_size=1, length_penalty=0.0):
    """Greedy/beam ids from the export, tokenized by `CTranslate2Translator`."""
    pieces = translator.translate_tokens(
        translator.tokenize(sentences), beam_size, length_penalty
    )
    to_id = translator.target_processor.piece_to_id
    return [[to_id(piece) for piece in row] for row in pieces]


def _reference_log_probs(model, source_ids, targets):
    """Keras log-probabilities of each `targets[i] + [EOS]` (lists of ids),
    PAD and BOS renormalized away (the export bans them with a bias before
    its softmax), for the padded batch `source_ids`."""
    width = max(len(target) for target in targets) + 1
    target_in = np.array(
        [[BOS_ID] + t + [PAD_ID] * (width - 1 - len(t)) for t in targets], "int32"
    )
    logits = np.array(model({"source": source_ids, "target": target_in}))
    logits = logits.astype("float64")
    logits[..., [PAD_ID, BOS_ID]] = -np.inf
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    return [
        row[np.arange(len(target) + 1), target + [EOS_ID]]
        for row, target in zip(log_probs, targets)
    ]


def _check_scores(model, source_tokenizer, target_tokenizer, path):
    """CTranslate2's token log-probabilities equal the Keras model's."""
    translator = CTranslate2Translator(path)
    source_pieces = translator.tokenize(SENTENCES)
    target_pieces = [
        translator.target_processor.encode(t, out_type=str) for t in TARGETS
    ]
    results = translator.translator.score_batch(source_pieces, target_pieces)
    expected = _reference_log_probs(
        model,
        _source_ids(source_tokenizer, SENTENCES),
        [target_tokenizer.tokenize(t).numpy().tolist() for t in TARGETS],
    )
    for result, reference in zip(results, expected):
        np.testing.assert_allclose(result.log_probs, reference, atol=2e-5)
    return translator


# --- tiny untrained models: every layout choice ------------------------------


@pytest.fixture(scope="module")
def vocabularies():
    pairs = list(data.parse_spec("demo", split="train"))[:300]
    sources, targets = [p[0] for p in pairs], [p[1] for p in pairs]
    shared = build_vocabularies(sources, targets, 60, shared=True)
    separate = build_vocabularies(sources, targets, 50, shared=False)
    return {"shared": shared, "separate": separate}


def _random_model(source_tokenizer, target_tokenizer, **config):
    separate = source_tokenizer is not target_tokenizer
    model = Transformer(
        vocabulary_size=source_tokenizer.vocab_size,
        target_vocabulary_size=target_tokenizer.vocab_size if separate else None,
        num_layers=2,
        d_model=32,
        num_heads=4,
        d_ff=64,
        **config,
    )
    model.build()
    # Non-trivial LayerNorm parameters and biases (zeros and ones at init).
    rng = np.random.default_rng(0)
    for variable in model.weights:
        name = variable.path.split("/")[-1]
        if name in ("gamma", "beta", "bias"):
            noise = rng.normal(0.0, 0.3, variable.shape).astype("float32")
            variable.assign(np.asarray(variable) + noise)
    return model


VARIANTS = {
    # Pre-LN (final LayerNorms), two vocabularies, an untied output
    # projection, GELU and a LayerNorm epsilon that makes a difference.
    "pre_ln_separate_untied": (
        "separate",
        {
            "normalize_first": True,
            "tie_output_embeddings": False,
            "activation": "gelu",
            "layer_norm_epsilon": 1e-2,
        },
    ),
    # Learned positions and grouped-query attention (2 key/value heads).
    "learned_gqa": (
        "shared",
        {
            "position_encoding": "learned",
            "max_positions": 128,
            "num_key_value_heads": 2,
        },
    ),
    # Shaw et al. relative positions, multi-query attention, pre-LN.
    "relative_mqa_pre_ln": (
        "separate",
        {
            "position_encoding": "relative",
            "max_relative_position": 3,
            "num_key_value_heads": 1,
            "normalize_first": True,
        },
    ),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_scores_and_greedy_ids_match(variant, vocabularies, tmp_path):
    vocabulary, config = VARIANTS[variant]
    source_tokenizer, target_tokenizer = vocabularies[vocabulary]
    model = _random_model(source_tokenizer, target_tokenizer, dropout=0.0, **config)
    path = to_ctranslate2(model, source_tokenizer, target_tokenizer, tmp_path / "ct2")
    translator = _check_scores(model, source_tokenizer, target_tokenizer, path)
    assert _ct2_ids(translator, SENTENCES) == _generate(
        model, source_tokenizer, SENTENCES
    )
    shared = vocabulary == "shared"
    assert os.path.exists(os.path.join(path, "shared.model")) == shared
    assert os.path.exists(os.path.join(path, "shared_vocabulary.json")) == shared


def test_vocabulary_and_special_tokens(vocabularies, tmp_path):
    source_tokenizer, target_tokenizer = vocabularies["separate"]
    model = _random_model(source_tokenizer, target_tokenizer)
    path = to_ctranslate2(model, source_tokenizer, target_tokenizer, tmp_path / "ct2")
    import json

    with open(os.path.join(path, "target_vocabulary.json"), encoding="utf-8") as f:
        pieces = json.load(f)
    ids = list(range(target_tokenizer.vocab_size))
    expected = [p.decode() for p in target_tokenizer.id_to_piece(ids).numpy()]
    assert pieces == expected  # SentencePiece id order
    assert pieces[:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert config["add_source_eos"] is True
    assert config["decoder_start_token"] == "<s>"
    assert config["eos_token"] == "</s>"
    assert config["layer_norm_epsilon"] == pytest.approx(model.layer_norm_epsilon)
    # The translator's pieces are the pipeline's ids, without EOS (added by
    # CTranslate2, see `add_source_eos`).
    translator = CTranslate2Translator(path)
    for sentence, pieces_row in zip(SENTENCES, translator.tokenize(SENTENCES)):
        ids_row = [translator.source_processor.piece_to_id(p) for p in pieces_row]
        assert ids_row == source_tokenizer.tokenize(sentence).numpy().tolist()
    # Cut as the SavedModel translator cuts: max_input_tokens, EOS included.
    assert [len(row) for row in translator.tokenize(SENTENCES, 3)] == [2, 2, 2]
    with pytest.raises(ValueError, match="max_input_tokens"):
        translator.translate(SENTENCES, max_input_tokens=1)
    with pytest.raises(ValueError, match="beam_size"):
        translator.translate(SENTENCES, beam_size=0)


def test_pad_and_bos_are_never_generated(vocabularies, tmp_path):
    tokenizer, _ = vocabularies["shared"]
    model = _random_model(
        tokenizer, tokenizer, normalize_first=True, tie_output_embeddings=False
    )
    # Pre-LN decoder output = the final LayerNorm's beta at every position;
    # output columns aligned with it make PAD, then BOS, the largest logits.
    beta = np.random.default_rng(1).normal(size=model.d_model).astype("float32")
    model.decoder.final_layer_norm.gamma.assign(np.zeros_like(beta))
    model.decoder.final_layer_norm.beta.assign(beta)
    kernel = np.zeros((model.d_model, tokenizer.vocab_size), "float32")
    kernel[:, PAD_ID], kernel[:, BOS_ID], kernel[:, 7] = 3 * beta, 2 * beta, beta
    model.target_embedding.output_kernel.assign(kernel)
    source_ids = _source_ids(tokenizer, SENTENCES[:1])
    target_in = np.array([[BOS_ID]], "int32")
    logits = np.asarray(model({"source": source_ids, "target": target_in}))
    assert np.argsort(logits[0, 0])[-3:].tolist() == [7, BOS_ID, PAD_ID]

    path = to_ctranslate2(model, tokenizer, tokenizer, tmp_path / "ct2")
    translator = CTranslate2Translator(path)
    for beam_size in (1, 3):
        hypotheses = translator.translate_tokens(
            translator.tokenize(SENTENCES), beam_size=beam_size
        )
        assert all(set(row) == {tokenizer.id_to_piece(7).numpy().decode()}
                   for row in hypotheses)  # fmt: skip


def test_refuses_what_ctranslate2_cannot_express(vocabularies, tmp_path):
    tokenizer, _ = vocabularies["shared"]
    model = Transformer(
        vocabulary_size=tokenizer.vocab_size, num_layers=1, d_model=16,
        num_heads=2, d_ff=32, position_encoding="rotary",
    )  # fmt: skip
    with pytest.raises(ValueError, match="position_encoding='rotary'"):
        to_ctranslate2(model, tokenizer, tokenizer, tmp_path / "rotary")
    assert not os.path.exists(tmp_path / "rotary")

    other, _ = vocabularies["separate"]
    model = Transformer(
        vocabulary_size=tokenizer.vocab_size, num_layers=1, d_model=16,
        num_heads=2, d_ff=32,
    )  # fmt: skip
    with pytest.raises(ValueError, match="source tokenizer has 50 pieces"):
        to_ctranslate2(model, other, other, tmp_path / "mismatch")
    with pytest.raises(ValueError, match="quantization"):
        to_ctranslate2(model, tokenizer, tokenizer, tmp_path / "q", "int3")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty directory"):
        to_ctranslate2(model, tokenizer, tokenizer, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


# --- a trained demo model ----------------------------------------------------


@pytest.fixture(scope="module")
def demo_model(demo_model_dir, tmp_path_factory):
    """The demo model of tests/conftest.py after 5 of its 12 epochs (125
    steps on `demo:999`): it gets most held-out numbers right, not all
    (measured: char BLEU 95, 68 of 90 exact), a real test for int8 weights."""
    model, source_tokenizer, target_tokenizer = load_model_and_vocabularies(
        demo_model_dir
    )
    model.load_weights(demo_model_dir / "checkpoints" / "epoch-005.weights.h5")
    pairs = list(data.parse_spec("demo:999", split="test"))
    float32 = to_ctranslate2(
        model, source_tokenizer, target_tokenizer,
        tmp_path_factory.mktemp("demo_ct2") / "float32",
    )  # fmt: skip
    sources = [source for source, _ in pairs]
    return {
        "model": model,
        "source": source_tokenizer,
        "target": target_tokenizer,
        "pairs": pairs,
        "float32": CTranslate2Translator(float32),
        "greedy": _generate(model, source_tokenizer, sources),
    }


def test_trained_greedy_and_beam_ids_match_generate(demo_model):
    model, tokenizer = demo_model["model"], demo_model["source"]
    translator = demo_model["float32"]
    sentences = [source for source, _ in demo_model["pairs"]]
    _check_scores(model, tokenizer, demo_model["target"], translator.path)
    assert _ct2_ids(translator, sentences) == demo_model["greedy"]
    # Beam search with no length penalty: both rank by summed log-probs.
    beam = _ct2_ids(translator, sentences, beam_size=4)
    expected = _generate(model, tokenizer, sentences, beam_size=4)
    assert beam == expected
    # GNMT's penalty, by rescoring CTranslate2's finished hypotheses: the
    # searches differ in when they stop, so near-ties may go either way.
    beam = _ct2_ids(translator, sentences, 4, length_penalty=0.6)
    expected = _generate(model, tokenizer, sentences, 4, length_penalty=0.6)
    agree = sum(a == b for a, b in zip(beam, expected))
    assert agree >= 0.95 * len(sentences), agree


def test_trained_strings_and_int8_bleu(demo_model, tmp_path):
    model, source_tokenizer = demo_model["model"], demo_model["source"]
    target_tokenizer = demo_model["target"]
    sources = [source for source, _ in demo_model["pairs"]]
    references = [target for _, target in demo_model["pairs"]]
    float32 = demo_model["float32"]

    # Strings: the export's greedy translations are the Keras model's
    # detokenized greedy ids; blank sentences translate to "".
    ids = tf.ragged.constant(demo_model["greedy"], dtype=tf.int32)
    expected = [t.decode() for t in target_tokenizer.detokenize(ids).numpy()]
    assert float32.translate(sources, beam_size=1) == expected
    assert float32.translate(["", "  ", sources[0]], beam_size=1) == [
        "", "", expected[0]]  # fmt: skip

    int8 = CTranslate2Translator(
        to_ctranslate2(model, source_tokenizer, target_tokenizer, tmp_path / "i8",
                       quantization="int8")
    )  # fmt: skip
    bleu = {}
    for name, translator in (("float32", float32), ("int8", int8)):
        hypotheses = translator.translate(sources, beam_size=4, length_penalty=0.6)
        bleu[name] = sacrebleu.corpus_bleu(
            hypotheses, [references], tokenize="char"
        ).score
    assert bleu["float32"] > 60, bleu  # the model translates: not vacuous
    assert abs(bleu["int8"] - bleu["float32"]) <= 0.5, bleu


# --- the command line --------------------------------------------------------


def _cli(*args):
    return cli.main(["export", *map(str, args)])


def test_cli_export_ctranslate2(small_model_dir, tmp_path, capsys):
    output = tmp_path / "ct2"
    assert _cli("--model", small_model_dir, "--format", "ctranslate2",
                "--output", output) == 0  # fmt: skip
    assert "float32" in capsys.readouterr().out
    assert is_ctranslate2_dir(output)
    assert not is_ctranslate2_dir(small_model_dir)
    # The CLI-trained model's greedy ids on its validation sentences.
    model, tokenizer, _ = load_model_and_vocabularies(small_model_dir)
    sentences = [
        line.split("\t")[0]
        for line in (small_model_dir.parent / "valid.tsv").read_text().splitlines()
    ]
    translator = CTranslate2Translator(output)
    assert _ct2_ids(translator, sentences) == _generate(model, tokenizer, sentences)

    # `evaluate` takes the export: the same hypotheses as the model's own.
    valid = f"tsv:{small_model_dir.parent / 'valid.tsv'}"
    hypotheses = {}
    for name, model_dir in (("ct2", output), ("keras", small_model_dir)):
        hypotheses[name] = tmp_path / f"{name}.txt"
        assert cli.main(["evaluate", "--model", str(model_dir), "--test", valid,
                         "--beam-size", "1", "--hypotheses",
                         str(hypotheses[name])]) == 0  # fmt: skip
    assert hypotheses["ct2"].read_text() == hypotheses["keras"].read_text()
    capsys.readouterr()
    # So does `translate`, with the truncation warning of a model DIR.
    long = " ".join(sentences)
    assert cli.main(["translate", "--model", str(output), "--beam-size", "1",
                     "--max-input-tokens", "4", sentences[0], long]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2
    assert "warning: 1 input was cut to the translator's 4 input tokens" in (
        captured.err
    )
    assert "line 2 (" in captured.err
    assert cli.main(["translate", "--model", str(output), "--sampling", "x"]) == 2
    assert "not offered for a CTranslate2 export" in capsys.readouterr().err

    # Never into a directory that holds something.
    assert _cli("--model", small_model_dir, "--format", "ctranslate2",
                "--output", output) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not empty" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--quantization", "int8"], "--quantization: applies to --format ctranslate2"),
        (["--format", "ctranslate2", "--version", "2"], "--version: applies to"),
        (["--format", "ctranslate2", "--quantization", "int4"], "invalid choice"),
    ],
)
def test_cli_option_errors(args, message, tmp_path, capsys):
    code = _cli("--model", tmp_path, "--output", tmp_path / "out", *args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and message in err, err


def test_cli_without_ctranslate2(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import fails
    code = _cli("--model", tmp_path, "--format", "ctranslate2", "--output", tmp_path)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert 'pip install "keras-transformer[ctranslate2]"' in err


def test_translator_threads_default_to_the_cpu_count_at_most_4(
    vocabularies, tmp_path, monkeypatch
):
    import ctranslate2

    created = []

    class Recording(ctranslate2.Translator):
        def __init__(self, *args, **kwargs):
            created.append(kwargs)
            super().__init__(*args, **kwargs)

    source_tokenizer, target_tokenizer = vocabularies["shared"]
    model = _random_model(source_tokenizer, target_tokenizer)
    path = tmp_path / "ct2"
    to_ctranslate2(model, source_tokenizer, target_tokenizer, path)
    monkeypatch.setattr(ctranslate2, "Translator", Recording)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    CTranslate2Translator(path)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    CTranslate2Translator(path, intra_threads=1)
    CTranslate2Translator(path)
    assert [kwargs["intra_threads"] for kwargs in created] == [2, 1, 4]
