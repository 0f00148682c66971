"""End-to-end training of a translator: data, vocabulary, model, `fit`, files.

`train_translator(TrainConfig(...))` is what `keras-transformer train` and
`keras-transformer demo` run. It writes a trained-model directory (see
`keras_transformer.model_directory`).
"""

import dataclasses
import itertools
import math
import os
import time

import keras

from keras_transformer import data
from keras_transformer import model_directory as layout
from keras_transformer.models.transformer import Transformer
from keras_transformer.text import build_vocabularies
from keras_transformer.text import load_vocabularies
from keras_transformer.text import save_vocabularies
from keras_transformer.training.callbacks import BleuCallback
from keras_transformer.training.callbacks import WallClockLimit
from keras_transformer.training.custom_loop import _worker_info
from keras_transformer.training.custom_loop import build_training_state
from keras_transformer.training.custom_loop import fit_custom_loop
from keras_transformer.training.losses import LabelSmoothedCrossEntropy
from keras_transformer.training.metrics import MaskedAccuracy
from keras_transformer.training.resume import DataPosition
from keras_transformer.training.resume import StepCheckpoint
from keras_transformer.training.resume import fit_by_epoch
from keras_transformer.training.resume import restore_latest
from keras_transformer.training.schedules import transformer_optimizer
from keras_transformer.training.strategy import get_strategy
from keras_transformer.utils import check_positive_int
from keras_transformer.utils import has_accelerator

RESUME_DIR = "resume"
TRAIN_STATE_DIR = "train_state"  # multi-worker checkpoints (tf.train)


