"""Every user error of every command is one line on stderr and exit status 2.

Each bad argument is refused before any model, data or file is touched, so
these tests train nothing; the few that need a model build a tiny untrained
one.
"""

import subprocess
import sys

import pytest

from keras_transformer import Transformer
from keras_transformer import cli
from keras_transformer import model_directory as layout
from keras_transformer.text import build_vocabularies
from keras_transformer.text import save_vocabularies
from keras_transformer.training.config import MAX_SEED
from keras_transformer.training.config import SettingError
from keras_transformer.training.config import TrainConfig
from keras_transformer.training.config import flag_error_message
from keras_transformer.training.config import flagged_settings

NO_MODEL = "/no/such/model/dir"

# (argv after the command's required arguments, flag, value): each bad
# value of each numeric or choice argument (None: no value to name).
TRAIN_CASES = [
    (["--vocab-size", "0"], "--vocab-size", "0"),
    (["--vocab-size", "5"], "--vocab-size", "5"),
    (["--vocab-size", "ten"], "--vocab-size", "ten"),
    (["--epochs", "0"], "--epochs", "0"),
    (["--epochs", "1.5"], "--epochs", "1.5"),
    (["--steps-per-epoch", "0"], "--steps-per-epoch", "0"),
    (["--batch-size", "0"], "--batch-size", "0"),
    (["--batch-tokens", "-5"], "--batch-tokens", "-5"),
    (["--max-length", "1"], "--max-length", "1"),
    (["--warmup-steps", "0"], "--warmup-steps", "0"),
    (["--learning-rate-scale", "0"], "--learning-rate-scale", "0"),
    (["--learning-rate-scale", "-1"], "--learning-rate-scale", "-1"),
    (["--learning-rate-scale", "inf"], "--learning-rate-scale", "inf"),
    (["--max-minutes", "-1"], "--max-minutes", "-1"),
    (["--max-minutes", "0"], "--max-minutes", "0"),
    (["--max-minutes", "nan"], "--max-minutes", "nan"),
    (["--seed", "-1"], "--seed", "-1"),
    (["--seed", str(MAX_SEED + 1)], "--seed", str(MAX_SEED + 1)),
    (["--steps-per-execution", "0"], "--steps-per-execution", "0"),
    (["--checkpoint-every", "-1"], "--checkpoint-every", "-1"),
    (["--keep-checkpoints", "0"], "--keep-checkpoints", "0"),
    (["--preset", "huge"], "--preset", "huge"),
    (["--bucket-boundaries", "finest"], "--bucket-boundaries", "finest"),
    (["--strategy", "gpu"], "--strategy", "gpu"),
    (["--mixed-precision", "float16"], "--mixed-precision", "float16"),
]
TRANSLATE_OPTION_CASES = [
    (["--beam-size", "0"], "--beam-size", "0"),
    (["--beam-size", "-2"], "--beam-size", "-2"),
    (["--length-penalty", "-1"], "--length-penalty", "-1"),
    (["--length-penalty", "nan"], "--length-penalty", "nan"),
]
OTHER_CASES = [
    (["demo", "--output", "{out}", "--max-minutes", "0"], "--max-minutes", "0"),
    (["demo", "--output", "{out}", "--max-minutes", "-1"], "--max-minutes", "-1"),
    (["demo", "--output", "{out}", "--max-minutes", "inf"], "--max-minutes", "inf"),
    (["export", "--model", NO_MODEL, "--output", "{out}", "--version", "0"],
     "--version", "0"),
    (["export", "--model", NO_MODEL, "--output", "{out}",
      "--max-input-tokens", "1"], "--max-input-tokens", "1"),
    (["translate", "--model", NO_MODEL, "--batch-size", "0", "one"],
     "--batch-size", "0"),
    (["explain", "--model", NO_MODEL, "one", "--output", "{out}.png",
      "--kind", "self"], "--kind", "self"),
    (["explain", "--model", NO_MODEL, "one", "--output", "{out}.png",
      "--layer", "last"], "--layer", "last"),
    (["explain", "--model", NO_MODEL, "one", "--output", "{out}.png",
      "--head", "1.5"], "--head", "1.5"),
    (["explain", "--model", NO_MODEL, "one", "--output", "{out}.gif"],
     "--output", ".gif"),
    (["plot-positions", "--output", "{out}.png", "--length", "0"],
     "--length", "0"),
    (["plot-positions", "--output", "{out}.png", "--d-model", "-4"],
     "--d-model", "-4"),
    (["plot-positions", "--output", "{out}.gif"], "--output", ".gif"),
    (["train", "--output", "{out}"], "--train", None),
    (["translate"], "--model", None),
]  # fmt: skip


def _cases():
    for extra, flag, value in TRAIN_CASES:
        yield ["train", "--train", "demo", "--output", "{out}", *extra], flag, value
    for extra, flag, value in TRANSLATE_OPTION_CASES:
        yield ["evaluate", "--model", NO_MODEL, "--test", "demo", *extra], flag, value
        yield ["export", "--model", NO_MODEL, "--output", "{out}", *extra], flag, value
        yield ["translate", "--model", NO_MODEL, *extra, "one"], flag, value
    yield from OTHER_CASES


