"""`fit_custom_loop`: the same training as `model.fit`, across workers too.

The two-worker test runs `multiworker_worker.py` in fresh processes (a
`MultiWorkerMirroredStrategy` must be created before any TensorFlow op), on
free loopback ports, in their own process groups, killed after a timeout so
that a hung collective cannot hang the test run.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.training import custom_loop
from keras_transformer.training import fit_custom_loop
from keras_transformer.training.strategy import TPU_ENVIRONMENT_VARIABLES
from tests.training import multiworker_worker as worker
from tests.training.conftest import free_port

WORKER = worker.__file__
EPOCHS = 2
PLANNED_STEPS = EPOCHS * worker.STEPS_PER_EPOCH  # 6
# Seconds allowed to one cluster run (measured: ~30 s on 2 loaded cores).
CLUSTER_TIMEOUT = 180


def max_difference(weights_a, weights_b):
    assert len(weights_a) == len(weights_b)
    return max(float(np.max(np.abs(a - b))) for a, b in zip(weights_a, weights_b))


def weights_of(model):
    return [np.asarray(w) for w in model.get_weights()]


def latest_step(checkpoint_dir):
    return int(tf.train.latest_checkpoint(checkpoint_dir).rsplit("-", 1)[1])


class Cluster:
    """Two `multiworker_worker.py` processes on localhost, one per task."""

    def __init__(self, directory, preempt_at=None):
        ports = [free_port(), free_port()]
        self.directory = directory
        self.checkpoint_dir = os.path.join(directory, "checkpoints")
        self.processes = []
        for index in range(2):
            tf_config = {
                "cluster": {"worker": [f"localhost:{port}" for port in ports]},
                "task": {"type": "worker", "index": index},
            }
            env = {
                **os.environ,
                "TF_CONFIG": json.dumps(tf_config),
                "CUDA_VISIBLE_DEVICES": "-1",
            }
            for name in TPU_ENVIRONMENT_VARIABLES:
                env.pop(name, None)
            args = [self.checkpoint_dir, str(EPOCHS), self.output(index)]
            if preempt_at is not None and index == 1:  # the non-chief
                args.append(str(preempt_at))
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, WORKER, *args],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,  # its own process group
                )
            )

    def output(self, index):
        return os.path.join(self.directory, f"weights-{index}.npz")

    def weights(self, index):
        with np.load(self.output(index)) as arrays:
            return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]

    def wait(self, timeout=CLUSTER_TIMEOUT):
        """`[(returncode, RESULT dict or None, stderr tail)]` per worker."""
        deadline = time.monotonic() + timeout
        outcomes = []
        for process in self.processes:
            try:
                stdout, stderr = process.communicate(
                    timeout=max(deadline - time.monotonic(), 1)
                )
            except subprocess.TimeoutExpired:
                self.kill()
                stdout, stderr = process.communicate()
            lines = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
            result = json.loads(lines[-1][len("RESULT ") :]) if lines else None
            outcomes.append((process.returncode, result, stderr[-3000:]))
        return outcomes

    def close(self):
        self.kill()
        for process in self.processes:
            process.communicate()

    def kill(self):
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture(scope="module")
def preempted_cluster(tmp_path_factory):
    """Two workers; the non-chief gets SIGTERM when epoch 1 begins.

    Module-scoped and requested by the in-process tests too, so that the
    workers (mostly importing TensorFlow) run while those tests do.
    """
    cluster = Cluster(str(tmp_path_factory.mktemp("cluster")), preempt_at=1)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted single-process run (default strategy), global batch 8."""
    model, history = worker.train(
        tf.distribute.get_strategy(), str(tmp_path_factory.mktemp("ref")), EPOCHS
    )
    return weights_of(model), history, int(model.optimizer.iterations.numpy())


