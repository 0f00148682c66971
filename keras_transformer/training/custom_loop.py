"""A `strategy.run` training loop for multi-worker training (and any strategy).

Keras 3's `model.fit` fails under a `tf.distribute.MultiWorkerMirroredStrategy`
with more than one worker (https://github.com/keras-team/keras/issues/20585;
with Keras 3.15.1 and TensorFlow 2.21, `Trainer._maybe_symbolic_build` passes
the `(x, y)` structure of `PerReplica` batches to `strategy.reduce`, which
raises `ValueError: Attempt to convert a value (PerReplica:{...}) with an
unsupported type`). `fit_custom_loop` trains the same compiled model with the
same loss, optimizer, schedule and metrics, with checkpoints that resume at the
exact step.
"""

import os
import signal
import threading
import warnings

CHECKPOINT_PREFIX = "ckpt"


def worker_info(strategy):
    """The number of workers of `strategy`'s cluster and this one's task id.

    Args:
        strategy: a `tf.distribute.Strategy`.

    Returns:
        A tuple `(number of workers, task id)`: the chief and worker tasks
        of the strategy's cluster resolver (at least 1), and this process's
        task id; `(1, None)` for a strategy without a cluster resolver.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1, None
    spec = resolver.cluster_spec().as_dict()
    workers = sum(
        len(tasks) for job, tasks in spec.items() if job in ("chief", "worker")
    )
    return max(workers, 1), resolver.task_id


def build_training_state(model, strategy, element_spec):
    """Creates the model, compiled loss/metrics and optimizer variables.

    The same symbolic build that `fit` does before its first step, under the
    strategy's scope and outside any replica context, from the dataset's
    `element_spec`. Also call it before `fit` under a strategy with several
    replicas: there Keras 3.15 builds from the replicas' first batches
    averaged with `strategy.reduce("MEAN")`, which turns integer token ids
    into floats (and fails outright across workers).
    """
    with strategy.scope():
        if hasattr(model, "_symbolic_build"):
            model._symbolic_build(data_batch=element_spec)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)


def _save_checkpoint(manager, progress, is_chief):
    """Saves `progress` steps; a non-chief worker's copy is deleted afterwards."""
    import tensorflow as tf

    path = manager.save(checkpoint_number=int(progress.numpy()))
    if not is_chief:
        # All workers must take part in a save (it reads distributed
        # variables), but only the chief's copy is kept.
        tf.io.gfile.rmtree(manager.directory)
    return path


