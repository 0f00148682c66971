"""Trains the paper's Transformer on WMT 2014 English-German with `model.fit`.

The same command runs on a Cloud TPU VM (`--strategy tpu`), a machine with
several GPUs (`--strategy mirrored`) or a CPU (`--strategy default`);
`--strategy auto` picks one. Re-running the same command resumes from the
newest checkpoint in `--model-dir`.

    python examples/wmt/train.py --preset base --model-dir runs/wmt-base \\
        --train-steps 100000

What it does, with library calls:

- vocabulary: a shared SentencePiece BPE vocabulary (`--vocab-size`, paper
  ~37,000) trained on `--vocab-sample` sentences, kept in DIR/vocabulary
  (made once; `prepare.py` does the same step alone);
- data: tfds `wmt14_translate/de-en` in `--direction`, pairs longer than
  `--max-length` tokens dropped, batches of at most `--batch-tokens` padded
  tokens per side (`keras_transformer.data.make_dataset(batch_tokens=...)`);
- model and optimizer under `strategy.scope()` (`get_strategy`,
  `trainer.build_model`): the preset's sizes and dropout, label smoothing
  0.1, Adam(0.9, 0.98, 1e-9) on the paper's schedule (warmup 4000),
  `mixed_bfloat16` with `--bf16` (default on a TPU);
- `model.fit`, one "epoch" per checkpoint interval: DIR/checkpoints/ckpt-N
  .weights.h5 (model and optimizer state) every `--steps-per-checkpoint`
  steps, the last `--keep-checkpoints` kept; TensorBoard logs in DIR/logs;
  the newstest2013 (validation split) loss after each interval.
"""

import argparse
import math
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import wmt_common as common  # noqa: E402

from keras_transformer.training.checkpoints import list_step_checkpoints  # noqa: E402
from keras_transformer.training.strategy import get_strategy  # noqa: E402
from keras_transformer.training.trainer import SetupError  # noqa: E402
from keras_transformer.training.trainer import build_model  # noqa: E402


class IntervalCheckpoint(keras.callbacks.Callback):
    """Saves `DIR/checkpoints/ckpt-<step>.weights.h5` at each epoch end.

    The file holds the model's and the optimizer's variables
    (`save_weights`), so a re-run resumes with the same weights and learning
    rate schedule; its data stream restarts with a new seed. The file is
    written locally and copied, so DIR may be on Cloud Storage. The newest
    `keep` checkpoints are kept (`0` or `None`: all), found with the
    library's `list_step_checkpoints`.

    The library's `resume.StepCheckpoint` is not used: it resumes at the
    exact data position by reading every batch consumed so far again (on
    this script's endless stream, all of the run's data), keeps at least one
    checkpoint, and writes the `step-N.weights.h5` + `step-N.json` layout.
    """

    def __init__(self, model_dir, keep=None, log=print):
        super().__init__()
        self.model_dir = model_dir
        self.keep = keep
        self.log = log
        self.saved = []

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        path = common.checkpoint_path(self.model_dir, step)
        common.save_weights(self.model, path)
        self.saved.append(path)
        self.log(f"Saved {path}")
        if self.keep:
            listed = list_step_checkpoints(
                common.checkpoint_dir(self.model_dir), common.CHECKPOINT_PATTERN
            )
            for _, old in listed[: -self.keep]:
                tf.io.gfile.remove(old)


class StopAtStep(keras.callbacks.Callback):
    """Ends training after `steps` batches of epoch `epoch` (a short last one)."""

    def __init__(self, epoch, steps):
        super().__init__()
        self.epoch = epoch
        self.steps = steps
        self._last_epoch = False

    def on_epoch_begin(self, epoch, logs=None):
        self._last_epoch = epoch == self.epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._last_epoch and batch + 1 >= self.steps:
            self.model.stop_training = True


