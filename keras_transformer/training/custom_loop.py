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


def _worker_info(strategy):
    """`(number of workers, task id)` of this process in `strategy`'s cluster."""
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
        verbose: int, `0` for silence, otherwise one line per epoch (on the
            chief only). Defaults to `1`.
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
    strategy = get_strategy("multiworker")  # TF_CONFIG set on every worker
    global_batch = 64

    def dataset_fn(input_context):
        batch = input_context.get_per_replica_batch_size(global_batch)
        return (
            make_pairs_dataset()
            .shard(input_context.num_input_pipelines,
                   input_context.input_pipeline_id)
            .repeat()
            .batch(batch, drop_remainder=True)
        )

    with strategy.scope():
        model = Transformer(vocabulary_size=8000)
        model.compile(
            optimizer=transformer_optimizer(model.d_model),
            loss=LabelSmoothedCrossEntropy(),
            metrics=[MaskedAccuracy()],
        )
    history = fit_custom_loop(
        model, dataset_fn, strategy=strategy, epochs=10,
        steps_per_epoch=1000, checkpoint_dir="gs://bucket/run/checkpoints",
        save_every_steps=200,
    )
    ```
    """
    import keras
    import tensorflow as tf

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

    num_workers, task_id = _worker_info(strategy)
    is_chief = bool(strategy.extended.should_checkpoint)
    if jit_compile is None:
        jit_compile = bool(model.jit_compile) if num_workers == 1 else False

    # State: model, loss, metrics and optimizer variables, and the step count.
    element_spec = dataset_fn(tf.distribute.InputContext()).element_spec
    build_training_state(model, strategy, element_spec)
    with strategy.scope():
        progress = tf.Variable(
            initial_epoch * steps_per_epoch,
            dtype="int64",
            trainable=False,
            name="progress",
        )
    checkpoint = tf.train.Checkpoint(
        model=model, optimizer=model.optimizer, progress=progress
    )
    tf.io.gfile.makedirs(checkpoint_dir)
    read_manager = tf.train.CheckpointManager(
        checkpoint,
        checkpoint_dir,
        max_to_keep=max_to_keep,
        checkpoint_name=CHECKPOINT_PREFIX,
    )
    if is_chief:
        write_manager = read_manager
    else:
        write_manager = tf.train.CheckpointManager(
            checkpoint,
            os.path.join(checkpoint_dir, f"workertemp_{task_id}"),
            max_to_keep=1,
            checkpoint_name=CHECKPOINT_PREFIX,
        )
    restored_step = None
    if read_manager.latest_checkpoint:
        checkpoint.restore(read_manager.latest_checkpoint).expect_partial()
        restored_step = int(progress.numpy())
        if verbose and is_chief:
            print(
                f"Restored {read_manager.latest_checkpoint} (step {restored_step}).",
                flush=True,
            )
    start = max(int(progress.numpy()), initial_epoch * steps_per_epoch)
    progress.assign(start)
    saved = {"at": restored_step}

    def save():
        if saved["at"] != int(progress.numpy()):
            _save_checkpoint(write_manager, progress, is_chief)
            saved["at"] = int(progress.numpy())

    # Data: one iterator for the whole run, past the batches already used.
    skip = start - initial_epoch * steps_per_epoch

    def distributed_dataset_fn(input_context):
        dataset = dataset_fn(input_context)
        if skip:
            per_pipeline = max(
                input_context.num_replicas_in_sync // input_context.num_input_pipelines,
                1,
            )
            dataset = dataset.skip(skip * per_pipeline)
        return dataset

    iterator = iter(strategy.distribute_datasets_from_function(distributed_dataset_fn))

    def replica_step(data):
        model.train_step(data)

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def train_step(iterator):
        strategy.run(replica_step, args=(next(iterator),))
        progress.assign_add(1)

    handler = None
    previous_sigterm = None
    if preemption_handling and threading.current_thread() is threading.main_thread():
        previous_sigterm = signal.getsignal(signal.SIGTERM)
        handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            strategy.cluster_resolver,
            checkpoint,
            checkpoint_dir,
            termination_config=tf.distribute.experimental.TerminationConfig(
                save_fn=save
            ),
        )

    callback_list = keras.callbacks.CallbackList(
        callbacks, model=model, epochs=epochs, steps=steps_per_epoch, verbose=0
    )

    def should_stop():
        if not getattr(model, "stop_training", False):
            return False
        if num_workers == 1:
            return True
        # The workers would have to agree on the step to stop at (a
        # separate cross-worker all-reduce between steps desynchronized the
        # collectives of the preemption handler in our tests).
        warnings.warn(
            "`model.stop_training` is ignored with several workers: every "
            "worker must run the same steps.",
            stacklevel=3,
        )
        model.stop_training = False
        return False

    history = {}
    logs = None
    model.stop_training = False
    try:
        callback_list.on_train_begin()
        first_epoch = start // steps_per_epoch
        for epoch in range(first_epoch, epochs):
            begin = int(progress.numpy()) - epoch * steps_per_epoch
            if begin == 0:
                model.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            stop = False
            for step in range(begin, steps_per_epoch):
                if callbacks:
                    callback_list.on_train_batch_begin(step)
                if handler is not None:
                    handler.run(train_step, iterator)
                else:
                    train_step(iterator)
                if save_every_steps and int(progress.numpy()) % save_every_steps == 0:
                    save()
                if callbacks:
                    callback_list.on_train_batch_end(step, {})
                    stop = should_stop()
                    if stop:
                        break
            with strategy.scope():
                logs = {
                    name: float(value)
                    for name, value in model.get_metrics_result().items()
                }
            save()
            for name, value in logs.items():
                history.setdefault(name, []).append(value)
            if verbose and is_chief:
                values = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
                print(f"Epoch {epoch + 1}/{epochs} - {values}", flush=True)
            callback_list.on_epoch_end(epoch, logs)
            if stop or (callbacks and should_stop()):
                model.stop_training = True
                break
        callback_list.on_train_end(logs=logs)
    finally:
        if handler is not None:
            signal.signal(
                signal.SIGTERM,
                signal.SIG_DFL if previous_sigterm is None else previous_sigterm,
            )
            # Stops its watcher threads (a daemon thread waits on the
            # coordination service under a multi-worker strategy).
            del handler
    return history
