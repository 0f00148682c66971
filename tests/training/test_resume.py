"""Step-exact resumption: kill -9, rerun, same weights; corrupted checkpoints."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from num2words import num2words

from keras_transformer.training.resume import DataPosition
from keras_transformer.training.resume import StepCheckpoint
from keras_transformer.training.resume import fit_by_epoch
from keras_transformer.training.resume import list_checkpoints
from keras_transformer.training.resume import restore_latest


def _stream(position, sizes=(7, 5, 6)):
    """Epoch e yields `sizes[e]` batches `100 * e + i`, in a seeded order."""

    def epoch_dataset(epoch):
        count = tf.gather(tf.constant(sizes, tf.int64), epoch)
        values = tf.data.Dataset.range(count).map(lambda i: 100 * epoch + i)
        return values.shuffle(16, seed=epoch)

    return position.dataset(epoch_dataset)


def _epoch(dataset):
    return [int(x) for x in dataset]


def test_data_position_resumes_the_rest_of_the_epoch():
    position = DataPosition()
    dataset = _stream(position)
    full = []
    for epoch in range(3):
        position.set(epoch, 0)
        full.append(_epoch(dataset))
    assert [sorted(e) for e in full] == [
        [100 * e + i for i in range(n)] for e, n in enumerate((7, 5, 6))
    ]
    # A fresh run resumed in epoch 1 after 3 of its batches.
    position = DataPosition()
    dataset = _stream(position)
    position.set(1, 3)
    assert _epoch(dataset) == full[1][3:]
    position.set(2, 0)
    assert _epoch(dataset) == full[2]


def test_endless_stream_skips_every_consumed_batch():
    position = DataPosition(repeat=True)
    dataset = position.dataset(
        lambda epoch: tf.data.Dataset.range(5).shuffle(5, seed=3).repeat()
    )
    position.set(0, 0)
    reference = [int(x) for x in dataset.take(12)]
    position = DataPosition(repeat=True)
    dataset = position.dataset(
        lambda epoch: tf.data.Dataset.range(5).shuffle(5, seed=3).repeat()
    )
    position.set(2, 7)  # Keras epoch 2, 7 batches consumed in all.
    assert [int(x) for x in dataset.take(5)] == reference[7:]


class _Seen(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = []

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.append(0)

    def on_train_batch_end(self, batch, logs=None):
        self.batches[-1] += 1


@pytest.mark.parametrize("by_epoch", [False, True])
def test_every_epoch_runs_all_its_batches_only_with_fit_by_epoch(by_epoch):
    """Keras 3.15 cuts later epochs of unknown cardinality to the first's."""
    position = DataPosition()
    sizes = (3, 6, 5)
    x = position.dataset(
        lambda epoch: tf.data.Dataset.range(
            tf.gather(tf.constant(sizes, tf.int64), epoch)
        )
    ).map(lambda i: (tf.fill((2, 3), tf.cast(i, tf.float32)), tf.zeros((2, 4))))
    model = _model()
    seen = _Seen()
    callbacks = [seen, keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: position.set(epoch, 0)
    )]  # fmt: skip
    if by_epoch:
        fit_by_epoch(model, x, epochs=3, callbacks=callbacks, verbose=0)
        assert seen.batches == [3, 6, 5]
    else:
        model.fit(x, epochs=3, callbacks=callbacks, verbose=0)
        # The first epoch's 3 batches (+1 for the call that hit the end).
        assert seen.batches == [3, 4, 4]


def _model():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dropout(0.3)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def _batches(epoch):
    x = tf.random.stateless_uniform((6, 4, 3), seed=tf.stack([epoch, epoch]))
    return tf.data.Dataset.from_tensor_slices((x, x[..., :1] * tf.ones((4, 4))))


def _fit(directory, epochs=2, initial_state=None, every=2):
    keras.utils.set_random_seed(0)
    model = _model()
    position = DataPosition()
    dataset = position.dataset(_batches)
    state = None
    if initial_state:
        model.build((None, 3))
        state = restore_latest(model, directory)
    checkpoint = StepCheckpoint(directory, position, every_steps=every, keep=2)
    if state:
        checkpoint.start(state["epoch"], state["batch"], state["consumed"])
    fit_by_epoch(
        model,
        dataset,
        epochs=epochs,
        initial_epoch=state["epoch"] if state else 0,
        callbacks=[checkpoint],
        verbose=0,
    )
    return model, state