@pytest.mark.usefixtures("preempted_cluster")  # started early, see there
def test_matches_fit_with_the_paper_optimizer(tmp_path):
    strategy = tf.distribute.get_strategy()
    fitted = worker.build_model(strategy, paper_optimizer=True)
    history = fitted.fit(
        worker.dataset_fn(tf.distribute.InputContext()),
        epochs=EPOCHS,
        steps_per_epoch=worker.STEPS_PER_EPOCH,
        shuffle=False,
        verbose=0,
    ).history
    looped = worker.build_model(strategy, paper_optimizer=True)
    ours = fit_custom_loop(
        looped,
        worker.dataset_fn,
        strategy=strategy,
        epochs=EPOCHS,
        steps_per_epoch=worker.STEPS_PER_EPOCH,
        checkpoint_dir=str(tmp_path),
        verbose=0,
    )
    assert int(looped.optimizer.iterations.numpy()) == PLANNED_STEPS
    assert max_difference(weights_of(fitted), weights_of(looped)) < 1e-5  # 0.0
    assert set(ours) == {"loss", "masked_accuracy"}
    for name in ours:
        np.testing.assert_allclose(ours[name], history[name], atol=1e-6)
    # A checkpoint at each epoch end.
    assert latest_step(str(tmp_path)) == PLANNED_STEPS


@pytest.mark.usefixtures("preempted_cluster")
def test_preempted_run_resumes_at_the_exact_step(tmp_path, reference):
    reference_weights, reference_history, reference_steps = reference
    assert reference_steps == PLANNED_STEPS
    strategy = tf.distribute.get_strategy()
    checkpoint_dir = str(tmp_path)
    sigterm_handler = signal.getsignal(signal.SIGTERM)
    # SIGTERM when epoch 1 begins: the handler finishes the step it is in
    # (step 4), saves and exits with code 42.
    with pytest.raises(SystemExit) as exit_info:
        worker.train(strategy, checkpoint_dir, EPOCHS, preempt_at=1)
    assert exit_info.value.code == 42
    assert signal.getsignal(signal.SIGTERM) is sigterm_handler  # put back
    assert latest_step(checkpoint_dir) == worker.STEPS_PER_EPOCH + 1
    # A fresh model (a restarted job) resumes there: weights, Adam moments,
    # schedule step and data position.
    model, history = worker.train(strategy, checkpoint_dir, EPOCHS)
    assert int(model.optimizer.iterations.numpy()) == PLANNED_STEPS
    assert max_difference(weights_of(model), reference_weights) < 1e-5  # 0.0
    assert len(history["loss"]) == 1  # the resumed epoch only
    assert latest_step(checkpoint_dir) == PLANNED_STEPS
    # Nothing left to do: a finished run restores and returns at once.
    again, history = worker.train(strategy, checkpoint_dir, EPOCHS)
    assert history == {}
    assert max_difference(weights_of(again), reference_weights) == 0.0