def _error_line(argv, capsys):
    """The exit status of `cli.main(argv)` and its one line on stderr."""
    capsys.readouterr()
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return code, lines[0]


@pytest.mark.parametrize(
    "argv, flag, value",
    list(_cases()),
    ids=lambda x: " ".join(x) if isinstance(x, list) else x,
)
def test_bad_argument_is_one_line_before_any_work(argv, flag, value, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [a.replace("{out}", str(out)) for a in argv]
    code, line = _error_line(argv, capsys)
    assert code == 2
    assert line.startswith(f"keras-transformer {argv[0]}: error: "), line
    assert flag in line
    if value is not None:
        assert value in line.split(flag, 1)[1], line
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    "argv",
    [
        ["plot-positions", "--output", "{out}.png"],
        ["explain", "--model", NO_MODEL, "one", "--output", "{out}.png"],
    ],
    ids=lambda argv: argv[0],
)
def test_plots_without_matplotlib_name_the_extra(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import` fails
    argv = [a.replace("{out}", str(tmp_path / "out")) for a in argv]
    code, line = _error_line(argv, capsys)
    assert code == 2
    assert line == (
        f"keras-transformer {argv[0]}: error: plotting needs matplotlib: "
        'pip install "keras-transformer[viz]"'
    )
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """An untrained 1-layer, 2-head model directory with a tiny vocabulary."""
    directory = tmp_path_factory.mktemp("model")
    tokenizer, _ = build_vocabularies(
        ["one two three four"] * 20, ["eins zwei drei vier"] * 20, 24
    )
    model = Transformer(
        vocabulary_size=tokenizer.vocab_size,
        num_layers=1,
        d_model=8,
        num_heads=2,
        d_ff=16,
    )
    model.build()
    model.save(layout.path(directory, layout.MODEL_FILE))
    save_vocabularies(
        layout.path(directory, layout.VOCABULARY_DIR), tokenizer, tokenizer
    )
    return str(directory)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "--test", "demo", "--beam-size", "40"], "--beam-size"),
        (["export", "--output", "{out}", "--beam-size", "40"], "--beam-size"),
        (["translate", "--beam-size", "40", "one"], "--beam-size"),
        (["explain", "one", "--output", "{out}.png", "--layer", "3"], "out of range"),
        (["explain", "one", "--output", "{out}.png", "--head", "2"], "out of range"),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else x,
)
def test_arguments_too_large_for_the_model_are_one_line(
    argv, message, model_dir, tmp_path, capsys
):
    argv = [a.replace("{out}", str(tmp_path / "out")) for a in argv]
    code, line = _error_line([argv[0], "--model", model_dir, *argv[1:]], capsys)
    assert code == 2
    assert line.startswith(f"keras-transformer {argv[0]}: error: "), line
    assert message in line and ("40" in line or "out of range" in line)
    assert not list(tmp_path.iterdir())


def test_the_console_command_prints_one_line_and_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "keras_transformer", "train", "--train", "demo",
         "--output", str(tmp_path / "out"), "--vocab-size", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "usage:" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "keras-transformer train: error: argument --vocab-size: must be an "
            "integer of at least 6"
        )
    )
    assert not (tmp_path / "out").exists()


def test_vocab_size_below_the_corpus_characters_is_one_line(tmp_path, capsys):
    # 10 passes the up-front floor (6) but the demo corpus has 27 characters.
    argv = ["train", "--train", "demo", "--output", str(tmp_path / "out"),
            "--epochs", "1", "--vocab-size", "10"]  # fmt: skip
    code, line = _error_line(argv, capsys)
    assert code == 2
    assert line.startswith("keras-transformer train: error: ")
    assert "vocab_size=10 is too small" in line


@pytest.mark.parametrize(
    "settings, name",
    [
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"label_smoothing": -0.1}, "label_smoothing"),
        ({"bleu_sentences": -1}, "bleu_sentences"),
        ({"bleu_beam_size": 0}, "bleu_beam_size"),
        ({"vocabulary_sentences": 0}, "vocabulary_sentences"),
        ({"batch_size": None}, "batch_size"),
        ({"preset": "huge"}, "preset"),
        ({"strategy": "gpu"}, "strategy"),
        ({"seed": True}, "seed"),
    ],
)
def test_train_config_checks_settings_without_flags(settings, name):
    with pytest.raises(SettingError) as error_info:
        TrainConfig(train="t", output="o", **settings)
    error = error_info.value
    assert isinstance(error, ValueError) and error.name == name
    assert f"`{name}` " in str(error) and f"Received: {name}=" in str(error)
    expected = str(error)
    if name in {f.name for f in flagged_settings(TrainConfig)}:
        expected = f"argument --{name.replace('_', '-')}: {error.rule}"
    assert flag_error_message(TrainConfig, error).startswith(expected)


def test_valid_edge_values_are_accepted():
    config = TrainConfig(
        train="t",
        output="o",
        vocab_size=6,
        max_length=2,
        seed=0,
        bleu_sentences=0,
        label_smoothing=0.0,
        batch_size=None,
        batch_tokens=100,
        max_minutes=0.01,
    )
    assert config.vocab_size == 6
    assert TrainConfig(train="t", output="o", seed=MAX_SEED).seed == MAX_SEED
