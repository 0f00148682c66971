"""Step-exact resumption of `model.fit` after a crash, a kill or a preemption.

Keras 3's `BackupAndRestore` restores the weights of the last finished epoch
(or of the last `save_freq` batch) but restarts the data of the interrupted
epoch from its beginning, so some batches are applied twice. Here the
training state is the pair *(weights + optimizer + dropout RNG, data
position)*, saved together every N steps and at every epoch end:

- `DataPosition` makes the training stream a function of two host
  variables, the epoch (which seeds that epoch's shuffle) and the number of
  batches to skip at its start, so the stream of a resumed run is exactly the
  rest of the interrupted one;
- `StepCheckpoint` (a callback) writes `step-NNNNNNNN.weights.h5` (model and
  optimizer, `model.save_weights`) then `step-NNNNNNNN.json` (the data
  position, the dropout seed-generator states, the per-epoch history) into
  one directory, each atomically, keeping the last `keep` of them. The JSON
  file is written last: it marks a complete checkpoint;
- `restore_latest` loads the newest complete checkpoint whose files read
  back; a corrupted one is skipped with a warning, falling back to the
  previous one.

Skipping is done by the input pipeline on the host (the skipped batches are
read and tokenized again, not trained on): resuming costs up to one epoch of
input processing (twice: a probe checks that the epoch has batches left)
when epochs are passes over the data, and all the batches consumed so far
when `steps_per_epoch` is set (one endless stream).
"""

import json
import os
import re
import shutil
import tempfile
import warnings

import keras
import numpy as np

from keras_transformer.training.checkpoints import list_step_checkpoints
from keras_transformer.training.checkpoints import read_checkpoint_arrays

STATE_VERSION = 1
_NAME = re.compile(r"^step-\d+\.json$")