class SetupError(ValueError):
    """The run cannot start: no such device/strategy, or unusable checkpoints."""


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run (`keras-transformer train` flags).

    Attributes:
        train: SPEC of the training data (`tsv:PATH`, `files:SRC,TGT`,
            `tfds:NAME`, `demo`).
        valid: optional SPEC of the validation data (for `demo`, the demo's
            validation split is used when this is `None`).
        output: the model directory to write.
        preset: `"tiny"`, `"base"` or `"big"`.
        model_overrides: constructor arguments overriding the preset.
        vocab_size: maximum SentencePiece vocabulary size.
        shared_vocabulary: one vocabulary for both languages.
        vocabulary_sentences: sentences per side used to train it.
        epochs: int. steps_per_epoch: int or `None` (one pass over the data).
        batch_size: sentences per batch, or `batch_tokens` per batch.
        max_length: longest source/target kept, in tokens.
        bucket_boundaries: the length buckets' padded lengths: `"default"`
            (`data.DEFAULT_BOUNDARIES`, two per octave) or `"fine"`
            (`data.FINE_BOUNDARIES`, four per octave: about half the
            padding, with token batches 7-13% more real tokens/s in graph
            mode on this project's benchmarks, but twice the batch shapes,
            each one more compilation under XLA).
        warmup_steps, learning_rate_scale: the paper's schedule.
        label_smoothing: float.
        max_minutes: wall-clock budget; training stops cleanly after it.
        bleu_sentences: validation sentences decoded for BLEU each epoch.
        seed: int.
        jit_compile: compile the train step with XLA; `None` (default):
            yes, except under `mixed_bfloat16` without a GPU/TPU (XLA:CPU
            computes bf16 matmuls in float32, graph mode is ~1.5x faster;
            benchmarks/README.md) and under a multi-replica strategy on CPUs
            (TF 2.21 cannot compile it there). Off with `deterministic`.
        strategy: `"auto"`, `"tpu"`, `"mirrored"`, `"multiworker"` or
            `"default"` (see `get_strategy`); `tpu`: the TPU name or address;
            `devices`: the devices of `"mirrored"`.
        steps_per_execution: train steps per compiled call (TPUs: 50-200).
        mixed_precision: `None`, `"mixed_bfloat16"` or `"mixed_float16"`.
        checkpoint_every: save the full training state (weights, optimizer,
            data position) every this many batches, and at every epoch end,
            keeping the last `keep_checkpoints`; rerunning the same command
            resumes at the exact step.
        deterministic: `tf.config.experimental.enable_op_determinism()`.
    """

    train: str
    output: str
    valid: str | None = None
    preset: str = "tiny"
    model_overrides: dict = dataclasses.field(default_factory=dict)
    vocab_size: int = 8000
    shared_vocabulary: bool = True
    vocabulary_sentences: int = 200_000
    epochs: int = 10
    steps_per_epoch: int | None = None
    batch_size: int | None = 64
    batch_tokens: int | None = None
    max_length: int = 128
    bucket_boundaries: str = "default"
    warmup_steps: int = 4000
    learning_rate_scale: float = 1.0
    label_smoothing: float = 0.1
    max_minutes: float | None = None
    bleu_sentences: int = 200
    bleu_beam_size: int = 1
    bleu_tokenize: str = "13a"
    seed: int = 1234
    jit_compile: bool | None = None
    strategy: str = "auto"
    tpu: str | None = None
    devices: list | None = None
    steps_per_execution: int = 1
    mixed_precision: str | None = None
    checkpoint_every: int | None = 1000
    keep_checkpoints: int = 3
    deterministic: bool = False
    verbose: int | str = "auto"

    def __post_init__(self):
        for name in ("epochs", "steps_per_execution", "keep_checkpoints"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("max_length", self.max_length)
        if self.max_length < 2:
            raise ValueError(
                "`max_length` must be at least 2 (a token and EOS). "
                f"Received: max_length={self.max_length}"
            )
        for name in (
            "steps_per_epoch",
            "checkpoint_every",
            "batch_size",
            "batch_tokens",
        ):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        if self.bucket_boundaries not in BUCKET_BOUNDARIES:
            raise ValueError(
                f"`bucket_boundaries` must be one of {tuple(BUCKET_BOUNDARIES)}. "
                f"Received: bucket_boundaries={self.bucket_boundaries!r}"
            )
        if self.mixed_precision not in MIXED_PRECISION_POLICIES:
            raise ValueError(
                f"`mixed_precision` must be one of {MIXED_PRECISION_POLICIES}. "
                f"Received: mixed_precision={self.mixed_precision!r}"
            )


MIXED_PRECISION_POLICIES = (None, "mixed_bfloat16", "mixed_float16")
BUCKET_BOUNDARIES = {"default": data.DEFAULT_BOUNDARIES, "fine": data.FINE_BOUNDARIES}
# Settings a resumed run must share with the run that wrote the checkpoints.
_RESUME_KEYS = (
    "train",
    "mixed_precision",
    "preset",
    "model_overrides",
    "vocab_size",
    "shared_vocabulary",
    "steps_per_epoch",
    "batch_size",
    "batch_tokens",
    "max_length",
    "bucket_boundaries",
    "seed",
)


def demo_config(output="runs/demo", max_minutes=7.0):
    """The embedded demo's settings: tuned to learn on 2 CPU cores in minutes."""
    return TrainConfig(
        train="demo",
        output=output,
        preset="tiny",
        model_overrides={"num_layers": 2, "d_model": 128, "num_heads": 4, "d_ff": 256},
        vocab_size=120,
        shared_vocabulary=False,
        epochs=6,
        batch_size=64,
        max_length=48,
        # Peak learning rate 0.35 * 128^-0.5 / sqrt(400) = 1.5e-3 at step 400;
        # the paper's 7e-3 for d_model=128 made the demo unstable.
        warmup_steps=400,
        learning_rate_scale=0.35,
        max_minutes=max_minutes,
        bleu_sentences=200,
        # German number words are single compounds: word BLEU would be 0.
        bleu_tokenize="char",
    )


def _pairs(spec, split):
    return data.parse_spec(spec, split=split)


def _vocabularies(config, train_pairs):
    directory = layout.path(config.output, layout.VOCABULARY_DIR)
    if os.path.exists(os.path.join(directory, "vocabularies.json")):
        return load_vocabularies(directory)
    # A ParallelCorpus yields `str` pairs.
    sample = list(itertools.islice(iter(train_pairs), config.vocabulary_sentences))
    source, target = build_vocabularies(
        [s for s, _ in sample],
        [t for _, t in sample],
        config.vocab_size,
        shared=config.shared_vocabulary,
        seed=config.seed,
    )
    save_vocabularies(directory, source, target)
    return source, target


def resolve_jit_compile(config, strategy):
    """`config.jit_compile`, or the default for the policy and hardware."""
    if config.deterministic:
        # Keras turns XLA off under op determinism anyway.
        return False
    if config.jit_compile is not None:
        return config.jit_compile
    if has_accelerator():
        return True
    if config.mixed_precision == "mixed_bfloat16":
        return False
    return strategy.num_replicas_in_sync == 1