def test_checkpoints_keep_the_last_k_and_carry_the_data_position(tmp_path):
    model, _ = _fit(tmp_path)
    names = [os.path.basename(p) for p in list_checkpoints(tmp_path)]
    # 6 batches x 2 epochs, every 2 batches and at epoch ends: last 2 kept.
    assert names == ["step-00000010.json", "step-00000012.json"]
    state = json.loads((tmp_path / "step-00000012.json").read_text())
    assert (state["step"], state["epoch"], state["batch"]) == (12, 2, 0)
    assert state["epoch_complete"] and state["consumed"] == 12
    assert sorted(state["history"]) == ["0", "1"]
    # One dropout seed generator, saved beside the weights.
    assert len(state["seed_states"]) == 1
    assert not list(tmp_path.glob("*.tmp*"))


def test_checkpoints_on_a_gfile_file_system():
    """gs:// and other `tf.io.gfile` paths (here TensorFlow's ram://)."""
    directory = "ram://resume-test/checkpoints"
    _, _ = _fit(directory)
    names = [os.path.basename(p) for p in list_checkpoints(directory)]
    assert names == ["step-00000010.json", "step-00000012.json"]
    model = _model()
    model.build((None, 3))
    assert restore_latest(model, directory)["step"] == 12


def test_resume_mid_epoch_equals_uninterrupted(tmp_path):
    full, _ = _fit(tmp_path / "full")
    # Stop after 4 batches of epoch 0 (a checkpoint at step 4), then resume.
    partial = tmp_path / "partial"
    _fit(partial, epochs=1)
    for path in list_checkpoints(partial):
        if not path.endswith("00000004.json"):
            os.remove(path)
    resumed, state = _fit(partial, initial_state=True)
    assert (state["step"], state["epoch"], state["batch"]) == (4, 0, 4)
    assert int(resumed.optimizer.iterations.numpy()) == 12 + 2  # keras: +1 per epoch
    for a, b in zip(full.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("damage", ["truncate", "garbage_json", "delete_weights"])
def test_corrupted_latest_checkpoint_falls_back_to_the_previous(tmp_path, damage):
    _fit(tmp_path)
    latest, previous = list_checkpoints(tmp_path)[-1], list_checkpoints(tmp_path)[-2]
    weights = latest.replace(".json", ".weights.h5")
    if damage == "truncate":
        with open(weights, "r+b") as f:
            f.truncate(os.path.getsize(weights) // 2)
    elif damage == "garbage_json":
        with open(latest, "w") as f:
            f.write('{"step": 1')
    else:
        os.remove(weights)
    model = _model()
    model.build((None, 3))
    with pytest.warns(UserWarning, match="Skipping checkpoint .*step-00000012"):
        state = restore_latest(model, tmp_path)
    assert state == json.loads(open(previous).read())
    assert state["step"] == 10
    # The bad one is out of the list, so retention cannot prefer it.
    assert list_checkpoints(tmp_path) == [previous]


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    _fit(tmp_path)
    for path in list_checkpoints(tmp_path):
        with open(path.replace(".json", ".weights.h5"), "wb") as f:
            f.write(b"not hdf5")
    model = _model()
    model.build((None, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="None of the 2 checkpoints"):
            restore_latest(model, tmp_path)


def _train_command(data, output):
    return [
        sys.executable, "-m", "keras_transformer", "train",
        "--train", f"tsv:{data}", "--output", str(output),
        "--epochs", "2", "--batch-size", "8", "--vocab-size", "60",
        "--max-length", "32", "--separate-vocabularies",
        "--checkpoint-every", "4", "--keep-checkpoints", "2", "--deterministic",
    ]  # fmt: skip


def _environment():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    env.pop("TF_CONFIG", None)
    return env


def _weights(path):
    import keras_transformer  # noqa: F401  (registers the classes)

    return [np.asarray(w) for w in keras.saving.load_model(path).get_weights()]


def _stderr_file(output):
    return output.with_name(output.name + ".err")


def _start(data, output, **kwargs):
    """`_train_command` in a subprocess; its stderr goes to `OUTPUT.err`
    (a file: a pipe nobody reads while the test polls could fill up)."""
    with open(_stderr_file(output), "a", encoding="utf-8") as stderr:
        return subprocess.Popen(
            _train_command(data, output),
            env=_environment(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            **kwargs,
        )


def test_kill_minus_nine_then_rerun_equals_uninterrupted(tmp_path):
    data = tmp_path / "train.tsv"
    data.write_text(
        "".join(
            f"{num2words(n)}\t{num2words(n, lang='de')}\n" for n in range(0, 300, 2)
        ),
        encoding="utf-8",
    )
    killed = tmp_path / "killed"
    resume = killed / "checkpoints" / "resume"
    uninterrupted = tmp_path / "uninterrupted"
    runs = []  # the uninterrupted run, then the rerun of the killed one

    def start_uninterrupted():
        # With the killed run's vocabulary files (written before its
        # train_config.json), side by side with the killed run's training.
        uninterrupted.mkdir()
        os.symlink(killed / "vocabulary", uninterrupted / "vocabulary")
        runs.append(_start(data, uninterrupted))

    process = _start(data, killed, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        try:
            while not (resume / "step-00000008.json").exists():
                assert process.poll() is None, "ended before its 2nd checkpoint"
                assert time.monotonic() < deadline, "no 2nd checkpoint in 240 s"
                if not runs and (killed / "train_config.json").exists():
                    start_uninterrupted()
                time.sleep(0.02)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        assert not (killed / "metrics.json").exists(), "killed after the end"
        assert not (killed / "model.keras").exists()
        if not runs:
            start_uninterrupted()
        runs.append(_start(data, killed))  # the rerun
        for run, output in zip(runs, (uninterrupted, killed)):
            run.wait(timeout=300)
            assert run.returncode == 0, _stderr_file(output).read_text()[-3000:]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
    resumed = json.loads((killed / "metrics.json").read_text())
    planned = json.loads((uninterrupted / "metrics.json").read_text())
    assert resumed["resumed_from_step"] >= 8
    assert planned["resumed_from_step"] is None
    assert resumed["steps"] == planned["steps"] > resumed["resumed_from_step"]
    assert resumed["epochs_completed"] == planned["epochs_completed"] == 2
    for a, b in zip(
        _weights(killed / "model.keras"), _weights(uninterrupted / "model.keras")
    ):
        np.testing.assert_allclose(a, b, atol=1e-6)


def _trainer_config(output, **overrides):
    from keras_transformer.training.trainer import TrainConfig

    settings = dict(
        train="demo:200",
        output=str(output),
        model_overrides={"num_layers": 1, "d_model": 16, "num_heads": 2, "d_ff": 32},
        vocab_size=40,
        shared_vocabulary=False,
        epochs=2,
        steps_per_epoch=5,
        batch_size=8,
        max_length=32,
        warmup_steps=4,
        checkpoint_every=3,
        keep_checkpoints=10,
        bleu_sentences=0,
        verbose=0,
        # Resuming is not about XLA; graph mode skips a compile per shape.
        jit_compile=False,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def test_endless_stream_resumed_mid_epoch_equals_uninterrupted(tmp_path):
    """`steps_per_epoch` set: the resumed epoch runs only its remaining
    batches, then the stream continues after every batch consumed."""
    import shutil

    from keras_transformer.training.trainer import train_translator

    full = tmp_path / "full"
    planned = train_translator(_trainer_config(full))
    assert planned["steps"] == 10
    # The same run, interrupted after its checkpoint at batch 3 of epoch 0.
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    for name in ("model.keras", "metrics.json"):
        (cut / name).unlink()
    resume = cut / "checkpoints" / "resume"
    for path in resume.iterdir():
        if not path.name.startswith("step-00000003."):
            path.unlink()
    resumed = train_translator(_trainer_config(cut))
    assert resumed["resumed_from_step"] == 3
    assert resumed["steps"] == planned["steps"] == 10
    assert resumed["optimizer_iterations"] == planned["optimizer_iterations"]
    for a, b in zip(_weights(full / "model.keras"), _weights(cut / "model.keras")):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_other_settings_on_the_same_output_are_refused(tmp_path):
    import dataclasses

    from keras_transformer import model_directory
    from keras_transformer.training.trainer import SetupError
    from keras_transformer.training.trainer import train_translator

    # What a first run writes before anything else.
    model_directory.write_json(
        tmp_path / "train_config.json", dataclasses.asdict(_trainer_config(tmp_path))
    )
    with pytest.raises(SetupError, match=r"other settings \(vocab_size: 40 -> 50"):
        train_translator(_trainer_config(tmp_path, vocab_size=50))
    # Nothing was trained or overwritten.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_config.json"]
