"""`keras-transformer train` says what happened: resume, Ctrl-C, time limit,
the end-of-run summary, a finished run left alone, progress bars with the
real batch count, and no Python warnings from how `fit` is called."""

import contextlib
import dataclasses
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transformer import cli
from keras_transformer.training import trainer
from keras_transformer.training.callbacks import WallClockLimit
from keras_transformer.training.resume import DataPosition
from keras_transformer.training.resume import StepCheckpoint

# A one-layer model on the demo corpus: ~20 batches of 8 per epoch.
FLAGS = [
    "train", "--train", "demo:200", "--epochs", "2", "--batch-size", "8",
    "--vocab-size", "40", "--separate-vocabularies", "--max-length", "32",
    "--num-layers", "1", "--d-model", "16", "--num-heads", "2", "--d-ff", "32",
    "--warmup-steps", "4", "--bleu-sentences", "0", "--no-jit",
    "--max-minutes", "30",
]  # fmt: skip


class _InterruptAt(keras.callbacks.Callback):
    """Raises `KeyboardInterrupt` (Ctrl-C) at the end of batch `batch`."""

    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            raise KeyboardInterrupt


def _main(argv):
    """`cli.main(argv)`: `(exit status, stdout, stderr, UserWarnings)`."""
    out, err = io.StringIO(), io.StringIO()
    with (
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        warnings.simplefilter("always")
        code = cli.main(argv)
    user_warnings = [
        f"{w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if issubclass(w.category, UserWarning)
    ]
    return code, out.getvalue(), err.getvalue(), user_warnings


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run interrupted by Ctrl-C, then its printed resume command, rerun
    and stopped by the time limit after one more batch."""
    output = str(tmp_path_factory.mktemp("reporting") / "run")
    argv = FLAGS + ["--output", output]
    original_file_callbacks = trainer._file_callbacks
    with pytest.MonkeyPatch.context() as patch:
        # Warnings recorded as they are raised (no console filter).
        patch.setenv("KERAS_TRANSFORMER_VERBOSE", "1")
        patch.setattr(sys, "argv", ["keras-transformer", *argv])
        # Before `StepCheckpoint` sees batch 1: the save counts it from
        # the optimizer's step count.
        patch.setattr(
            trainer,
            "_file_callbacks",
            lambda *a: [_InterruptAt(1)] + original_file_callbacks(*a),
        )
        interrupted = _main(argv)
        resume = os.path.join(output, "checkpoints", "resume")
        saved_files = sorted(os.listdir(resume))
        wrote_model = os.path.exists(os.path.join(output, "model.keras"))
        saved_state = json.loads(open(os.path.join(resume, saved_files[0])).read())
        patch.setattr(trainer, "_file_callbacks", original_file_callbacks)
        command = interrupted[2].split("To resume, run:\n")[-1].splitlines()[0]
        patch.setattr(
            trainer,
            "_wall_clock",
            lambda config, started, **kwargs: WallClockLimit(1e-9, **kwargs),
        )
        resumed = _main(shlex.split(command)[1:])
    keras.config.set_dtype_policy("float32")
    return {
        "output": output,
        "argv": argv,
        "command": command,
        "interrupted": interrupted,
        "saved_files": saved_files,
        "saved_state": saved_state,
        "wrote_model": wrote_model,
        "resumed": resumed,
        "metrics": _metrics(output),
    }


def _metrics(output):
    path = os.path.join(output, "metrics.json")
    return json.loads(open(path).read()) if os.path.exists(path) else None


def _planned_steps(output, config):
    """2 epochs of the full batches of `config`'s data, counted here."""
    from keras_transformer.data.pipeline import count_batches
    from keras_transformer.text import load_vocabularies

    source, target = load_vocabularies(os.path.join(output, "vocabulary"))
    counts = count_batches(
        trainer._pairs(config.train, "train"),
        source.tokenize,
        target.tokenize,
        batch_size=8,
        max_source_length=32,
        max_target_length=32,
    )
    return 2 * counts["batches"]


def test_ctrl_c_saves_a_checkpoint_and_prints_the_resume_command(runs):
    code, out, err, user_warnings = runs["interrupted"]
    output = runs["output"]
    resume = os.path.join(output, "checkpoints", "resume")
    assert code == 130
    assert err.strip().splitlines()[-1] == "Interrupted."
    # Two batches trained: the second one counted although its callbacks
    # did not all run.
    saved = os.path.join(resume, "step-00000002.weights.h5")
    planned = runs["metrics"]["planned_steps"]
    assert (
        f"Training interrupted at step 2 of {planned}; saved checkpoint {saved}. "
        "To resume, run:\n"
    ) in err
    assert runs["saved_files"] == ["step-00000002.json", "step-00000002.weights.h5"]
    state = runs["saved_state"]
    assert (state["epoch"], state["batch"], state["step"]) == (0, 2, 2)
    assert state["optimizer_iterations"] == 2
    # The same command line, quoted for the shell.
    assert shlex.split(runs["command"]) == ["keras-transformer", *runs["argv"]]
    assert runs["command"].startswith("  keras-transformer train ")
    assert not runs["wrote_model"]
    assert user_warnings == []


def test_rerun_resumes_and_time_limit_says_how_far_it_got(runs):
    code, out, err, user_warnings = runs["resumed"]
    output, metrics = runs["output"], runs["metrics"]
    config = trainer.TrainConfig(
        **{**json.loads(open(os.path.join(output, "train_config.json")).read())}
    )
    planned = _planned_steps(output, config)
    assert code == 0, err
    lines = out.splitlines()
    checkpoint = os.path.join(output, "checkpoints", "resume", "step-00000002")
    assert (
        f"resuming from step 2 of {planned} (checkpoint {checkpoint}.weights.h5)"
        in lines
    )
    # One batch after the resume, then the time limit.
    assert metrics["steps"] == 3 and metrics["resumed_from_step"] == 2
    assert metrics["stopped_by_time_limit"] is True
    # The epoch was not finished: it does not count.
    assert metrics["epochs_completed"] == 0
    assert metrics["planned_steps"] == planned
    stop = next(line for line in lines if line.startswith("--max-minutes"))
    assert stop.startswith(
        f"--max-minutes 30 stopped training after 3 of {planned} steps "
        "(0 of 2 epochs complete); to continue, rerun: keras-transformer train"
    )
    # The progress bar counts the rest of the resumed epoch.
    rest = planned // 2 - 2
    assert re.search(rf"\b1/{rest}\b", out) and "Unknown" not in out
    assert user_warnings == []


def test_summary_says_what_was_trained_and_where_it_is(runs):
    out, metrics, output = runs["resumed"][1], runs["metrics"], runs["output"]
    summary = out[out.index("Training stopped: ") :].splitlines()
    planned = metrics["planned_steps"]
    assert summary[0] == (
        f"Training stopped: 3 of {planned} steps, 0 of 2 epochs complete, "
        f"{trainer._duration(metrics['wall_seconds'])} (resumed from step 2)."
    )
    assert summary[1] == (
        f"  final train loss {metrics['train_loss']:.4f}, "
        f"valid loss {metrics['valid_loss']:.4f}"
    )
    files = dict(line.split(":", 1) for line in summary[2:7])
    assert {k.strip(): v.strip() for k, v in files.items()} == {
        "model": os.path.join(output, "model.keras"),
        "vocabulary": os.path.join(output, "vocabulary"),
        "metrics": os.path.join(output, "metrics.json"),
        "logs": f"{output}/logs  (tensorboard --logdir {output}/logs)",
        "checkpoints": os.path.join(output, "checkpoints"),
    }
    assert summary[7:] == [
        "Next:",
        f"  keras-transformer evaluate --model {output} --test demo",
        f"  keras-transformer translate --model {output}",
        f"  keras-transformer export --model {output} --output {output}/export",
    ]


def test_rerun_of_a_finished_run_changes_nothing(small_model_dir, tmp_path, capsys):
    output = tmp_path / "model"
    shutil.copytree(small_model_dir, output)
    saved = json.loads((output / "train_config.json").read_text())
    config = trainer.TrainConfig(**{**saved, "output": str(output)})

    def files():
        return {
            str(p.relative_to(output)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in output.rglob("*")
        }

    before = files()
    capsys.readouterr()
    metrics = trainer.train_translator(config)
    out = capsys.readouterr().out
    assert files() == before
    assert metrics == json.loads((output / "metrics.json").read_text())
    assert out.splitlines()[0] == (
        f"Nothing to do: {output} holds a finished run (2 of 2 epochs, 6 "
        "steps); its files are left as they are. Raise --epochs to train on, "
        "or use a new --output to start over."
    )
    # More epochs than were run: not finished (it would resume).
    assert trainer._finished_run(dataclasses.replace(config, epochs=3)) is None


class _IdTokenizer:
    """Space-separated ids -> ragged int32 ids (no vocabulary needed)."""

    def tokenize(self, strings):
        return tf.ragged.map_flat_values(
            tf.strings.to_number, tf.strings.split(strings), out_type=tf.int32
        )


@pytest.mark.parametrize(
    "batching", [{"batch_size": 8}, {"batch_size": None, "batch_tokens": 200}]
)
def test_validation_batches_are_counted_exactly(batching):
    rng = np.random.default_rng(0)
    pairs = [
        (" ".join(["5"] * int(s)), " ".join(["6"] * int(t)))
        for s, t in rng.integers(1, 40, size=(300, 2))
    ]
    config = trainer.TrainConfig(train="t", output="o", max_length=32, **batching)
    tokenizer = _IdTokenizer()
    dataset = trainer._dataset(config, pairs, tokenizer, tokenizer, False, 0, False)
    counted = sum(1 for _ in dataset)
    assert counted > 10
    assert trainer._validation_batches(config, pairs, tokenizer, tokenizer) == counted


def _checkpoint(tmp_path, steps):
    """A `StepCheckpoint` on a tiny model, `fit` told `steps` per epoch."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.build(model.trainable_variables)
    checkpoint = StepCheckpoint(tmp_path, DataPosition())
    checkpoint.set_model(model)
    checkpoint.set_params({"steps": steps})
    checkpoint.on_train_begin()
    checkpoint.on_epoch_begin(0)
    return model, checkpoint


@pytest.mark.parametrize("steps, complete", [(2, True), (3, False)])
def test_an_epoch_stopped_after_its_last_batch_is_complete(tmp_path, steps, complete):
    model, checkpoint = _checkpoint(tmp_path, steps)
    for batch in range(2):
        model.optimizer.iterations.assign_add(1)
        checkpoint.on_train_batch_end(batch)
    model.stop_training = True  # e.g. the time limit, at batch 2
    checkpoint.on_epoch_end(0, {"loss": 1.0})
    assert checkpoint.epochs_completed == int(complete)
    state = json.loads((tmp_path / "step-00000002.json").read_text())
    assert state["epoch_complete"] is complete
    assert (state["epoch"], state["batch"]) == ((1, 0) if complete else (0, 2))


def test_interrupted_save_counts_the_steps_its_callbacks_missed(tmp_path):
    model, checkpoint = _checkpoint(tmp_path, 10)
    model.optimizer.iterations.assign_add(1)
    checkpoint.on_train_batch_end(0)
    # Ctrl-C after two more optimizer steps, before their callbacks.
    model.optimizer.iterations.assign_add(2)
    saved = checkpoint.save_interrupted()
    assert saved == str(tmp_path / "step-00000003.weights.h5")
    state = json.loads((tmp_path / "step-00000003.json").read_text())
    assert (state["epoch"], state["batch"], state["step"]) == (0, 3, 3)
    assert state["epoch_complete"] is False
    # Nothing new to save: the same checkpoint, not rewritten.
    mtime = os.stat(saved).st_mtime_ns
    assert checkpoint.save_interrupted() == saved
    assert os.stat(saved).st_mtime_ns == mtime


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["/usr/bin/keras-transformer", "train", "--output", "a b"], True),
        (["/x/keras_transformer/__main__.py", "train", "--output", "a b"], True),
        (["/x/pytest", "-q"], False),
    ],
)
def test_resume_command_is_this_command_line(monkeypatch, argv, expected):
    monkeypatch.setattr(sys, "argv", argv)
    command = trainer.resume_command(trainer.TrainConfig(train="t", output="a b"))
    if expected:
        assert command == "keras-transformer train --output 'a b'"
    else:
        assert "TrainConfig" in command and "'a b'" in command


def test_summary_lists_bleu_and_an_export_when_there(tmp_path):
    (tmp_path / "export").mkdir()
    config = trainer.TrainConfig(train="tsv:x.tsv", output=str(tmp_path), epochs=3)
    metrics = {
        "steps": 30,
        "planned_steps": 30,
        "epochs_completed": 3,
        "wall_seconds": 3725.0,
        "train_loss": 2.5,
        "valid_loss": float("nan"),
        "valid_bleu": 12.345,
        "resumed_from_step": None,
    }
    lines = trainer.run_summary(config, metrics)
    assert (
        lines[0]
        == "Training finished: 30 of 30 steps, 3 of 3 epochs complete, 1 h 02 min."
    )
    assert lines[1] == "  final train loss 2.5000, valid BLEU 12.35"
    assert f"  export:      {tmp_path}/export" in lines
    assert f"  keras-transformer evaluate --model {tmp_path} --test SPEC" in lines


# TensorFlow's C++ log lines, CUDA/oneDNN probing, absl's notices.
_NOISE = re.compile(
    r"^[IWEF]\d{4} |oneDNN|cuda|cuInit|cpu_feature_guard|absl|Warning:", re.I | re.M
)


def test_train_console_is_quiet_and_counts_its_batches(tmp_path):
    output = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env.pop("KERAS_TRANSFORMER_VERBOSE", None)
    flags = [f for f in FLAGS if f not in ("--max-minutes", "30")]
    flags[flags.index("--epochs") + 1] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "keras_transformer", *flags, "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-3000:]
    assert not _NOISE.findall(console), _NOISE.findall(console)
    steps = json.loads((output / "metrics.json").read_text())["steps"]
    assert steps > 3
    assert f"{steps}/{steps}" in console and "Unknown" not in console
    assert "Training finished: " in result.stdout
