"""The README's command-line section, run as written on small data.

The commands are read from the README itself (the first ```bash block
under "## The command line"), so that the README cannot drift from the
command line. Only sizes are made small (`SMALL`), and `tsv:` files the
commands name are written with English->German number words first.
"""

import io
import re
import shlex
from pathlib import Path

import pytest
from num2words import num2words

from keras_transformer import cli

README = Path(__file__).resolve().parents[1] / "README.md"

# Flag values of the README that suit a real corpus, and what this test
# uses instead on a few hundred sentence pairs.
SMALL = {
    "--preset": "tiny",
    "--batch-tokens": "1200",
    "--vocab-size": "120",
    "--last": "2",
}
# Added to `train`: a short run.
SHORT_TRAINING = ["--epochs", "2", "--steps-per-epoch", "2", "--warmup-steps", "10"]


def readme_commands(text, heading="## The command line"):
    """The shell commands of the first ```bash block after `heading`."""
    section = text[text.index(heading) :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip()]


def _small(argv):
    out = list(argv)
    for i, token in enumerate(out[:-1]):
        if token in SMALL:
            out[i + 1] = SMALL[token]
    if out[0] == "train":
        out += SHORT_TRAINING
    return out


def _write_data(directory, commands):
    numbers = {"train": range(0, 600, 2), "valid": range(1, 80, 4)}
    for name in set(re.findall(r"tsv:(\w+)\.tsv", " ".join(commands))):
        lines = [
            f"{num2words(n)}\t{num2words(n, lang='de')}"
            for n in numbers.get(name, range(3, 60, 6))
        ]
        (directory / f"{name}.tsv").write_text("\n".join(lines) + "\n")


def _run(command, monkeypatch):
    """Runs `[echo TEXT |] keras-transformer ARGS`; returns the exit status."""
    stdin = ""
    if "|" in command:
        producer, command = command.split("|")
        stdin = " ".join(shlex.split(producer, comments=True)[1:]) + "\n"
    argv = shlex.split(command, comments=True)
    assert argv[0] == "keras-transformer", command
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return cli.main(_small(argv[1:]))


def test_the_readme_command_line_section_runs(tmp_path, monkeypatch, capsys):
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert len(commands) >= 5
    monkeypatch.chdir(tmp_path)
    _write_data(tmp_path, commands)
    for command in commands:
        assert _run(command, monkeypatch) == 0, (command, capsys.readouterr().err)
    out = capsys.readouterr().out
    assert "BLEU" in out
    # The "## Serving" Python block, on the CTranslate2 export just written.
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Serving") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    last = code.rstrip().splitlines()[-1]
    namespace = {}
    exec(code.replace(last, f"result = {last}"), namespace)
    assert len(namespace["result"]) == 1 and isinstance(namespace["result"][0], str)


def test_the_readme_config_file_builds_the_model_it_describes(tmp_path):
    from keras_transformer.models.transformer import Transformer
    from keras_transformer.training.config import TrainConfig
    from keras_transformer.training.settings_file import settings_from_args
    from keras_transformer.training.trainer import run_model_arguments

    text = README.read_text(encoding="utf-8")
    section = text[text.index("## The command line") :]
    example = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    (tmp_path / "mid.yaml").write_text(example, encoding="utf-8")
    args = cli.build_parser().parse_args(
        ["train", "--config", str(tmp_path / "mid.yaml"), "--epochs", "30"]
    )
    config = settings_from_args(args, TrainConfig)
    assert (config.epochs, config.d_model, config.normalize_first) == (30, 256, True)
    model = Transformer(vocabulary_size=16000, **run_model_arguments(config))
    model.build()
    count = int(re.search(r"\(([\d,]+) parameters", example).group(1).replace(",", ""))
    assert model.count_params() == count


def test_readme_commands_are_parsed_with_continuations():
    text = "## The command line\n\n```bash\na \\\n  b\nc\n```\n"
    assert readme_commands(text) == ["a    b", "c"]
    assert _small(["train", "--preset", "base", "--vocab-size", "32000"]) == [
        "train", "--preset", "tiny", "--vocab-size", "120", *SHORT_TRAINING
    ]  # fmt: skip


@pytest.mark.parametrize("missing", ["## The command line"])
def test_a_readme_without_the_section_fails_loudly(missing):
    with pytest.raises(ValueError):
        readme_commands("# nothing here", heading=missing)