def fit_custom_loop(
    model,
    dataset_fn,
    *,
    strategy,
    epochs,
    steps_per_epoch,
    checkpoint_dir,
    initial_epoch=0,
    callbacks=None,
    verbose=1,
    save_every_steps=None,
    max_to_keep=3,
    jit_compile=None,
    preemption_handling=True,
):
    """Trains a compiled Keras model with a `strategy.run` loop.

    Runs under any `tf.distribute` strategy, in particular
    `tf.distribute.MultiWorkerMirroredStrategy` with several workers, where
    Keras 3's `model.fit` fails (keras-team/keras#20585). Each step calls the
    model's own `train_step` in `strategy.run` inside a `tf.function`, so the
    loss (`model.compute_loss` with the compiled loss, e.g.
    `LabelSmoothedCrossEntropy`, exact token mean over all replicas), the
    optimizer (its learning-rate schedule reads `optimizer.iterations`), the
    gradient all-reduce and the metric updates are exactly those of `fit`. With
    the default strategy and the same batches, it gives the same weights as
    `model.fit`.

    What runs where: every worker runs this same function (same arguments) in
    its own process, with `TF_CONFIG` set before the strategy was created.
    `dataset_fn` runs once per worker (input pipeline) and gives that worker's
    per-replica batches; each step all-reduces the gradients (sum) across all
    replicas of all workers. Metrics are read at epoch end as their global
    values (their counters are summed over replicas). Checkpoints
    (`tf.train.Checkpoint(model=, optimizer=, progress=)`, `progress` = steps
    done counted from epoch 0) are written by every worker, as TensorFlow
    requires, but only the chief's land in `checkpoint_dir`; the others go to
    a temporary `checkpoint_dir/workertemp_<task_id>` that is deleted at once.
    `checkpoint_dir` must be shared by all workers (e.g. a GCS bucket) so that
    they all restore the same checkpoint.

    Fault tolerance: at start, the latest checkpoint of `checkpoint_dir` (if
    any) is restored and training resumes at the exact step where it was
    saved: epoch `progress // steps_per_epoch`, step `progress %
    steps_per_epoch`, with the data stream advanced by `Dataset.skip` past the
    batches already used (exact for a deterministic `dataset_fn`; metrics of a
    resumed epoch count the steps since the restart only). Checkpoints are
    saved every `save_every_steps` steps and at each epoch end. With
    `preemption_handling`, a `tf.distribute.experimental.
    PreemptionCheckpointHandler` also saves a checkpoint when any worker gets
    SIGTERM (or a platform preemption notice), at a step all workers agree on,
    and then exits the process with code 42 (Borg/default) or 143 (GCE), for
    the cluster manager to restart the job; it also propagates an error of one
    worker to all of them. (It installs a SIGTERM handler, so this is only
    done in the main thread; the previous handler is put back at the end.)
    With a single worker, a `KeyboardInterrupt` (Ctrl-C) during training
    saves a checkpoint of the current step before it propagates.

    Args:
        model: a compiled `keras.Model` (optimizer, loss and metrics) created,
            with its optimizer and metrics, under `strategy.scope()`, e.g. the
            `Transformer` of `keras_transformer.training.trainer.build_model`.
            Its inputs may be any structure (a dict) and its targets ints.
        dataset_fn: callable `input_context -> tf.data.Dataset` of
            *per-replica* batches `(inputs, targets)` (or with sample
            weights), given to `strategy.distribute_datasets_from_function`:
            shard it with `input_context.input_pipeline_id` and
            `input_context.num_input_pipelines`, and size batches with
            `input_context.get_per_replica_batch_size(global_batch_size)`. It
            should repeat: one iterator is used for the whole run (like `fit`
            with `steps_per_epoch` on an endless dataset).
        strategy: the `tf.distribute.Strategy` the model was built under.
        epochs: int, index of the last epoch (as in `fit`: trains epochs
            `initial_epoch` .. `epochs - 1`).
        steps_per_epoch: int, steps (global batches) per epoch.
        checkpoint_dir: str, directory of the checkpoints (created if
            missing).
        initial_epoch: int, epoch to start at when `checkpoint_dir` holds no
            later checkpoint. Defaults to `0`. Give the same value when
            restarting.
        callbacks: optional list of `keras.callbacks.Callback`; they get
            `on_train_begin`, `on_epoch_begin`, `on_train_batch_begin`,
            `on_train_batch_end` (with empty logs: metrics are only read at
            epoch end), `on_epoch_end(epoch, logs)` and `on_train_end`, on
            every worker. With a single worker, `model.stop_training = True`
            (e.g. from `WallClockLimit`) ends the epoch after that step, then
            training, as in `fit`; with several workers it is ignored (with a
            warning), as the workers cannot agree on when to stop.
        verbose: int, `0` for silence, otherwise one line per epoch and
            `resuming from step N of M (checkpoint PATH)` when a checkpoint
            is restored (on the chief only). Defaults to `1`.
        save_every_steps: optional int, also save every that many steps.
            Defaults to `None` (at epoch ends and on preemption only).
        max_to_keep: int, checkpoints kept in `checkpoint_dir`. Defaults to
            `3`.
        jit_compile: bool, compile the step with XLA. Defaults to `None`:
            `model.jit_compile` with a single worker, `False` with several
            (cross-worker collectives do not compile with XLA on CPU).
        preemption_handling: bool, use a `PreemptionCheckpointHandler`.
            Defaults to `True`.

    Returns:
        A dict `{metric name: [value per epoch run]}` like
        `model.fit(...).history`, e.g. `{"loss": [...], "masked_accuracy":
        [...]}`, with one value per epoch run by this call (a resumed epoch
        included).

    Example:

    ```python
    import keras
    import tensorflow as tf
    from keras_transformer.training import fit_custom_loop, get_strategy

    # On a cluster: get_strategy("multiworker"), with TF_CONFIG set on every
    # worker, and a checkpoint_dir that all of them share ("gs://...").
    strategy = get_strategy("default")
    global_batch = 16

    def dataset_fn(input_context):
        batch = input_context.get_per_replica_batch_size(global_batch)
        x = tf.random.stateless_uniform((256, 4), seed=(1, 2))
        y = tf.reduce_sum(x, axis=1, keepdims=True)
        return (
            tf.data.Dataset.from_tensor_slices((x, y))
            .shard(input_context.num_input_pipelines,
                   input_context.input_pipeline_id)
            .repeat()
            .batch(batch, drop_remainder=True)
        )

    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
    history = fit_custom_loop(
        model, dataset_fn, strategy=strategy, epochs=2, steps_per_epoch=5,
        checkpoint_dir="run/checkpoints", save_every_steps=2,
    )
    print(history["loss"])  # one value per epoch
    ```
    """
    import tensorflow as tf

    _check_loop_arguments(
        model, epochs, steps_per_epoch, initial_epoch, save_every_steps
    )
    num_workers, task_id = worker_info(strategy)
    is_chief = bool(strategy.extended.should_checkpoint)
    if jit_compile is None:
        jit_compile = bool(model.jit_compile) if num_workers == 1 else False
    # State: model, loss, metrics and optimizer variables, and the step count.
    element_spec = dataset_fn(tf.distribute.InputContext()).element_spec
    build_training_state(model, strategy, element_spec)
    first_step = initial_epoch * steps_per_epoch
    progress = _Progress(
        model,
        strategy,
        checkpoint_dir,
        first_step=first_step,
        max_to_keep=max_to_keep,
        task_id=task_id,
        is_chief=is_chief,
    )
    progress.restore(verbose=verbose and is_chief, planned=epochs * steps_per_epoch)
    # Data: one iterator for the whole run, past the batches already used.
    iterator = iter(
        strategy.distribute_datasets_from_function(
            _skipping_dataset_fn(dataset_fn, progress.step - first_step)
        )
    )
    train_step = _train_step_function(model, strategy, progress.variable, jit_compile)
    # The handler installs a SIGTERM handler: main thread only, and the
    # previous one is put back at the end.
    handle_preemption = (
        preemption_handling and threading.current_thread() is threading.main_thread()
    )
    previous_sigterm = signal.getsignal(signal.SIGTERM) if handle_preemption else None
    loop = _EpochLoop(
        model,
        strategy,
        progress,
        train_step,
        iterator,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        save_every_steps=save_every_steps,
        num_workers=num_workers,
        verbose=verbose and is_chief,
        callbacks=callbacks,
        handler=_preemption_handler(strategy, progress, checkpoint_dir)
        if handle_preemption
        else None,
    )
    try:
        return loop.run()
    finally:
        if loop.handler is not None:
            signal.signal(
                signal.SIGTERM,
                signal.SIG_DFL if previous_sigterm is None else previous_sigterm,
            )
            # Stops its watcher threads (a daemon thread waits on the
            # coordination service under a multi-worker strategy).
            loop.handler = None


