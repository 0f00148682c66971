"""One worker of a `MultiWorkerMirroredStrategy` cluster, run in a fresh
process by `test_custom_loop.py` (which also imports `train` to get the
single-process reference in its own process).

Usage: `python multiworker_worker.py CHECKPOINT_DIR EPOCHS OUTPUT.npz
[PREEMPT_AT_EPOCH]` with `TF_CONFIG` set. Trains a tiny `Transformer` with
`fit_custom_loop` on global batches of `GLOBAL_BATCH` rows (each worker gets
its half), saves the final weights to `OUTPUT.npz` and prints one line
`RESULT <json>`, which also says how `model.fit` fails then
(keras-team/keras#20585). With `PREEMPT_AT_EPOCH`, the process sends itself SIGTERM
when that epoch begins: the preemption handler saves a checkpoint on all
workers at the next step and they exit with code 42.
"""

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_transformer.models.transformer import Transformer  # noqa: E402
from keras_transformer.training import LabelSmoothedCrossEntropy  # noqa: E402
from keras_transformer.training import MaskedAccuracy  # noqa: E402
from keras_transformer.training import TransformerSchedule  # noqa: E402
from keras_transformer.training import get_strategy  # noqa: E402
from keras_transformer.training import transformer_optimizer  # noqa: E402
from keras_transformer.training.custom_loop import fit_custom_loop  # noqa: E402

VOCAB, LENGTH, GLOBAL_BATCH, STEPS_PER_EPOCH = 16, 5, 8, 3


def arrays():
    rng = np.random.default_rng(0)
    rows = GLOBAL_BATCH * STEPS_PER_EPOCH
    source = rng.integers(1, VOCAB, (rows, LENGTH))
    target_in = rng.integers(1, VOCAB, (rows, LENGTH))
    target_out = rng.integers(1, VOCAB, (rows, LENGTH))
    # Uneven padding: the first half of every global batch (worker 0's
    # share) keeps 2 tokens per row, the second half 5.
    for start in range(0, rows, GLOBAL_BATCH):
        target_out[start : start + GLOBAL_BATCH // 2, 2:] = 0
    return {"source": source, "target": target_in}, target_out


def dataset_fn(input_context):
    """Global batch `i` is rows `[8i, 8i + 8)`; worker `k` gets its `k`-th half."""
    batch = input_context.get_per_replica_batch_size(GLOBAL_BATCH)
    return (
        tf.data.Dataset.from_tensor_slices(arrays())
        .batch(batch, drop_remainder=True)
        .shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        .repeat()
    )


def build_model(strategy, paper_optimizer=False):
    keras.utils.set_random_seed(0)  # the same initial weights everywhere
    with strategy.scope():
        model = Transformer(
            vocabulary_size=VOCAB,
            num_layers=1,
            d_model=16,
            num_heads=2,
            d_ff=32,
            dropout=0.0,
        )
        if paper_optimizer:
            optimizer = transformer_optimizer(16, warmup_steps=4)
        else:
            # The paper's schedule and betas, but Adam's epsilon 1e-3, not
            # 1e-9: the gradient of the attention key biases is exactly 0 in
            # theory, and with a tiny epsilon Adam turns its float round-off
            # (which depends on how the batch is split) into full
            # learning-rate steps of random sign (measured: 0.06 apart).
            optimizer = keras.optimizers.Adam(
                TransformerSchedule(16, warmup_steps=4),
                beta_1=0.9,
                beta_2=0.98,
                epsilon=1e-3,
            )
        model.compile(
            optimizer=optimizer,
            loss=LabelSmoothedCrossEntropy(label_smoothing=0.1),
            metrics=[MaskedAccuracy()],
            jit_compile=False,
        )
    return model


class PreemptAt(keras.callbacks.Callback):
    """Sends this process SIGTERM when epoch `epoch` begins."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            signal.raise_signal(signal.SIGTERM)


def train(strategy, checkpoint_dir, epochs, preempt_at=None, **kwargs):
    """Returns the trained model and the history of `fit_custom_loop`."""
    model = build_model(strategy)
    if preempt_at is not None:
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), PreemptAt(preempt_at)]
    history = fit_custom_loop(
        model,
        dataset_fn,
        strategy=strategy,
        epochs=epochs,
        steps_per_epoch=STEPS_PER_EPOCH,
        checkpoint_dir=checkpoint_dir,
        verbose=0,
        **kwargs,
    )
    return model, history


def main(checkpoint_dir, epochs, output, preempt_at=None):
    # Before any other TensorFlow op.
    strategy = get_strategy("multiworker")
    model, history = train(strategy, checkpoint_dir, epochs, preempt_at)
    np.savez(output, *[np.asarray(w) for w in model.get_weights()])
    result = {
        "history": history,
        "iterations": int(model.optimizer.iterations.numpy()),
        "replicas": strategy.num_replicas_in_sync,
        "chief": bool(strategy.extended.should_checkpoint),
    }
    if preempt_at is None:
        # keras-team/keras#20585: does `model.fit` still fail?
        try:
            model.fit(
                dataset_fn(tf.distribute.InputContext()),
                steps_per_epoch=1,
                verbose=0,
            )
            result["fit_error"] = None
        except Exception as error:
            result["fit_error"] = f"{type(error).__name__}: {error}"[:300]
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(
        sys.argv[1],
        int(sys.argv[2]),
        sys.argv[3],
        int(sys.argv[4]) if len(sys.argv) > 4 else None,
    )
