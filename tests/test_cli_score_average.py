"""`score` (forced decoding), `average` (checkpoint averaging) and the files
`evaluate` writes, on the shared `small_model_dir` (read-only: the tests
that write next to the model work on a copy)."""

import json
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import sacrebleu

from keras_transformer import Transformer
from keras_transformer import cli
from keras_transformer import model_directory as layout
from keras_transformer.evaluation import score_pairs


@pytest.fixture(scope="module")
def loaded(small_model_dir):
    return layout.load_model_and_vocabularies(small_model_dir)


@pytest.fixture(scope="module")
def valid_pairs(small_model_dir):
    lines = (small_model_dir.parent / "valid.tsv").read_text("utf-8").splitlines()
    return [tuple(line.split("\t")) for line in lines]


def _log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _teacher_forced_log_prob(model, source_tokenizer, target_tokenizer, pair):
    """One pair, unbatched: source+EOS, BOS+target -> sum log p(target+EOS)."""
    source = [int(i) for i in source_tokenizer.tokenize(pair[0]).numpy()]
    target = [int(i) for i in target_tokenizer.tokenize(pair[1]).numpy()]
    logits = model(
        {
            "source": np.array([source + [model.eos_id]], np.int32),
            "target": np.array([[model.bos_id] + target], np.int32),
        },
        training=False,
    )
    log_probs = _log_softmax(keras.ops.convert_to_numpy(logits))[0]
    labels = target + [model.eos_id]
    return sum(log_probs[t, label] for t, label in enumerate(labels)), len(labels)


def test_score_is_the_teacher_forced_log_probability(loaded, valid_pairs):
    model, source_tokenizer, target_tokenizer = loaded
    pairs = valid_pairs + [("one hundred and eleven", "")]  # an empty target
    scores = score_pairs(model, source_tokenizer, target_tokenizer, pairs, 4)
    expected = [
        _teacher_forced_log_prob(model, source_tokenizer, target_tokenizer, pair)
        for pair in pairs
    ]
    np.testing.assert_allclose(scores["log_prob"], [e for e, _ in expected], atol=2e-4)
    np.testing.assert_array_equal(scores["tokens"], [n for _, n in expected])
    assert scores["tokens"][-1] == 1  # EOS alone
    np.testing.assert_allclose(
        scores["normalized"], scores["log_prob"] / scores["tokens"]
    )
    assert np.all(scores["log_prob"] < 0)


def test_padding_and_batching_do_not_change_a_score(loaded, valid_pairs):
    model, source_tokenizer, target_tokenizer = loaded
    alone = score_pairs(model, source_tokenizer, target_tokenizer, valid_pairs, 1)
    batched = score_pairs(model, source_tokenizer, target_tokenizer, valid_pairs, 64)
    np.testing.assert_allclose(batched["log_prob"], alone["log_prob"], atol=1e-4)
    assert len(set(np.round(alone["log_prob"], 3))) > 5  # scores differ by pair


def test_score_refuses_what_it_cannot_score(loaded):
    _, source_tokenizer, target_tokenizer = loaded
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        score_pairs(loaded[0], source_tokenizer, target_tokenizer, [("a", "b")], 0)
    learned = Transformer(
        vocabulary_size=source_tokenizer.vocab_size, num_layers=1, d_model=8,
        num_heads=2, d_ff=16, position_encoding="learned", max_positions=4,
    )  # fmt: skip
    short, long = ("one", "eins"), ("one hundred and twenty-three", "eins")
    assert score_pairs(learned, source_tokenizer, target_tokenizer, [short])
    with pytest.raises(ValueError, match=r"Pair 1 is \d+ tokens long.*max_positions=4"):
        score_pairs(learned, source_tokenizer, target_tokenizer, [short, long])


def test_score_command_writes_one_line_per_pair(
    small_model_dir, loaded, valid_pairs, tmp_path, capsys
):
    output = tmp_path / "scores.tsv"
    test = f"tsv:{small_model_dir.parent / 'valid.tsv'}"
    argv = [
        "score",
        "--model",
        str(small_model_dir),
        "--test",
        test,
        "--batch-size",
        "5",
    ]
    assert cli.main([*argv, "--output", str(output)]) == 0
    lines = output.read_text("utf-8").splitlines()
    expected = score_pairs(*loaded, valid_pairs)
    assert len(lines) == len(valid_pairs)
    for line, pair, log_prob, tokens in zip(
        lines, valid_pairs, expected["log_prob"], expected["tokens"]
    ):
        fields = line.split("\t")
        assert tuple(fields[3:]) == pair
        assert float(fields[0]) == pytest.approx(log_prob, abs=1e-4)
        assert int(fields[2]) == tokens
        assert float(fields[1]) == pytest.approx(log_prob / tokens, abs=1e-5)
    assert "Scored 15 pairs" in capsys.readouterr().err
    assert cli.main(argv) == 0  # to stdout
    assert capsys.readouterr().out.splitlines() == lines


def _error_line(argv, capsys):
    capsys.readouterr()
    code = cli.main(argv)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert "Traceback" not in captured.err and len(lines) == 1, captured.err
    return code, lines[0]


@pytest.fixture
def model_copy(small_model_dir, tmp_path):
    """A writable copy of the model directory (without logs and resume state)."""
    copy = tmp_path / "model"
    shutil.copytree(
        small_model_dir, copy, ignore=shutil.ignore_patterns("logs", "resume")
    )
    return copy


