"""`keras-transformer translate`: sampling, the truncation warning, and the
flags an exported translator cannot apply."""

import os

import pytest
import tensorflow as tf

from keras_transformer import cli
from keras_transformer import model_directory
from keras_transformer.export import Translator
from keras_transformer.export import export_translator

SENTENCES = ["two hundred and four", "seventy", "one hundred and twelve", "nine"]
LONG = "three hundred and seventy seven thousand four hundred and two"


def _run(argv, capsys):
    """`(exit status, stdout lines, stderr lines)` of `keras-transformer ARGV`."""
    capsys.readouterr()
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out.splitlines(), captured.err.splitlines()


def _translate(model, *args, capsys, sentences=SENTENCES):
    code, out, err = _run(
        ["translate", "--model", str(model), *args, *sentences], capsys
    )
    assert code == 0, err
    assert len(out) == len(sentences)
    return out, err


def _error(argv, capsys):
    code, out, err = _run(argv, capsys)
    assert code == 2 and out == [] and len(err) == 1, err
    assert err[0].startswith("keras-transformer translate: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def loaded(small_model_dir):
    return model_directory.load_model_and_vocabularies(small_model_dir)


@pytest.fixture(scope="module", autouse=True)
def _load_each_export_once():
    """While this module runs, `tf.saved_model.load` loads each SavedModel
    once: the many `translate --model EXPORT` calls below share the loaded
    object (everything else `translate` does, each call does)."""
    load, loaded = tf.saved_model.load, {}

    def load_once(path, *args, **kwargs):
        if args or kwargs:
            return load(path, *args, **kwargs)
        key = os.path.realpath(path)
        if key not in loaded:
            loaded[key] = load(path)
        return loaded[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tf.saved_model, "load", load_once)
        yield


@pytest.fixture(scope="module")
def exported(small_model_dir, tmp_path_factory):
    """The small model exported by the CLI: beam 2, 8 input tokens."""
    output = tmp_path_factory.mktemp("export")
    assert cli.main(["export", "--model", str(small_model_dir), "--output",
                     str(output), "--beam-size", "2", "--max-input-tokens", "8"]) == 0  # fmt: skip
    return output


@pytest.fixture(scope="module")
def greedy(loaded):
    """The model's greedy translations of SENTENCES (cut to 8 tokens, as in
    `exported`), by the library."""
    return Translator(*loaded, beam_size=1, max_input_tokens=8)(SENTENCES)


def test_sampling_with_a_model_dir(small_model_dir, loaded, greedy, capsys):
    args = ["--sampling", "--seed", "3", "--temperature", "1.5", "--top-p", "0.9"]
    sentences = SENTENCES * 3
    first, err = _translate(small_model_dir, *args, capsys=capsys, sentences=sentences)
    assert err == []
    # Reproducible: the library's translator with the same settings and seed
    # makes the same draws.
    translator = Translator(*loaded, beam_size=1, sampling=True, seed=3,
                            temperature=1.5, top_p=0.9)  # fmt: skip
    assert translator(sentences) == first
    other, _ = _translate(small_model_dir, *args[:1], "--seed", "4", *args[3:],
                          capsys=capsys, sentences=sentences)  # fmt: skip
    assert other != first
    # Top-1 sampling is greedy search.
    top_1, _ = _translate(small_model_dir, "--sampling", "--top-k", "1",
                          "--max-input-tokens", "8", capsys=capsys)  # fmt: skip
    assert top_1 == greedy


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", "0.5"], "argument --temperature: applies only with --sampling"),
        (["--seed", "1"], "argument --seed: applies only with --sampling"),
        (["--sampling", "--beam-size", "4"], "argument --beam-size: 4 cannot be used with --sampling"),
        (["--sampling", "--temperature", "0"], "argument --temperature: must be a positive number. Received: 0"),
        (["--sampling", "--temperature", "nan"], "argument --temperature: must be a positive number. Received: nan"),
        (["--sampling", "--top-p", "1.5"], r"argument --top-p: must be a number in (0, 1]. Received: 1.5"),
        (["--sampling", "--top-k", "0"], "argument --top-k: must be a positive integer. Received: 0"),
        (["--sampling", "--seed", "-1"], "argument --seed: must be an integer in [0, 4294967295]. Received: -1"),
        (["--sampling", "--top-k", "100000"], "argument --top-k: must be at most the model's vocabulary size"),
    ],
)  # fmt: skip
def test_bad_sampling_flags_are_one_line(small_model_dir, args, message, capsys):
    line = _error(["translate", "--model", str(small_model_dir), *args, "one"], capsys)
    assert message in line, line