def _check_loop_arguments(
    model, epochs, steps_per_epoch, initial_epoch, save_every_steps
):
    """Raises `ValueError` for an uncompiled model or bad epoch/step counts."""
    if getattr(model, "optimizer", None) is None or not model.compiled:
        raise ValueError("`model` must be compiled (optimizer, loss, metrics).")
    for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{name}` must be a positive int. Received: {name}={value!r}"
            )
    if not 0 <= initial_epoch <= epochs:
        raise ValueError(
            "`initial_epoch` must be in [0, epochs]. Received: "
            f"initial_epoch={initial_epoch}, epochs={epochs}"
        )
    if save_every_steps is not None and save_every_steps < 1:
        raise ValueError(
            "`save_every_steps` must be a positive int or None. Received: "
            f"save_every_steps={save_every_steps!r}"
        )


def _checkpoint_manager(checkpoint, directory, max_to_keep):
    import tensorflow as tf

    return tf.train.CheckpointManager(
        checkpoint,
        directory,
        max_to_keep=max_to_keep,
        checkpoint_name=CHECKPOINT_PREFIX,
    )


class _Progress:
    """The step count of a `fit_custom_loop` run and its checkpoints.

    Holds `variable`, an int64 variable counting the steps done from epoch
    0, and a `tf.train.Checkpoint(model=, optimizer=, progress=)`. The chief
    reads and writes `checkpoint_dir`; another worker writes a temporary
    `checkpoint_dir/workertemp_<task_id>` that is deleted after each save
    (every worker must take part in a save).

    Args:
        model: the compiled, built model.
        strategy: the `tf.distribute.Strategy` it was built under.
        checkpoint_dir: str, the checkpoints' directory (created).
        first_step: int, the step the run starts at without a later
            checkpoint.
        max_to_keep: int, checkpoints kept in `checkpoint_dir`.
        task_id: this worker's task id (`None` with one worker).
        is_chief: bool, whether this worker keeps its checkpoints.
    """

    def __init__(
        self,
        model,
        strategy,
        checkpoint_dir,
        *,
        first_step,
        max_to_keep,
        task_id,
        is_chief,
    ):
        import tensorflow as tf

        with strategy.scope():
            self.variable = tf.Variable(
                first_step, dtype="int64", trainable=False, name="progress"
            )
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=model.optimizer, progress=self.variable
        )
        tf.io.gfile.makedirs(checkpoint_dir)
        self.first_step = first_step
        self.is_chief = is_chief
        self.reader = _checkpoint_manager(self.checkpoint, checkpoint_dir, max_to_keep)
        self.writer = self.reader
        if not is_chief:
            self.writer = _checkpoint_manager(
                self.checkpoint,
                os.path.join(checkpoint_dir, f"workertemp_{task_id}"),
                max_to_keep=1,
            )
        self.saved_at = None

    @property
    def step(self):
        """Steps done, counted from epoch 0."""
        return int(self.variable.numpy())

    def restore(self, verbose=False, planned=None):
        """Restores the latest checkpoint, if any, and starts after it.

        The run starts at the restored step, or at `first_step` when that is
        later (or there is no checkpoint). With `verbose`, prints
        `resuming from step N of PLANNED (checkpoint PATH)`.
        """
        path = self.reader.latest_checkpoint
        if path:
            self.checkpoint.restore(path).expect_partial()
            self.saved_at = self.step
            if verbose:
                print(
                    f"resuming from step {self.saved_at} of {planned} "
                    f"(checkpoint {path})",
                    flush=True,
                )
        self.variable.assign(max(self.step, self.first_step))

    def save(self):
        """Saves a checkpoint of the current step, unless it has one already."""
        if self.saved_at != self.step:
            _save_checkpoint(self.writer, self.variable, self.is_chief)
            self.saved_at = self.step


def _skipping_dataset_fn(dataset_fn, skip):
    """`dataset_fn` with the first `skip` global batches of its stream dropped.

    Each input pipeline drops its share: `skip` times the replicas it feeds.

    Args:
        dataset_fn: callable `input_context -> tf.data.Dataset` of
            per-replica batches.
        skip: int, global batches (steps) already trained on.

    Returns:
        A callable like `dataset_fn`.
    """

    def distributed_dataset_fn(input_context):
        dataset = dataset_fn(input_context)
        if skip:
            per_pipeline = max(
                input_context.num_replicas_in_sync // input_context.num_input_pipelines,
                1,
            )
            dataset = dataset.skip(skip * per_pipeline)
        return dataset

    return distributed_dataset_fn


def _train_step_function(model, strategy, progress, jit_compile):
    """A `tf.function(iterator)`: `model.train_step` on every replica, then
    one more step in `progress`."""
    import tensorflow as tf

    def replica_step(data):
        model.train_step(data)

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def train_step(iterator):
        strategy.run(replica_step, args=(next(iterator),))
        progress.assign_add(1)

    return train_step


def _preemption_handler(strategy, progress, checkpoint_dir):
    """A `PreemptionCheckpointHandler` that saves with `progress.save`."""
    import tensorflow as tf

    return tf.distribute.experimental.PreemptionCheckpointHandler(
        strategy.cluster_resolver,
        progress.checkpoint,
        checkpoint_dir,
        termination_config=tf.distribute.experimental.TerminationConfig(
            save_fn=progress.save
        ),
    )


class _EpochLoop:
    """The epochs and steps of `fit_custom_loop`, with callbacks and saves.

    `handler` is a `PreemptionCheckpointHandler` that runs each step, or
    `None`; `callbacks` a list of callbacks or `None`.
    """

    def __init__(
        self,
        model,
        strategy,
        progress,
        train_step,
        iterator,
        *,
        epochs,
        steps_per_epoch,
        save_every_steps,
        num_workers,
        verbose,
        callbacks,
        handler,
    ):
        self.model = model
        self.strategy = strategy
        self.progress = progress
        self.train_step = train_step
        self.iterator = iterator
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.save_every_steps = save_every_steps
        self.num_workers = num_workers
        self.verbose = verbose
        self.callbacks = callbacks
        self.handler = handler

    def run(self):
        """Runs the epochs left; returns the history dict."""
        import keras

        callback_list = keras.callbacks.CallbackList(
            self.callbacks,
            model=self.model,
            epochs=self.epochs,
            steps=self.steps_per_epoch,
            verbose=0,
        )
        history = {}
        logs = None
        self.model.stop_training = False
        callback_list.on_train_begin()
        first_epoch = self.progress.step // self.steps_per_epoch
        try:
            for epoch in range(first_epoch, self.epochs):
                stop, logs = self._run_epoch(epoch, callback_list)
                for name, value in logs.items():
                    history.setdefault(name, []).append(value)
                if stop:
                    self.model.stop_training = True
                    break
        except KeyboardInterrupt:
            # A save reads distributed variables: every worker must take
            # part, so only a lone worker can save on its own Ctrl-C.
            if self.num_workers == 1:
                self.progress.save()
            raise
        callback_list.on_train_end(logs=logs)
        return history

    def _run_epoch(self, epoch, callback_list):
        """Runs the rest of `epoch`.

        Returns:
            `(stop, logs)`: whether training stops after this epoch, and
            the epoch's metric values.
        """
        begin = self.progress.step - epoch * self.steps_per_epoch
        if begin == 0:
            self.model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        stop = False
        for step in range(begin, self.steps_per_epoch):
            if self.callbacks:
                callback_list.on_train_batch_begin(step)
            self._step()
            if self.callbacks:
                callback_list.on_train_batch_end(step, {})
                stop = self.should_stop()
                if stop:
                    break
        logs = self._metric_values()
        self.progress.save()
        if self.verbose:
            values = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"Epoch {epoch + 1}/{self.epochs} - {values}", flush=True)
        callback_list.on_epoch_end(epoch, logs)
        return stop or bool(self.callbacks and self.should_stop()), logs

    def _step(self):
        """One train step (through the preemption handler), maybe a save."""
        if self.handler is not None:
            self.handler.run(self.train_step, self.iterator)
        else:
            self.train_step(self.iterator)
        every = self.save_every_steps
        if every and self.progress.step % every == 0:
            self.progress.save()

    def _metric_values(self):
        """The model's metrics as floats (global values across replicas)."""
        with self.strategy.scope():
            return {
                name: float(value)
                for name, value in self.model.get_metrics_result().items()
            }

    def should_stop(self):
        """Whether `model.stop_training` was set (heeded with one worker only)."""
        if not getattr(self.model, "stop_training", False):
            return False
        if self.num_workers == 1:
            return True
        # The workers would have to agree on the step to stop at; a separate
        # cross-worker all-reduce between steps would desynchronize the
        # collectives of the preemption handler.
        warnings.warn(
            "`model.stop_training` is ignored with several workers: every "
            "worker must run the same steps.",
            # The caller of `fit_custom_loop`.
            stacklevel=5,
        )
        self.model.stop_training = False
        return False
