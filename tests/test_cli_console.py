"""The command line's start-up: `--help` without TensorFlow, a quiet console."""

import os
import subprocess
import sys

import pytest

from keras_transformer.cli import console

# Runs the console script's entry point, then reports whether TensorFlow
# was imported.
_HELP_PROBE = """
import sys
import keras_transformer_cli
try:
    code = keras_transformer_cli.main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
print("tensorflow imported:", "tensorflow" in sys.modules, "exit:", code)
"""


def _run(args, env=None):
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["train", "--help"],
        ["translate", "--help"],
        ["train", "--train", "demo"],  # a usage error: --output missing
    ],
)
def test_help_and_usage_errors_do_not_import_tensorflow(argv):
    result = _run([sys.executable, "-c", _HELP_PROBE, *argv])
    code = 2 if "--help" not in argv else 0
    assert result.stdout.splitlines()[-1] == (
        f"tensorflow imported: False exit: {code}"
    ), result.stderr


def test_python_m_help_does_not_import_tensorflow():
    probe = "import runpy, sys; sys.argv = ['-m']; import keras_transformer; "
    probe += "print('tensorflow' in sys.modules)"
    assert _run([sys.executable, "-c", probe]).stdout.strip() == "False"


def test_import_keras_transformer_registers_the_training_objects():
    probe = (
        "import keras, keras_transformer; "
        "print(keras.saving.get_registered_object("
        "'keras_transformer>TransformerSchedule').__name__)"
    )
    result = _run([sys.executable, "-c", probe])
    assert result.stdout.strip() == "TransformerSchedule", result.stderr


def test_every_command_accepts_verbose():
    from keras_transformer.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(
        ["--verbose", "plot-positions", "--output", "p.svg"]
    ).verbose
    args = parser.parse_args(["plot-positions", "--output", "p.svg", "--verbose"])
    assert args.verbose
    assert not parser.parse_args(["plot-positions", "--output", "p.svg"]).verbose


@pytest.mark.parametrize(
    "flag, variable, expected",
    [(False, "", False), (True, "", True), (False, "1", True), (False, "0", False)],
)
def test_verbose_from_flag_or_environment(monkeypatch, flag, variable, expected):
    monkeypatch.setenv(console.VERBOSE_VARIABLE, variable)
    assert console.verbose_requested(flag) is expected


def test_quiet_stderr_drops_tensorflow_lines_and_keeps_the_rest():
    # A fresh process: TensorFlow is imported (and XLA used) inside the
    # filter, as a command does.
    probe = """
import os, sys
from keras_transformer.cli import console
console.configure(False)
with console.quiet_stderr():
    os.write(2, b"I0000 00:00:1796470184.513290   19053 port.cc:153] oneDNN\\n")
    print("kept line", file=sys.stderr)
    import tensorflow as tf
    tf.function(lambda x: x * 2, jit_compile=True)(tf.constant(1.0))
print("after", file=sys.stderr)
"""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env[console.VERBOSE_VARIABLE] = ""
    env["KERAS_TRANSFORMER_DEFER_IMPORTS"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["kept line", "after"]


@pytest.mark.parametrize(
    "line, dropped",
    [
        ("I0000 00:00:1796470184.513290   19053 port.cc:153] oneDNN ops", True),
        ("E0000 00:00:1796470165.389751   18217 cuda_platform.cc:52] cuInit", True),
        ("2025-09-17 14:44:05.157831: I external/x/cudart_stub.cc:32] cuda", True),
        ("WARNING: All log messages before absl::InitializeLog() is called", True),
        ("keras-transformer train: error: argument --epochs: must be", False),
        ("Epoch 1/2", False),
        ("I0000 is not a log line", False),
    ],
)
def test_tensorflow_log_line_pattern(line, dropped):
    assert bool(console.TENSORFLOW_LOG_LINE.match(line.encode())) is dropped


def test_the_console_script_loads_a_model_and_prints_no_log_lines(small_model_dir):
    # The console script defers the package's imports: the command must
    # still register the model's classes before loading it.
    probe = "import sys, keras_transformer_cli; sys.exit(keras_transformer_cli.main())"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-c", probe, "translate", "--model", str(small_model_dir)],
        input="one\ntwo hundred\n",
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, console.VERBOSE_VARIABLE: ""},
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert result.stderr == ""


def test_every_flag_is_documented_with_its_default():
    import argparse

    from keras_transformer.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, command in commands.items():
        for action in command._actions:
            if not action.option_strings or action.default == argparse.SUPPRESS:
                continue
            flag = action.option_strings[0]
            assert action.help, f"{name} {flag} has no help"
            rendered = command.formatter_class(prog=name)._get_help_string(action)
            default = getattr(action.default, "value", action.default)
            if default is not None and not isinstance(default, bool):
                assert "default" in rendered.lower(), f"{name} {flag}: no default"