def build_model(config, source_tokenizer, target_tokenizer, jit_compile=None):
    """The `Transformer` for `config` and the vocabularies, compiled.

    Call it under the strategy's scope.
    """
    overrides = dict(config.model_overrides)
    if target_tokenizer is not source_tokenizer:
        overrides["target_vocabulary_size"] = target_tokenizer.vocab_size
    model = Transformer.from_preset(
        config.preset, vocabulary_size=source_tokenizer.vocab_size, **overrides
    )
    model.compile(
        optimizer=transformer_optimizer(
            model.d_model,
            warmup_steps=config.warmup_steps,
            scale=config.learning_rate_scale,
        ),
        loss=LabelSmoothedCrossEntropy(label_smoothing=config.label_smoothing),
        metrics=[MaskedAccuracy()],
        jit_compile=config.jit_compile if jit_compile is None else jit_compile,
        steps_per_execution=config.steps_per_execution,
    )
    return model


def _check_resumable(config):
    """Refuses to resume checkpoints written with other settings."""
    saved_path = layout.path(config.output, layout.CONFIG_FILE)
    if not os.path.exists(saved_path):
        return
    try:
        saved = layout.read_json(saved_path)
    except ValueError as error:
        raise SetupError(f"{saved_path!r} is not valid JSON ({error})") from error
    current = dataclasses.asdict(config)
    changed = [k for k in _RESUME_KEYS if k in saved and saved[k] != current[k]]
    if changed:
        details = ", ".join(f"{k}: {saved[k]!r} -> {current[k]!r}" for k in changed)
        raise SetupError(
            f"{config.output!r} holds a run with other settings "
            f"({details}); use a new --output directory, or the same settings "
            "to resume."
        )


def train_translator(config):
    """Trains a translator and writes its model directory.

    Rerunning with the same `config` after an interruption (crash, `kill
    -9`, preemption, `max_minutes`) resumes from the latest complete
    checkpoint in `DIR/checkpoints/resume/` at the exact batch: weights,
    optimizer, dropout RNG and data position are restored, so the result
    equals an uninterrupted run's (with `deterministic=True`).

    Returns:
        The dict written to `metrics.json`.
    """
    import tensorflow as tf

    # First: a multi-worker strategy must exist before other TF ops run.
    try:
        strategy = get_strategy(config.strategy, tpu=config.tpu, devices=config.devices)
    except (ValueError, RuntimeError) as error:
        raise SetupError(str(error)) from error
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.config.set_dtype_policy(config.mixed_precision)
    try:
        return _train(config, strategy)
    finally:
        keras.config.set_dtype_policy(policy)