@pytest.mark.parametrize(
    "argv, message",
    [
        (["score", "--test", "demo", "--batch-size", "0"], "--batch-size"),
        (["score", "--test", "demo", "--output", "/no/such/dir/s.tsv"], "--output"),
        (["score", "--test", "csv:x"], "unknown data SPEC"),
        (["average", "--last", "0"], "--last"),
        (["average", "--last", "3"], "--last: 3 checkpoints asked"),
        (["average", "--last", "1", "--output", "{model}"], "would overwrite"),
        (["average", "--last", "1", "--output", "/no/such/a.keras"], "--output"),
        (
            ["evaluate", "--test", "demo", "--output-json", "/no/such/s.json"],
            "--output-json",
        ),
        (["evaluate", "--test", "demo", "--hypotheses", "{model}"], "--hypotheses"),
    ],  # fmt: skip
    ids=lambda x: " ".join(x) if isinstance(x, list) else x,
)
def test_bad_arguments_are_one_line(argv, message, model_copy, capsys):
    before = sorted(p.name for p in model_copy.rglob("*"))
    argv = [a.replace("{model}", str(model_copy)) for a in argv]
    code, line = _error_line([argv[0], "--model", str(model_copy), *argv[1:]], capsys)
    assert code == 2
    assert line.startswith(f"keras-transformer {argv[0]}: error: "), line
    assert message in line, line
    assert sorted(p.name for p in model_copy.rglob("*")) == before


def test_average_without_checkpoints_is_one_line(model_copy, capsys):
    shutil.rmtree(model_copy / "checkpoints")
    code, line = _error_line(
        ["average", "--model", str(model_copy), "--last", "1"], capsys
    )
    assert code == 2
    assert "no checkpoints to average" in line


def _checkpoint_mean(small_model_dir, names):
    """The numpy mean of the checkpoints' weights, each loaded into the model."""
    model = keras.saving.load_model(small_model_dir / "model.keras", compile=False)
    weights = []
    for name in names:
        model.load_weights(small_model_dir / "checkpoints" / name)
        weights.append(model.get_weights())
    return [np.mean(arrays, axis=0) for arrays in zip(*weights)], weights[-1]


def test_average_writes_a_model_directory_every_command_takes(
    small_model_dir, model_copy, valid_pairs, tmp_path, capsys
):
    assert cli.main(["average", "--model", str(model_copy), "--last", "2"]) == 0
    averaged = model_copy / "averaged"  # the default output
    names = ["epoch-001.weights.h5", "epoch-002.weights.h5"]
    assert json.loads((averaged / "metrics.json").read_text())[
        "averaged_checkpoints"
    ] == [str(model_copy / "checkpoints" / name) for name in names]
    mean, last = _checkpoint_mean(small_model_dir, names)
    result = keras.saving.load_model(averaged / "model.keras").get_weights()
    assert len(result) == len(mean)
    for got, want in zip(result, mean):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert not all(np.allclose(m, w) for m, w in zip(mean, last))  # not a copy

    # evaluate takes it as --model and writes its scores and translations.
    scores_file, hypotheses_file = tmp_path / "scores.json", tmp_path / "hyp.txt"
    test = f"tsv:{small_model_dir.parent / 'valid.tsv'}"
    assert cli.main([
        "evaluate", "--model", str(averaged), "--test", test, "--beam-size", "1",
        "--output-json", str(scores_file), "--hypotheses", str(hypotheses_file),
    ]) == 0  # fmt: skip
    hypotheses = hypotheses_file.read_text("utf-8").split("\n")[:-1]
    references = [target for _, target in valid_pairs]
    report = json.loads(scores_file.read_text("utf-8"))
    assert len(hypotheses) == report["count"] == len(valid_pairs)
    bleu = sacrebleu.metrics.BLEU()
    assert report["bleu"] == pytest.approx(
        bleu.corpus_score(hypotheses, [references]).score
    )
    assert report["bleu_signature"] == str(bleu.get_signature())
    chrf = sacrebleu.metrics.CHRF()
    assert report["chrf"] == pytest.approx(
        chrf.corpus_score(hypotheses, [references]).score
    )
    assert report["chrf_signature"] == str(chrf.get_signature())
    assert report["exact_match"] == pytest.approx(
        np.mean([h == r for h, r in zip(hypotheses, references)])
    )
    assert report["settings"] == {
        "model": str(averaged), "test": test, "beam_size": 1, "length_penalty": 0.6,
    }  # fmt: skip


def test_an_averaged_keras_file_loads_in_a_fresh_process(
    small_model_dir, tmp_path, capsys
):
    output = tmp_path / "last1.keras"
    argv = ["average", "--model", str(small_model_dir), "--last", "1"]
    assert cli.main([*argv, "--output", str(output)]) == 0
    assert "Averaged 1 checkpoint (epoch-002.weights.h5)" in capsys.readouterr().out
    code = (
        "import sys, keras, keras_transformer\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "print(type(model).__name__, model.count_params())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(output)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    trained = keras.saving.load_model(small_model_dir / "model.keras", compile=False)
    assert result.stdout.split() == ["Transformer", str(trained.count_params())]