def plan_epochs(start, train_steps, interval):
    """`model.fit` epochs (checkpoint intervals) from step `start` to the end.

    Returns:
        `(initial_epoch, epochs, last_steps)`: fit from epoch `initial_epoch`
        for `epochs` epochs of `interval` steps, the last one cut to
        `last_steps` steps so that training ends at step `train_steps`.
    """
    remaining = train_steps - start
    epochs = math.ceil(remaining / interval)
    return start // interval, epochs, remaining - (epochs - 1) * interval


def build_parser():
    parser = argparse.ArgumentParser(
        description="Train a Transformer on WMT 2014 English-German."
    )
    parser.add_argument(
        "--model-dir", required=True, help="Local directory or gs:// URL."
    )
    common.add_model_flags(parser)
    parser.add_argument(
        "--strategy",
        default="auto",
        choices=["auto", "tpu", "mirrored", "default"],
        help="tpu: TPUStrategy; mirrored: all local GPUs; default: one device; "
        "auto: a TPU if there is one, else several GPUs, else one device.",
    )
    parser.add_argument(
        "--tpu",
        help="TPU name or grpc:// address (default: this TPU VM's own TPU).",
    )
    parser.add_argument(
        "--train-steps",
        type=int,
        default=100_000,
        help="Total optimizer steps (paper: base 100000, big 300000).",
    )
    parser.add_argument("--steps-per-checkpoint", type=int, default=1000)
    parser.add_argument(
        "--keep-checkpoints",
        type=int,
        default=20,
        help="Checkpoints kept (the newest); 0 keeps all.",
    )
    parser.add_argument("--warmup-steps", type=int, default=4000)
    parser.add_argument("--learning-rate-scale", type=float, default=1.0)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mixed_bfloat16 compute (default: on with a TPU, off otherwise).",
    )
    parser.add_argument(
        "--jit-compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="XLA-compile the train step (TPUs always compile).",
    )
    parser.add_argument(
        "--no-validation",
        action="store_true",
        help="Skip the newstest2013 loss after each checkpoint interval.",
    )
    common.add_data_flags(parser)
    common.add_vocabulary_flags(parser)
    common.add_batching_flags(parser)
    common.add_mock_flag(parser)
    parser.add_argument("--verbose", type=common.verbosity, default="auto")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("train_steps", "steps_per_checkpoint", "batch_tokens", "max_length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.keep_checkpoints < 0:
        parser.error("--keep-checkpoints must be 0 (all) or more")
    if args.batch_tokens < args.max_length:
        parser.error("--batch-tokens must be at least --max-length")
    return args


def main(argv=None, log=print):
    """Runs training; returns a dict (steps, history, checkpoints)."""
    args = parse_args(argv)
    with common.mock_data(args.mock_examples):
        return train(args, log)


def train(args, log=print):
    try:
        strategy = get_strategy(args.strategy, tpu=args.tpu)
    except RuntimeError as error:  # No TPU, or it cannot be initialized.
        raise SetupError(str(error)) from None
    is_tpu = isinstance(strategy, tf.distribute.TPUStrategy)
    bf16 = is_tpu if args.bf16 is None else args.bf16
    replicas = strategy.num_replicas_in_sync
    log(
        f"{type(strategy).__name__}, {replicas} replica(s), "
        f"{'mixed_bfloat16' if bf16 else 'float32'}."
    )
    tokenizer = common.vocabulary(args.model_dir, args, log)
    settings = common.check_or_write_config(
        args.model_dir,
        {"preset": args.preset, "model": common.model_overrides(args)},
    )
    config = common.train_config(
        args.model_dir,
        settings,
        batch_size=None,
        batch_tokens=args.batch_tokens,
        max_length=args.max_length,
        warmup_steps=args.warmup_steps,
        learning_rate_scale=args.learning_rate_scale,
        label_smoothing=args.label_smoothing,
        seed=args.seed,
        jit_compile=args.jit_compile,
    )
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if bf16 else "float32")
    try:
        return _fit(args, strategy, tokenizer, config, log, is_tpu=is_tpu)
    finally:
        keras.config.set_dtype_policy(previous_policy)