def _token_count(loaded, sentence):
    """Source subword tokens of `sentence`, EOS included, from the tokenizer."""
    return int(tf.size(loaded[1].tokenize(tf.constant([sentence])).flat_values)) + 1


def test_truncation_warning_with_a_model_dir(small_model_dir, loaded, capsys):
    tokens = _token_count(loaded, LONG)
    assert tokens > 6
    sentences = ["seven", LONG, "eight", LONG + " one"]
    _, err = _translate(small_model_dir, "--max-input-tokens", "6", "--batch-size",
                        "3", capsys=capsys, sentences=sentences)  # fmt: skip
    longer = _token_count(loaded, LONG + " one")
    assert err == [
        "keras-transformer translate: warning: 2 inputs were cut to the "
        f"translator's 6 input tokens (EOS included): line 2 ({tokens} tokens), "
        f"line 4 ({longer} tokens)"
    ]


def test_truncation_warning_with_an_export(exported, loaded, capsys):
    _, err = _translate(exported, capsys=capsys, sentences=["one", LONG])
    assert err == [
        "keras-transformer translate: warning: 1 input was cut to the "
        f"translator's 8 input tokens (EOS included): line 2 "
        f"({_token_count(loaded, LONG)} tokens)"
    ]


def test_export_records_its_settings_and_keeps_its_signatures(exported):
    import tensorflow_text  # noqa: F401

    saved = tf.saved_model.load(str(exported / "1"))
    settings = {name: value.numpy() for name, value in saved.settings().items()}
    assert settings["beam_size"] == 2 and settings["max_input_tokens"] == 8
    assert not settings["sampling"]
    outputs = saved.signatures["serving_default"](sentences=tf.constant(["one"]))
    assert set(outputs) == {"translations", "scores"}
    counts = saved.count_source_tokens(tf.constant(["", "one", LONG]))
    assert counts.numpy()[0] == 1 and counts.numpy()[2] > 8


def test_flags_an_export_cannot_apply_are_refused(exported, greedy, capsys):
    made_with = "was made with --beam-size 2 --length-penalty 0.6 --max-input-tokens 8"
    for args, flag in [
        (["--beam-size", "3"], "--beam-size"),
        (["--length-penalty", "1.0"], "--length-penalty"),
        (["--max-input-tokens", "16"], "--max-input-tokens"),
        (["--sampling", "--seed", "1"], "--sampling"),
    ]:
        line = _error(["translate", "--model", str(exported), *args, "one"], capsys)
        assert line.startswith(f"keras-transformer translate: error: argument {flag}: ")
        assert made_with in line and "model DIR" in line, line
    # The export's own settings are accepted.
    _translate(exported, "--beam-size", "2", "--length-penalty", "0.6",
               "--max-input-tokens", "8", capsys=capsys)  # fmt: skip
    # --beam-size 1 selects the greedy signature.
    assert _translate(exported, "--beam-size", "1", capsys=capsys)[0] == greedy


def test_a_sampling_export(loaded, tmp_path, capsys):
    translator = Translator(*loaded, beam_size=1, sampling=True, seed=7,
                            temperature=0.8, top_k=5)  # fmt: skip
    path = export_translator(translator, tmp_path / "sampling")
    expected = translator(SENTENCES)  # the first call: key [7, 0]
    out, _ = _translate(path, "--sampling", "--seed", "7", capsys=capsys)
    assert out == expected
    line = _error(["translate", "--model", str(path), "--sampling", "--temperature",
                   "1.0", "one"], capsys)  # fmt: skip
    assert (
        "argument --temperature: the translator exported at "
        f"{path} was made with --sampling --temperature 0.8 --top-k 5 --seed 7 "
        "--max-input-tokens 256, fixed at export"
    ) in line


def test_an_export_without_recorded_settings(exported, monkeypatch, capsys):
    """Exports written before translators recorded their settings."""
    from keras_transformer.cli import translate

    monkeypatch.setattr(translate, "exported_settings", lambda loaded: {})
    line = _error(
        ["translate", "--model", str(exported), "--beam-size", "3", "x"], capsys
    )
    assert "argument --beam-size: " in line and "does not record it" in line