def _seed_states(model):
    """The dropout seed-generator state variables (not in `save_weights`)."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


class DataPosition:
    """Where a training run is in its data: epoch and batches consumed.

    Holds two int64 host variables and wraps an epoch-dataset factory into a
    dataset that Keras can iterate: each time Keras starts iterating it
    (every epoch, or once per `fit` when `steps_per_epoch` is set), the
    factory is called with the current epoch and the first `skip` batches
    are dropped. `StepCheckpoint` sets them at every epoch start.

    Args:
        repeat: bool, whether the factory returns one endless stream (used
            with `steps_per_epoch`); then the stream is always epoch 0 and
            `skip` counts every batch consumed since the start.

    Example:

    ```python
    import keras
    import tensorflow as tf
    from keras_transformer.training.resume import (
        DataPosition, StepCheckpoint, fit_by_epoch)

    def make_epoch_dataset(epoch):  # an int64 tensor: seeds the epoch's order
        numbers = tf.data.Dataset.range(32).shuffle(32, seed=7 + epoch)
        pairs = numbers.map(lambda n: (tf.cast([n], "float32"),) * 2)
        return pairs.batch(8)  # 4 batches per epoch

    position = DataPosition()
    dataset = position.dataset(make_epoch_dataset)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    checkpoint = StepCheckpoint("run/resume", position, every_steps=2)
    fit_by_epoch(model, dataset, epochs=2, callbacks=[checkpoint], verbose=0)

    # A run restarted after 2 batches of epoch 1 sees the 2 batches left:
    position.set(epoch=1, skip=2)
    print(len(list(dataset)))  # 2
    ```
    """

    def __init__(self, repeat=False):
        import tensorflow as tf

        self.repeat = repeat
        # On the host: tf.data reads them, whatever the strategy's devices.
        with tf.device("/cpu:0"):
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.skip = tf.Variable(0, dtype=tf.int64, trainable=False)

    def dataset(self, make_epoch_dataset):
        """`make_epoch_dataset(epoch: int64 tensor) -> tf.data.Dataset`, resumable."""
        import tensorflow as tf

        def epoch_dataset(_):
            return make_epoch_dataset(self.epoch).skip(self.skip)

        return tf.data.Dataset.from_tensors(tf.constant(0)).flat_map(epoch_dataset)

    def set(self, epoch, skip):
        """The next iteration starts `skip` batches into `epoch`'s data
        (into the one stream, whatever `epoch`, when `repeat`)."""
        self.epoch.assign(0 if self.repeat else epoch)
        self.skip.assign(skip)


class StepCheckpoint(keras.callbacks.Callback):
    """Saves the full training state every `every_steps` steps and at epoch end.

    Each checkpoint is `DIR/step-NNNNNNNN.weights.h5` (model + optimizer
    variables, `model.save_weights`) and `DIR/step-NNNNNNNN.json`:
    `{"step", "optimizer_iterations", "epoch", "batch", "consumed",
    "epoch_complete", "seed_states", "history"}` where `step` is the number
    of batches trained on, and `epoch`/`batch` is where the data continues (the epoch
    to run and the batches of it already trained on) and `consumed` the
    batches taken from the stream since the start. Both files are written to
    temporary names and renamed, the JSON last, so a checkpoint is complete
    exactly when its JSON exists. The last `keep` are kept.

    An epoch that ends because `model.stop_training` was set (a time limit,
    early stopping) before its last batch (the `steps` of `fit`, when known)
    is recorded as not complete: a rerun finishes it.

    `save_interrupted()` saves the state reached when `fit` is cut short by
    an exception (Ctrl-C's `KeyboardInterrupt`), counting the batches the
    optimizer applied since the last `on_train_batch_end`.

    Args:
        directory: str, where to write (created).
        position: the run's `DataPosition`.
        every_steps: int or `None`, save every this many optimizer steps
            (checked every `steps_per_execution` steps); `None`: epoch ends
            only.
        keep: int >= 1, checkpoints kept.
        history: dict `{epoch: logs}` of the epochs before a resume, carried
            into the checkpoints (and `self.history`).

    Attributes:
        steps: batches trained on since the start of the run.
        epochs_completed: epochs whose every batch was trained on.
        last_saved: the path of the last checkpoint's weights file written
            or restored, or `None`.
    """

    @property
    def steps(self):
        """Batches trained on since the start of the run (all restarts)."""
        return self._consumed

    def __init__(self, directory, position, every_steps=None, keep=3, history=None):
        super().__init__()
        if every_steps is not None and (
            isinstance(every_steps, bool)
            or not isinstance(every_steps, int)
            or every_steps < 1
        ):
            raise ValueError(
                f"`every_steps` must be an int >= 1 or None. Received: {every_steps!r}"
            )
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"`keep` must be an int >= 1. Received: {keep!r}")
        self.directory = os.fspath(directory)
        self.position = position
        self.every_steps = every_steps
        self.keep = keep
        self.history = {int(k): v for k, v in (history or {}).items()}
        self.last_saved = None
        self._saved_step = None
        self._iterations = None
        self.start(0, 0, 0)
        self._offset = 0

    def start(self, epoch, batch, consumed):
        """Where the run starts: `(0, 0, 0)` for a new run, else the state's.

        Also positions the data stream there. The epochs before `epoch`
        count as completed.
        """
        self._start_epoch, self._start_batch = epoch, batch
        self._epoch, self._batch, self._consumed = epoch, batch, consumed
        self.epochs_completed = epoch
        self.position.set(epoch, consumed if self.position.repeat else batch)

    def path(self, step):
        """The weights file of the checkpoint of `step`."""
        return os.path.join(self.directory, f"step-{step:08d}.weights.h5")

    def restored(self, step):
        """Records that the run continues from the checkpoint of `step`."""
        self._saved_step = step
        self.last_saved = self.path(step)

    def on_train_begin(self, logs=None):
        self._iterations = self._step()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._offset = self._start_batch if epoch == self._start_epoch else 0
        self._batch = self._offset
        # An endless stream has one iterator per `fit`: `start` placed it.
        if not self.position.repeat:
            self.position.set(epoch, self._offset)

    def _step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the index of the last batch run in this epoch (every
        # `steps_per_execution` batches); data position counts batches, not
        # optimizer steps (a mixed_float16 overflow skips a step).
        seen = self._offset + batch + 1
        done = seen - self._batch
        iterations = self._step()
        if not self.position.repeat:
            # The last call of an epoch of unknown length may run fewer than
            # `steps_per_execution` batches, but Keras reports a full one;
            # the optimizer did not step for the missing ones. (The call that
            # hits the end of the data adds one iteration without a batch:
            # hence the minimum.)
            done = min(done, iterations - self._iterations)
        self._iterations = iterations
        before = self._consumed
        self._consumed += done
        self._batch = seen
        if self.every_steps and (
            self._consumed // self.every_steps != before // self.every_steps
        ):
            self._save(self._epoch, self._batch, epoch_complete=False)

    def on_epoch_end(self, epoch, logs=None):
        self.history[epoch] = {k: float(v) for k, v in (logs or {}).items()}
        steps = (self.params or {}).get("steps")
        finished = bool(steps) and self._batch - self._offset >= steps
        if self.model.stop_training and not finished:
            self._save(epoch, self._batch, epoch_complete=False)
        else:
            self.epochs_completed = epoch + 1
            self._save(epoch + 1, 0, epoch_complete=True)

    def save_interrupted(self):
        """Saves where training is now, after `fit` was interrupted.

        The batches the optimizer stepped on since the last
        `on_train_batch_end` (an interruption between a train step and its
        callbacks) are counted as trained. Nothing is written when the last
        checkpoint is already of the current step.

        Returns:
            The weights file of the checkpoint of the current step, or
            `None` when training never started (no model yet).
        """
        if self.model is None or self._iterations is None:
            return self.last_saved
        missed = self._step() - self._iterations
        if missed > 0:
            self._iterations += missed
            self._consumed += missed
            self._batch += missed
        if self._saved_step != self._consumed:
            self._save(self._epoch, self._batch, epoch_complete=False)
        return self.last_saved

    def _save(self, epoch, batch, epoch_complete):
        import tensorflow as tf

        # Steps are batches trained on. `optimizer.iterations` can be ahead:
        # Keras 3.15 adds one per epoch of a dataset of unknown cardinality
        # (the call that finds the data exhausted still increments it).
        step = self._consumed
        gfile = tf.io.gfile
        gfile.makedirs(self.directory)
        stem = self.path(step)[: -len(".weights.h5")]
        tmp = f"{stem}.tmp.weights.h5"
        self.model.save_weights(tmp)  # Keras copies to gs:// etc. itself.
        gfile.rename(tmp, f"{stem}.weights.h5", overwrite=True)
        state = {
            "version": STATE_VERSION,
            "step": step,
            "optimizer_iterations": self._step(),
            "epoch": epoch,
            "batch": batch,
            "consumed": self._consumed,
            "epoch_complete": epoch_complete,
            "seed_states": [
                np.asarray(keras.ops.convert_to_numpy(v)).tolist()
                for v in _seed_states(self.model)
            ],
            "history": {str(k): v for k, v in sorted(self.history.items())},
        }
        with gfile.GFile(f"{stem}.json.tmp", "w") as f:
            f.write(json.dumps(state))
        gfile.rename(f"{stem}.json.tmp", f"{stem}.json", overwrite=True)
        self._saved_step = step
        self.last_saved = f"{stem}.weights.h5"
        for old in list_checkpoints(self.directory)[: -self.keep]:
            for suffix in (".json", ".weights.h5"):
                path = old[: -len(".json")] + suffix
                if gfile.exists(path):
                    gfile.remove(path)

    def get_config(self):
        return {
            "directory": self.directory,
            "every_steps": self.every_steps,
            "keep": self.keep,
        }


class _StopAfterOneEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def fit_by_epoch(
    model,
    dataset,
    *,
    epochs,
    initial_epoch=0,
    callbacks=(),
    stop=None,
    epoch_steps=None,
    **kwargs,
):
    """`model.fit` one epoch at a time, for datasets of unknown cardinality.

    Keras 3.15 counts the batches of the first epoch of a dataset of unknown
    cardinality (a `filter`, `group_by_window`, `flat_map`...) and cuts every
    later epoch of the same `fit` to that count. Length-bucketed epochs vary
    in length, and the first epoch of a resumed run is a remainder, so each
    epoch gets its own `fit` call here (the compiled train function is
    reused; the progress bar still reads "Epoch e/epochs").

    Args:
        model: a compiled Keras model.
        dataset: what `fit` takes; iterated anew each epoch.
        epochs, initial_epoch: as in `fit`.
        callbacks: list of callbacks, passed to every call.
        stop: optional callable; when it returns `True` after an epoch, no
            more epochs run (e.g. a `WallClockLimit` that fired).
        epoch_steps: optional callable `epoch -> int`, the batches of that
            epoch's data (counted once; a resumed epoch has fewer), given to
            `fit` as `steps_per_epoch`: the progress bar then shows the
            count, and Keras neither counts the batches itself nor warns
            that the input ran out of data.
        **kwargs: other `fit` arguments (`validation_data`, `verbose`...).

    Returns:
        The list of per-call `History` objects.
    """
    histories = []
    for epoch in range(initial_epoch, epochs):
        steps = {"steps_per_epoch": epoch_steps(epoch)} if epoch_steps else {}
        histories.append(
            model.fit(
                dataset,
                epochs=epochs,
                initial_epoch=epoch,
                callbacks=list(callbacks) + [_StopAfterOneEpoch()],
                **steps,
                **kwargs,
            )
        )
        if stop is not None and stop():
            break
    return histories


def list_checkpoints(directory):
    """The complete checkpoints' JSON paths in `directory`, oldest first.

    `directory` may be local or any `tf.io.gfile` path (`gs://...`). The
    listing is `checkpoints.list_step_checkpoints`'s, kept to the names
    `StepCheckpoint` writes (`step-NNNNNNNN.json`).
    """
    return [
        path
        for _, path in list_step_checkpoints(directory, "step-*.json")
        if _NAME.match(os.path.basename(path))
    ]


def restore_latest(model, directory):
    """Loads the newest readable checkpoint of `directory` into `model`.

    `model` must be built and compiled (its optimizer is built here). A
    checkpoint whose JSON or weights file cannot be read (truncated,
    corrupted, missing) is skipped with a `UserWarning` naming the file and
    the error, and the previous one is tried.

    Returns:
        The checkpoint's state dict (see `StepCheckpoint`), or `None` when
        the directory holds no checkpoint.

    Raises:
        ValueError: when checkpoints exist but none can be read.
    """
    import tensorflow as tf

    candidates = list_checkpoints(directory)
    if not candidates:
        return None
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    seeds = _seed_states(model)
    failures = []
    for path in reversed(candidates):
        weights = path[: -len(".json")] + ".weights.h5"
        scratch = None
        try:
            with tf.io.gfile.GFile(path, "r") as f:
                state = json.loads(f.read())
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"unknown state version {state.get('version')!r}")
            if len(state["seed_states"]) != len(seeds):
                raise ValueError(
                    f"{len(state['seed_states'])} seed-generator states for a "
                    f"model with {len(seeds)}"
                )
            local = weights
            if "://" in weights:  # gs://...: read a local copy (h5py).
                scratch = tempfile.mkdtemp()
                local = os.path.join(scratch, os.path.basename(weights))
                tf.io.gfile.copy(weights, local)
            # Reads every array first: a truncated file fails here, before
            # the model is touched.
            read_checkpoint_arrays(local)
            model.load_weights(local)
        except Exception as error:  # JSON, h5py, shape mismatch...
            failures.append(f"{os.path.basename(path)}: {error}")
            # Out of the list (kept for inspection): otherwise it would stay
            # "the latest" and retention would delete the new ones first.
            tf.io.gfile.rename(path, path + ".bad", overwrite=True)
            warnings.warn(
                f"Skipping checkpoint {weights!r}: it cannot be read "
                f"({type(error).__name__}: {error}); its JSON is renamed "
                "*.json.bad. Trying the previous one.",
                UserWarning,
                stacklevel=2,
            )
            continue
        finally:
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
        for variable, value in zip(seeds, state["seed_states"]):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        return state
    raise ValueError(
        f"None of the {len(candidates)} checkpoints in {directory!r} can be "
        f"read: {'; '.join(failures)}. Their JSON files are renamed "
        "*.json.bad; run again to start over."
    )