def test_callbacks_see_the_epochs_and_can_stop_training(tmp_path):
    import keras

    class Recorder(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.events = []

        def on_epoch_begin(self, epoch, logs=None):
            self.events.append(("epoch_begin", epoch))

        def on_train_batch_end(self, batch, logs=None):
            self.events.append(("batch_end", batch))
            if batch == 1:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            self.events.append(("epoch_end", epoch, sorted(logs)))

    recorder = Recorder()
    model, history = worker.train(
        tf.distribute.get_strategy(), str(tmp_path), EPOCHS, callbacks=[recorder]
    )
    # Stopped after step 1 of epoch 0: that epoch ends, no other begins.
    assert recorder.events == [
        ("epoch_begin", 0),
        ("batch_end", 0),
        ("batch_end", 1),
        ("epoch_end", 0, ["loss", "masked_accuracy"]),
    ]
    assert int(model.optimizer.iterations.numpy()) == 2
    assert len(history["loss"]) == 1
    assert latest_step(str(tmp_path)) == 2


def test_bad_arguments(tmp_path):
    import keras

    strategy = tf.distribute.get_strategy()
    uncompiled = keras.Sequential([keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="must be compiled"):
        fit_custom_loop(
            uncompiled,
            worker.dataset_fn,
            strategy=strategy,
            epochs=1,
            steps_per_epoch=1,
            checkpoint_dir=str(tmp_path),
        )
    model = worker.build_model(strategy)
    for kwargs, message in (
        ({"epochs": 0, "steps_per_epoch": 1}, "`epochs` must be a positive int"),
        ({"epochs": 1, "steps_per_epoch": 0}, "`steps_per_epoch` must be"),
        ({"epochs": 1, "steps_per_epoch": 1, "initial_epoch": 2}, "initial_epoch"),
    ):
        with pytest.raises(ValueError, match=message):
            fit_custom_loop(
                model,
                worker.dataset_fn,
                strategy=strategy,
                checkpoint_dir=str(tmp_path),
                **kwargs,
            )


def test_two_workers_preempted_then_restarted_match_one_process(
    reference, preempted_cluster
):
    reference_weights, reference_history, _ = reference
    # 1. The non-chief gets SIGTERM when epoch 1 begins: both workers save a
    #    checkpoint after the same step (4) and exit with code 42.
    cluster = preempted_cluster
    outcomes = cluster.wait()
    assert [code for code, _, _ in outcomes] == [42, 42], outcomes[1][2]
    checkpoint_dir = cluster.checkpoint_dir
    assert latest_step(checkpoint_dir) == worker.STEPS_PER_EPOCH + 1
    # Only the chief's checkpoints are kept; the non-chief's copy is deleted.
    assert not [n for n in os.listdir(checkpoint_dir) if n.startswith("workertemp")]

    # 2. Restarted, both resume at step 4 and finish together.
    cluster = Cluster(cluster.directory)
    try:
        outcomes = cluster.wait()
    finally:
        cluster.close()
    for code, result, stderr in outcomes:
        assert code == 0 and result is not None, stderr
    chief, other = (result for _, result, _ in outcomes)
    assert (chief["chief"], other["chief"]) == (True, False)
    assert chief["replicas"] == other["replicas"] == 2
    assert chief["iterations"] == other["iterations"] == PLANNED_STEPS
    assert chief["history"] == other["history"]
    assert len(chief["history"]["loss"]) == 1  # the resumed epoch
    assert latest_step(checkpoint_dir) == PLANNED_STEPS
    assert not [n for n in os.listdir(checkpoint_dir) if n.startswith("workertemp")]
    # Same weights on both workers, and as one process with the same global
    # batch (the token mean of the loss is global; measured: 3.6e-7).
    assert max_difference(cluster.weights(0), cluster.weights(1)) == 0.0
    assert max_difference(cluster.weights(0), reference_weights) < 1e-5
    # keras-team/keras#20585, the reason for `fit_custom_loop`: `model.fit`
    # under two workers (still) fails. Plain Keras models fail in the build
    # ("PerReplica ... unsupported type"); the Transformer builds from one
    # replica's batch, then Keras's cross-worker reduction of the step's
    # outputs fails ("Invalid reduction dimension"). If this starts failing,
    # `fit` works again: update the warning of `get_strategy("multiworker")`.
    assert chief["fit_error"] is not None
    assert "PerReplica" in chief["fit_error"] or "reduction" in chief["fit_error"]


class _Resolver:
    task_id = 1

    def cluster_spec(self):
        return tf.train.ClusterSpec(
            {"chief": ["a:1"], "worker": ["b:1", "c:1"], "ps": ["d:1"]}
        )


def test_worker_info_counts_chief_and_workers():
    assert custom_loop.worker_info(tf.distribute.get_strategy()) == (1, None)
    strategy = type("Strategy", (), {"cluster_resolver": _Resolver()})()
    assert custom_loop.worker_info(strategy) == (3, 1)


@pytest.mark.parametrize(
    "replicas, pipelines, skip, expected",
    [(1, 1, 0, 0), (1, 1, 3, 3), (4, 2, 3, 6), (2, 4, 3, 3)],
)
def test_skipping_dataset_fn_drops_each_pipelines_share(
    replicas, pipelines, skip, expected
):
    dataset_fn = lambda context: tf.data.Dataset.range(20)
    skipping = custom_loop._skipping_dataset_fn(dataset_fn, skip)
    context = tf.distribute.InputContext(
        num_input_pipelines=pipelines,
        input_pipeline_id=0,
        num_replicas_in_sync=replicas,
    )
    assert int(next(iter(skipping(context)))) == expected


def _loop(num_workers):
    model = type("Model", (), {"stop_training": False})()
    return custom_loop._EpochLoop(
        model, None, None, None, None, epochs=1, steps_per_epoch=1,
        save_every_steps=None, num_workers=num_workers, verbose=0,
        callbacks=None, handler=None,
    )  # fmt: skip


def test_stop_training_is_heeded_with_one_worker_only():
    loop = _loop(num_workers=1)
    assert not loop.should_stop()
    loop.model.stop_training = True
    assert loop.should_stop()
    loop = _loop(num_workers=2)
    loop.model.stop_training = True
    with pytest.warns(UserWarning, match="ignored with several workers"):
        assert not loop.should_stop()
    assert loop.model.stop_training is False
