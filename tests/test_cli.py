import json
import subprocess
import sys

import pytest
from num2words import num2words

from keras_transformer import cli


def _start(*args):
    """`python -m keras_transformer ARGS` in a fresh process, not waited for."""
    return subprocess.Popen(
        [sys.executable, "-m", "keras_transformer", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process):
    """`(exit status, stderr)` of a `_start`ed process."""
    try:
        _, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return process.returncode, stderr


def _tsv(path, numbers):
    lines = [f"{num2words(n)}\t{num2words(n, lang='de')}" for n in numbers]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


BAD_DATA = [
    (b"one\teins\ntwo zwei\n", "bad.tsv:2: expected 'source<TAB>target'"),
    (b"one\teins\n\xff\xfe\tzwei\n", "bad.tsv:2: not valid UTF-8"),
    (b"", "bad.tsv: the file is empty"),
]
USER_ERRORS = [
    (["train", "--train", "csv:x", "--output", "o"], "unknown data SPEC 'csv:x'"),
    (["train", "--train", "tsv:/no/such.tsv", "--output", "o"], "no such file"),
    (["evaluate", "--model", "/no/such/dir", "--test", "demo"], "not found"),
    (["export", "--model", "/no/such/dir", "--output", "e"], "not found"),
]


@pytest.fixture(scope="module")
def error_runs(tmp_path_factory):
    """The processes of the two tests below, all started at once (each is a
    fresh Python that imports TensorFlow): `{"data": [(output, process)],
    "user": [process]}`, in the order of `BAD_DATA` and `USER_ERRORS`."""
    runs = {"data": [], "user": []}
    for content, _ in BAD_DATA:
        directory = tmp_path_factory.mktemp("bad_data")
        (directory / "bad.tsv").write_bytes(content)
        output = directory / "out"
        output.mkdir()
        (output / "keep.txt").write_text("precious")
        process = _start("train", "--train", f"tsv:{directory / 'bad.tsv'}",
                         "--output", str(output))  # fmt: skip
        runs["data"].append((output, process))
    runs["user"] = [_start(*args) for args, _ in USER_ERRORS]
    yield runs
    for process in [p for _, p in runs["data"]] + runs["user"]:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize("index", range(len(BAD_DATA)), ids=[m for _, m in BAD_DATA])
def test_bad_training_data_is_one_line_and_loses_nothing(error_runs, index):
    message = BAD_DATA[index][1]
    output, process = error_runs["data"][index]
    code, stderr = _finish(process)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("keras-transformer train: error: ")
    assert message in lines[-1]
    assert "Traceback" not in stderr
    assert (output / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize(
    "index", range(len(USER_ERRORS)), ids=[m for _, m in USER_ERRORS]
)
def test_user_errors_are_one_line(error_runs, index):
    message = USER_ERRORS[index][1]
    code, stderr = _finish(error_runs["user"][index])
    assert code == 2, stderr
    assert message in stderr.strip().splitlines()[-1]
    assert "Traceback" not in stderr


def test_train_evaluate_export_translate(small_model_dir, tmp_path, capsys):
    # `small_model_dir` (tests/conftest.py) is what `keras-transformer train
    # --epochs 2 --steps-per-epoch 3 ...` wrote; this test only reads it.
    model_dir = small_model_dir
    valid = small_model_dir.parent / "valid.tsv"
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["epochs_completed"] == 2
    for key in ("train_loss", "valid_loss", "valid_bleu"):
        assert isinstance(metrics[key], float)
    for name in ("model.keras", "vocabulary/vocabularies.json", "train_config.json"):
        assert (model_dir / name).exists()
    assert list((model_dir / "checkpoints").glob("*.weights.h5"))
    assert list((model_dir / "logs").iterdir())
    # What the README promises: after `import keras_transformer` alone, a
    # fresh process loads the CLI's model.keras, compiled, in safe mode.
    load = (
        "import keras, keras_transformer, sys; "
        "model = keras.saving.load_model(sys.argv[1]); "
        "print(type(model.loss).__name__, model.optimizer.iterations.numpy())"
    )
    # Started now, checked at the end: it runs while the commands below do.
    loading = subprocess.Popen(
        [sys.executable, "-c", load, str(model_dir / "model.keras")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    capsys.readouterr()
    assert cli.main(["evaluate", "--model", str(model_dir), "--test",
                     f"tsv:{valid}", "--beam-size", "1"]) == 0  # fmt: skip
    report = capsys.readouterr().out
    assert "BLEU" in report and "chrF" in report and "nrefs:1" in report

    export_dir = tmp_path / "export"
    assert cli.main(["export", "--model", str(model_dir), "--output",
                     str(export_dir), "--beam-size", "2"]) == 0  # fmt: skip
    assert (export_dir / "1" / "saved_model.pb").exists()
    capsys.readouterr()
    assert cli.main(["translate", "--model", str(export_dir), "one", ""]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2

    picture = tmp_path / "cross.png"
    assert cli.main(["explain", "--model", str(model_dir), "two hundred",
                     "--kind", "cross", "--output", str(picture)]) == 0  # fmt: skip
    assert picture.stat().st_size > 1000

    stdout, stderr = loading.communicate(timeout=300)
    assert loading.returncode == 0, stderr
    assert stdout.split() == ["LabelSmoothedCrossEntropy", "6"]


def test_plot_positions(tmp_path):
    path = tmp_path / "pe.svg"
    assert cli.main(["plot-positions", "--length", "20", "--d-model", "16",
                     "--output", str(path)]) == 0  # fmt: skip
    assert path.stat().st_size > 1000
    assert cli.main(["plot-positions", "--output", str(tmp_path / "pe.gif")]) == 2


def test_max_minutes_stops_cleanly_and_writes_everything(tmp_path):
    train = _tsv(tmp_path / "train.tsv", range(300))
    model_dir = tmp_path / "model"
    code = cli.main([
        "train", "--train", f"tsv:{train}", "--epochs", "1000",
        "--steps-per-epoch", "2", "--vocab-size", "60", "--batch-size", "8",
        "--max-minutes", "0.1", "--output", str(model_dir),
    ])  # fmt: skip
    assert code == 0
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["stopped_by_time_limit"] is True
    assert metrics["epochs_completed"] < 1000
    assert (model_dir / "model.keras").exists()


def test_every_command_has_a_parser_and_a_runner():
    commands = cli.build_parser()._subparsers._group_actions[0].choices
    assert set(commands) == set(cli.COMMANDS)
    args = cli.build_parser().parse_args(["plot-positions", "--output", "p.svg"])
    assert (args.length, args.d_model, args.output) == (100, 512, "p.svg")