def _fit(args, strategy, tokenizer, config, log, is_tpu):
    model, start = _restore_model(args, strategy, tokenizer, config, log)
    log(f"{model.count_params():,} weights, vocabulary of {tokenizer.vocab_size}.")
    result = {
        "start_step": start,
        "step": start,
        "history": {},
        "checkpoints": [],
        "model": model,
        "tokenizer": tokenizer,
    }
    if start >= args.train_steps:
        log(f"Already trained to step {start} >= --train-steps {args.train_steps}.")
        return result
    replicas = strategy.num_replicas_in_sync
    train_data = _training_data(args, tokenizer, start, replicas)
    valid_data = _validation_data(args, tokenizer, replicas, drop_remainder=is_tpu)
    interval = args.steps_per_checkpoint
    initial_epoch, epochs, last_steps = plan_epochs(start, args.train_steps, interval)
    checkpoint = IntervalCheckpoint(args.model_dir, args.keep_checkpoints, log)
    callbacks = [
        checkpoint,
        keras.callbacks.TensorBoard(
            common.join(args.model_dir, common.LOG_DIR), write_graph=False
        ),
    ]
    if last_steps < interval:
        callbacks.insert(0, StopAtStep(initial_epoch + epochs - 1, last_steps))
    log(
        f"Training steps {start + 1}..{args.train_steps}: {epochs} interval(s) "
        f"of {interval} steps, batches of <= {args.batch_tokens} tokens per side."
    )
    with warnings.catch_warnings():
        # Keras warns at the end of every pass over a validation set of
        # unknown length; the training data repeats forever.
        warnings.filterwarnings("ignore", "Your input ran out of data")
        history = model.fit(
            train_data,
            epochs=initial_epoch + epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=interval,
            validation_data=valid_data,
            callbacks=callbacks,
            shuffle=False,  # make_dataset shuffles.
            verbose=args.verbose,
        )
    result["step"] = int(model.optimizer.iterations.numpy())
    result["history"] = history.history
    result["checkpoints"] = checkpoint.saved
    return result


def _restore_model(args, strategy, tokenizer, config, log):
    """`(model, step)`: the compiled model, from the newest checkpoint if any.

    The random seed is `--seed` plus that checkpoint's step, so a resumed
    run gets new dropout masks and a new data order.
    """
    checkpoints = list_step_checkpoints(
        common.checkpoint_dir(args.model_dir), common.CHECKPOINT_PATTERN
    )
    keras.utils.set_random_seed(args.seed + (checkpoints[-1][0] if checkpoints else 0))
    with strategy.scope():
        model = build_model(config, tokenizer, tokenizer)
        model.build()
        model.optimizer.build(model.trainable_variables)
    if not checkpoints:
        return model, 0
    path = checkpoints[-1][1]
    common.load_weights(model, path)
    start = int(model.optimizer.iterations.numpy())
    log(f"Resuming from {path} at step {start}.")
    return model, start


def _training_data(args, tokenizer, start, replicas):
    """The endless, shuffled training batches of a run resumed at `start`."""
    train_pairs = common.load_pairs(args, "train")
    if args.mock_examples:
        common.require_a_full_batch(train_pairs, tokenizer, args)
    return common.make_dataset(
        train_pairs,
        tokenizer,
        args,
        training=True,
        seed=args.seed + start,
        replicas=replicas,
    )


def _validation_data(args, tokenizer, replicas, drop_remainder):
    """The newstest2013 batches, or `None` with `--no-validation`."""
    if args.no_validation:
        return None
    return common.make_dataset(
        common.load_pairs(args, "valid"),
        tokenizer,
        args,
        training=False,
        replicas=replicas,
        drop_remainder=drop_remainder,
    )


if __name__ == "__main__":
    sys.exit(common.run_cli(main, prog="train.py"))