def _train(config, strategy):
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    os.makedirs(config.output, exist_ok=True)
    started = time.time()
    resume_dir = os.path.join(
        layout.path(config.output, layout.CHECKPOINT_DIR), RESUME_DIR
    )
    # Before anything is reused (vocabulary, checkpoints) or overwritten.
    _check_resumable(config)
    train_pairs = _pairs(config.train, "train")
    valid_spec = config.valid or (
        config.train if config.train.split(":")[0] == "demo" else None
    )
    valid_pairs = _pairs(valid_spec, "valid") if valid_spec else None
    source_tokenizer, target_tokenizer = _vocabularies(config, train_pairs)
    layout.write_json(
        layout.path(config.output, layout.CONFIG_FILE), dataclasses.asdict(config)
    )
    repeat = config.steps_per_epoch is not None
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return _train_multiworker(
            config, strategy, train_pairs, source_tokenizer, target_tokenizer, started
        )

    def dataset(pairs, training, seed=config.seed):
        return _dataset(
            config, pairs, source_tokenizer, target_tokenizer, training, seed, repeat
        )

    # Epoch e's order is seeded by seed + e, so a resumed run can rebuild it.
    position = DataPosition(repeat=repeat)
    train_data = position.dataset(
        lambda epoch: dataset(train_pairs, True, seed=config.seed + epoch)
    )
    valid_data = dataset(valid_pairs, False) if valid_pairs is not None else None
    jit_compile = resolve_jit_compile(config, strategy)
    with strategy.scope():
        model = build_model(config, source_tokenizer, target_tokenizer, jit_compile)

    state = None
    # Built from the data's int32 specs (what `fit` would do, but without
    # Keras's replica-averaged float batch under multi-replica strategies).
    build_training_state(model, strategy, train_data.element_spec)
    if os.path.isdir(resume_dir):
        with strategy.scope():
            try:
                state = restore_latest(model, resume_dir)
            except ValueError as error:
                raise SetupError(str(error)) from error
    checkpoint = StepCheckpoint(
        resume_dir,
        position,
        every_steps=config.checkpoint_every,
        keep=config.keep_checkpoints,
        history=state["history"] if state else None,
    )
    initial_epoch = 0
    if state:
        initial_epoch = state["epoch"]
        checkpoint.start(state["epoch"], state["batch"], state["consumed"])
        if not repeat and state["batch"] and not _has_batches(train_data):
            # Stopped after the epoch's last batch, before its end: next one.
            initial_epoch += 1
            checkpoint.start(initial_epoch, 0, state["consumed"])

    callbacks = []
    if valid_pairs is not None and config.bleu_sentences:
        from keras_transformer.evaluation import translate_all
        from keras_transformer.export import Translator

        bleu_pairs = list(itertools.islice(iter(valid_pairs), config.bleu_sentences))
        translator = Translator(
            model, source_tokenizer, target_tokenizer, beam_size=config.bleu_beam_size
        )
        # First, so that TensorBoard and the checkpoints see `val_bleu`.
        callbacks.append(
            BleuCallback(
                lambda sources: translate_all(translator, sources),
                [s for s, _ in bleu_pairs],
                [t for _, t in bleu_pairs],
                bleu_tokenize=config.bleu_tokenize,
            )
        )
    os.makedirs(layout.path(config.output, layout.CHECKPOINT_DIR), exist_ok=True)
    callbacks += [
        keras.callbacks.TensorBoard(layout.path(config.output, layout.LOG_DIR)),
        keras.callbacks.ModelCheckpoint(
            os.path.join(
                layout.path(config.output, layout.CHECKPOINT_DIR),
                "epoch-{epoch:03d}.weights.h5",
            ),
            save_weights_only=True,
        ),
        checkpoint,
    ]
    wall_clock = None
    if config.max_minutes:
        wall_clock = _wall_clock(config, started, restart_each_fit=False)
        callbacks.append(wall_clock)

    if repeat:
        # One stream for the whole run (Keras keeps one iterator per `fit`).
        fit = lambda first, last, steps: model.fit(
            train_data,
            validation_data=valid_data,
            epochs=last,
            initial_epoch=first,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=config.verbose,
        )
        resumed_batch = state["batch"] if state else 0
        if resumed_batch and initial_epoch < config.epochs:
            # The rest of the interrupted epoch, then a new stream that
            # skips everything consumed so far.
            left = config.steps_per_epoch - resumed_batch
            if left > 0:
                fit(initial_epoch, initial_epoch + 1, left)
            initial_epoch += 1
            checkpoint.start(initial_epoch, 0, checkpoint.steps)
        stopped = wall_clock and wall_clock.stopped_early
        if initial_epoch < config.epochs and not stopped:
            fit(initial_epoch, config.epochs, config.steps_per_epoch)
    else:
        fit_by_epoch(
            model,
            train_data,
            validation_data=valid_data,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=config.verbose,
            stop=lambda: bool(wall_clock and wall_clock.stopped_early),
        )
    model.save(layout.path(config.output, layout.MODEL_FILE))
    history = [checkpoint.history[e] for e in sorted(checkpoint.history)]
    last = lambda name: (
        float(history[-1][name]) if history and name in history[-1] else math.nan
    )
    metrics = {
        "steps": checkpoint.steps,
        "optimizer_iterations": int(
            keras.ops.convert_to_numpy(model.optimizer.iterations)
        ),
        "epochs_completed": len(history),
        "resumed_from_step": state["step"] if state else None,
        "train_loss": last("loss"),
        "train_accuracy": last("masked_accuracy"),
        "valid_loss": last("val_loss"),
        "valid_accuracy": last("val_masked_accuracy"),
        "valid_bleu": last("val_bleu"),
        "stopped_by_time_limit": bool(wall_clock and wall_clock.stopped_early),
        "wall_seconds": round(time.time() - started, 1),
        "parameters": int(model.count_params()),
        "strategy": type(strategy).__name__,
        "replicas": int(strategy.num_replicas_in_sync),
        "jit_compile": bool(jit_compile),
    }
    layout.write_json(layout.path(config.output, layout.METRICS_FILE), metrics)
    return metrics


def _train_multiworker(
    config, strategy, train_pairs, source_tokenizer, target_tokenizer, started
):
    """Multi-worker training: `fit_custom_loop` (Keras `fit` fails there).

    Every worker runs this with the same config; each reads its shard of the
    pairs; only the chief writes `model.keras` and `metrics.json`. No
    validation or BLEU during training (evaluate the model afterwards).
    """

    if config.steps_per_epoch is None:
        raise SetupError(
            "--strategy multiworker needs --steps-per-epoch: the workers read "
            "one endless, sharded stream. Received: steps_per_epoch=None"
        )
    replicas = strategy.num_replicas_in_sync

    def dataset_fn(context):
        pairs = data.as_corpus(train_pairs).dataset()
        pairs = pairs.shard(context.num_input_pipelines, context.input_pipeline_id)
        return _dataset(
            config,
            pairs,
            source_tokenizer,
            target_tokenizer,
            training=True,
            seed=config.seed,
            repeat=True,
            # Per-replica batches.
            batch_size=context.get_per_replica_batch_size(config.batch_size),
            replicas=replicas,
        )

    jit_compile = resolve_jit_compile(config, strategy)
    with strategy.scope():
        model = build_model(config, source_tokenizer, target_tokenizer, jit_compile)
    callbacks = []
    if config.max_minutes:
        callbacks.append(_wall_clock(config, started))
    history = fit_custom_loop(
        model,
        dataset_fn,
        strategy=strategy,
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        checkpoint_dir=os.path.join(
            layout.path(config.output, layout.CHECKPOINT_DIR), TRAIN_STATE_DIR
        ),
        callbacks=callbacks,
        verbose=1 if config.verbose else 0,
        save_every_steps=config.checkpoint_every,
        max_to_keep=config.keep_checkpoints,
        jit_compile=jit_compile,
    )
    steps = int(model.optimizer.iterations.numpy())
    metrics = {
        "steps": steps,
        "optimizer_iterations": steps,
        "epochs_completed": steps // config.steps_per_epoch,
        "train_loss": float(history["loss"][-1]) if history.get("loss") else math.nan,
        "train_accuracy": float(history["masked_accuracy"][-1])
        if history.get("masked_accuracy")
        else math.nan,
        "wall_seconds": round(time.time() - started, 1),
        "parameters": int(model.count_params()),
        "strategy": type(strategy).__name__,
        "replicas": int(replicas),
        "workers": _worker_info(strategy)[0],
        "jit_compile": bool(jit_compile),
    }
    if strategy.extended.should_checkpoint:
        model.save(layout.path(config.output, layout.MODEL_FILE))
        layout.write_json(layout.path(config.output, layout.METRICS_FILE), metrics)
    return metrics


def _dataset(
    config,
    pairs,
    source_tokenizer,
    target_tokenizer,
    training,
    seed,
    repeat,
    batch_size=None,
    replicas=1,
):
    """`data.make_dataset` with the run's settings; `batch_size` and
    `replicas` (dividing `batch_tokens`) give per-replica batches."""
    return data.make_dataset(
        pairs,
        source_tokenizer.tokenize,
        target_tokenizer.tokenize,
        batch_size=None if config.batch_tokens else batch_size or config.batch_size,
        batch_tokens=config.batch_tokens // replicas if config.batch_tokens else None,
        max_source_length=config.max_length,
        max_target_length=config.max_length,
        bucket_boundaries=BUCKET_BOUNDARIES[config.bucket_boundaries],
        shuffle=training,
        seed=seed,
        repeat=training and repeat,
        drop_remainder=training,
    )


def _wall_clock(config, started, **kwargs):
    """A `WallClockLimit` for what is left of `max_minutes` since `started`."""
    remaining = config.max_minutes - (time.time() - started) / 60
    return WallClockLimit(max(remaining, 0.01), **kwargs)


def _has_batches(dataset):
    for _ in dataset.take(1):
        return True
    return False
