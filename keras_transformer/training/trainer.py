"""End-to-end training of a translator: data, vocabulary, model, `fit`, files.

`train_translator(TrainConfig(...))` is what `keras-transformer train` and
`keras-transformer demo` run. It writes a trained-model directory (see
`keras_transformer.model_directory`). The settings, `TrainConfig`, are
declared in `keras_transformer.training.config` (and imported here).
"""

import dataclasses
import itertools
import math
import os
import time
import warnings

import keras

from keras_transformer import data
from keras_transformer import model_directory as layout
from keras_transformer.data.pipeline import count_batches
from keras_transformer.models.transformer import Transformer
from keras_transformer.text import build_vocabularies
from keras_transformer.text import load_vocabularies
from keras_transformer.text import save_vocabularies
from keras_transformer.training.callbacks import BleuCallback
from keras_transformer.training.callbacks import WallClockLimit
from keras_transformer.training.config import (
    MIXED_PRECISION_POLICIES as MIXED_PRECISION_POLICIES,
)
from keras_transformer.training.config import RESUME_KEYS
from keras_transformer.training.config import TrainConfig
from keras_transformer.training.custom_loop import build_training_state
from keras_transformer.training.custom_loop import fit_custom_loop
from keras_transformer.training.custom_loop import worker_info
from keras_transformer.training.losses import LabelSmoothedCrossEntropy
from keras_transformer.training.metrics import MaskedAccuracy
from keras_transformer.training.resume import DataPosition
from keras_transformer.training.resume import StepCheckpoint
from keras_transformer.training.resume import fit_by_epoch
from keras_transformer.training.resume import restore_latest
from keras_transformer.training.schedules import transformer_optimizer
from keras_transformer.training.strategy import get_strategy
from keras_transformer.utils import has_accelerator

RESUME_DIR = "resume"
TRAIN_STATE_DIR = "train_state"  # multi-worker checkpoints (tf.train)


class SetupError(ValueError):
    """The run cannot start: no such device/strategy, unusable checkpoints, or
    training data that yields no batch."""


# The length-bucket ladders of `TrainConfig.bucket_boundaries`.
BUCKET_BOUNDARIES = {"default": data.DEFAULT_BOUNDARIES, "fine": data.FINE_BOUNDARIES}


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
    """The run's `(source, target)` tokenizers, and whether they are new.

    Loaded from `DIR/vocabulary/` when there, else trained on the first
    `config.vocabulary_sentences` pairs; new ones are not saved yet.
    """
    directory = layout.path(config.output, layout.VOCABULARY_DIR)
    if os.path.exists(os.path.join(directory, "vocabularies.json")):
        return load_vocabularies(directory), False
    # A ParallelCorpus yields `str` pairs.
    sample = list(itertools.islice(iter(train_pairs), config.vocabulary_sentences))
    try:
        source, target = build_vocabularies(
            [s for s, _ in sample],
            [t for _, t in sample],
            config.vocab_size,
            shared=config.shared_vocabulary,
            seed=config.seed,
        )
    except ValueError as error:  # e.g. a vocabulary too small for the data
        raise SetupError(f"--vocab-size {config.vocab_size}: {error}") from None
    return (source, target), True


def resolve_jit_compile(config, strategy):
    """Whether to compile the train step with XLA.

    `False` with `config.deterministic` (Keras turns XLA off under op
    determinism anyway), else `config.jit_compile` when set. By default:
    yes on a GPU or TPU; on CPUs, no under `mixed_bfloat16` (XLA on CPUs
    computes bfloat16 matmuls in float32, so graph mode trains faster; see
    `benchmarks/README.md`) and no under a strategy with several replicas
    (TensorFlow cannot compile its step there), yes otherwise.
    """
    if config.deterministic:
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
    changed = [k for k in RESUME_KEYS if k in saved and saved[k] != current[k]]
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

    Raises:
        SetupError: when the run cannot start. Training data that gives
            no batch (no pair within `max_length`, or no full batch in an
            epoch) is refused before the run writes a file.
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
    """Prepares the data and vocabularies, trains, writes the model directory."""
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    started = time.time()
    # Before anything is reused (vocabulary, checkpoints) or overwritten.
    _check_resumable(config)
    train_pairs = _pairs(config.train, "train")
    valid_spec = _validation_spec(config)
    valid_pairs = _pairs(valid_spec, "valid") if valid_spec else None
    tokenizers, new_vocabularies = _vocabularies(config, train_pairs)
    # Before the run writes anything: it may have no batch to train on.
    _check_training_batches(config, train_pairs, *tokenizers)
    os.makedirs(config.output, exist_ok=True)
    if new_vocabularies:
        save_vocabularies(
            layout.path(config.output, layout.VOCABULARY_DIR), *tokenizers
        )
    layout.write_json(
        layout.path(config.output, layout.CONFIG_FILE), dataclasses.asdict(config)
    )
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return _train_multiworker(config, strategy, train_pairs, *tokenizers, started)
    return _train_with_fit(
        config, strategy, train_pairs, valid_pairs, tokenizers, started
    )


def _validation_spec(config):
    """The SPEC of the validation data: `config.valid`, or the demo's split.

    Returns:
        A SPEC string, or `None` when there is no validation data.
    """
    if config.valid:
        return config.valid
    return config.train if config.train.split(":")[0] == "demo" else None


def _train_with_fit(config, strategy, train_pairs, valid_pairs, tokenizers, started):
    """Trains with `model.fit`, resuming from `DIR/checkpoints/resume/`."""
    position, train_data, valid_data = _fit_datasets(
        config, train_pairs, valid_pairs, tokenizers
    )
    jit_compile = resolve_jit_compile(config, strategy)
    with strategy.scope():
        model = build_model(config, *tokenizers, jit_compile)
    # Built from the data's int32 specs (what `fit` would do, but without
    # Keras's replica-averaged float batch under multi-replica strategies).
    build_training_state(model, strategy, train_data.element_spec)
    state = _restore_state(model, strategy, _resume_dir(config))
    checkpoint = StepCheckpoint(
        _resume_dir(config),
        position,
        every_steps=config.checkpoint_every,
        keep=config.keep_checkpoints,
        history=state["history"] if state else None,
    )
    initial_epoch = _start_checkpoint(checkpoint, state, position.repeat, train_data)
    callbacks = _bleu_callbacks(config, model, valid_pairs, *tokenizers)
    callbacks += _file_callbacks(config, checkpoint)
    wall_clock = None
    if config.max_minutes:
        wall_clock = _wall_clock(config, started, restart_each_fit=False)
        callbacks.append(wall_clock)
    stopped = lambda: bool(wall_clock and wall_clock.stopped_early)
    _fit(
        model,
        train_data,
        config,
        checkpoint,
        initial_epoch,
        resumed_batch=state["batch"] if state else 0,
        stopped=stopped,
        validation_data=valid_data,
        callbacks=callbacks,
        verbose=config.verbose,
    )
    model.save(layout.path(config.output, layout.MODEL_FILE))
    metrics = _fit_metrics(
        checkpoint,
        model,
        strategy,
        resumed_from_step=state["step"] if state else None,
        stopped_by_time_limit=stopped(),
        started=started,
        jit_compile=jit_compile,
    )
    layout.write_json(layout.path(config.output, layout.METRICS_FILE), metrics)
    return metrics


def _fit_datasets(config, train_pairs, valid_pairs, tokenizers):
    """`(DataPosition, resumable training dataset, validation dataset or None)`.

    Epoch `e`'s order is seeded by `config.seed + e`, so that a resumed run
    can rebuild it.
    """
    repeat = config.steps_per_epoch is not None

    def dataset(pairs, training, seed=config.seed):
        return _dataset(config, pairs, *tokenizers, training, seed, repeat)

    position = DataPosition(repeat=repeat)
    train_data = position.dataset(
        lambda epoch: dataset(train_pairs, True, seed=config.seed + epoch)
    )
    valid_data = dataset(valid_pairs, False) if valid_pairs is not None else None
    return position, train_data, valid_data


def _resume_dir(config):
    return os.path.join(layout.path(config.output, layout.CHECKPOINT_DIR), RESUME_DIR)


def _restore_state(model, strategy, resume_dir):
    """The state of the latest `StepCheckpoint` restored into `model`, or `None`."""
    if not os.path.isdir(resume_dir):
        return None
    with strategy.scope():
        try:
            return restore_latest(model, resume_dir)
        except ValueError as error:
            raise SetupError(str(error)) from error


def _start_checkpoint(checkpoint, state, repeat, train_data):
    """Positions `checkpoint` and the data where `state` stopped.

    Returns:
        The epoch to start `fit` at.
    """
    if not state:
        return 0
    epoch = state["epoch"]
    checkpoint.start(epoch, state["batch"], state["consumed"])
    if not repeat and state["batch"] and not _has_batches(train_data):
        # Stopped after the epoch's last batch, before its end: next one.
        epoch += 1
        checkpoint.start(epoch, 0, state["consumed"])
    return epoch


def _bleu_callbacks(config, model, valid_pairs, source_tokenizer, target_tokenizer):
    """`[BleuCallback]` on `config.bleu_sentences` validation pairs, or `[]`."""
    if valid_pairs is None or not config.bleu_sentences:
        return []
    from keras_transformer.evaluation import translate_all
    from keras_transformer.export import Translator

    bleu_pairs = list(itertools.islice(iter(valid_pairs), config.bleu_sentences))
    translator = Translator(
        model, source_tokenizer, target_tokenizer, beam_size=config.bleu_beam_size
    )
    # First in the list, so that TensorBoard and the checkpoints see `val_bleu`.
    return [
        BleuCallback(
            lambda sources: translate_all(translator, sources),
            [s for s, _ in bleu_pairs],
            [t for _, t in bleu_pairs],
            bleu_tokenize=config.bleu_tokenize,
        )
    ]


def _file_callbacks(config, checkpoint):
    """TensorBoard logs, per-epoch weights and the resumable `checkpoint`."""
    checkpoint_dir = layout.path(config.output, layout.CHECKPOINT_DIR)
    os.makedirs(checkpoint_dir, exist_ok=True)
    return [
        keras.callbacks.TensorBoard(layout.path(config.output, layout.LOG_DIR)),
        keras.callbacks.ModelCheckpoint(
            os.path.join(checkpoint_dir, "epoch-{epoch:03d}.weights.h5"),
            save_weights_only=True,
        ),
        checkpoint,
    ]


def _fit(
    model,
    train_data,
    config,
    checkpoint,
    initial_epoch,
    *,
    resumed_batch,
    stopped,
    **fit_kwargs,
):
    """Runs `fit` from `initial_epoch` to `config.epochs`.

    Epochs that are passes over the data get one `fit` call each
    (`fit_by_epoch`). With `config.steps_per_epoch`, the epochs are slices of
    one endless stream, and Keras keeps one iterator per `fit` call: a run
    resumed `resumed_batch` batches into an epoch first trains the rest of
    that epoch, then continues on a new stream that skips every batch
    consumed so far. No epoch starts once `stopped()` is true.
    """
    if config.steps_per_epoch is None:
        fit_by_epoch(
            model,
            train_data,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            stop=stopped,
            **fit_kwargs,
        )
        return
    fit = lambda first, last, steps: model.fit(
        train_data,
        epochs=last,
        initial_epoch=first,
        steps_per_epoch=steps,
        **fit_kwargs,
    )
    if resumed_batch and initial_epoch < config.epochs:
        left = config.steps_per_epoch - resumed_batch
        if left > 0:
            fit(initial_epoch, initial_epoch + 1, left)
        initial_epoch += 1
        checkpoint.start(initial_epoch, 0, checkpoint.steps)
    if initial_epoch < config.epochs and not stopped():
        fit(initial_epoch, config.epochs, config.steps_per_epoch)


def _fit_metrics(
    checkpoint,
    model,
    strategy,
    *,
    resumed_from_step,
    stopped_by_time_limit,
    started,
    jit_compile,
):
    """The `metrics.json` of a `fit` run, its last epoch's logs included."""
    history = [checkpoint.history[e] for e in sorted(checkpoint.history)]
    last = lambda name: (
        float(history[-1][name]) if history and name in history[-1] else math.nan
    )
    return {
        "steps": checkpoint.steps,
        "optimizer_iterations": int(
            keras.ops.convert_to_numpy(model.optimizer.iterations)
        ),
        "epochs_completed": len(history),
        "resumed_from_step": resumed_from_step,
        "train_loss": last("loss"),
        "train_accuracy": last("masked_accuracy"),
        "valid_loss": last("val_loss"),
        "valid_accuracy": last("val_masked_accuracy"),
        "valid_bleu": last("val_bleu"),
        "stopped_by_time_limit": stopped_by_time_limit,
        "wall_seconds": round(time.time() - started, 1),
        "parameters": int(model.count_params()),
        "strategy": type(strategy).__name__,
        "replicas": int(strategy.num_replicas_in_sync),
        "jit_compile": bool(jit_compile),
    }


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
        "workers": worker_info(strategy)[0],
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
        shuffle=training,
        seed=seed,
        repeat=training and repeat,
        drop_remainder=training,
        **_batching(config, batch_size, replicas),
    )


def _batching(config, batch_size=None, replicas=1):
    """The batch and bucket arguments of `data.make_dataset` for `config`."""
    return {
        "batch_size": None if config.batch_tokens else batch_size or config.batch_size,
        "batch_tokens": config.batch_tokens // replicas
        if config.batch_tokens
        else None,
        "max_source_length": config.max_length,
        "max_target_length": config.max_length,
        "bucket_boundaries": BUCKET_BOUNDARIES[config.bucket_boundaries],
    }


def _check_training_batches(config, train_pairs, source_tokenizer, target_tokenizer):
    """Refuses a run that has no batch to train on; warns of pairs left out.

    Tokenizes the training pairs once (`data.pipeline.count_batches`; no
    shuffle, no random numbers, so the run trains as it would without).
    Each epoch of the training pipeline skips the pairs longer than
    `max_length` and, for static batch shapes, each length bucket's last,
    partial batch. With `steps_per_epoch`, the batches come from an endless
    stream where partial batches fill up in the next pass: there, only a
    pair within `max_length` is needed, and the pass stops at the first.

    Returns:
        The counts of `count_batches`.

    Raises:
        SetupError: when no pair fits `max_length`, or when (without
            `steps_per_epoch`) an epoch has no full batch.
    """
    repeat = config.steps_per_epoch is not None
    counts = count_batches(
        train_pairs,
        source_tokenizer.tokenize,
        target_tokenizer.tokenize,
        until_kept=repeat,
        **_batching(config),
    )
    if counts["too_long"] == counts["pairs"]:
        raise SetupError(
            f"no training pair fits --max-length {config.max_length}: all "
            f"{counts['pairs']} pairs of {config.train!r} are longer (in "
            "tokens, EOS or BOS included); raise --max-length"
        )
    if repeat:
        return counts
    if not counts["batches"]:
        raise SetupError(_no_batch_message(config, counts))
    if counts["partial"] or counts["too_long"]:
        warnings.warn(_left_out_message(config, counts), UserWarning, stacklevel=2)
    return counts


def _no_batch_message(config, counts):
    """Why an epoch of `count_batches` `counts` has no full batch, and the fix."""
    kept = counts["pairs"] - counts["too_long"]
    fullest, batch = max(counts["buckets"])[:2]
    if config.batch_tokens:
        setting = f"--batch-tokens {config.batch_tokens}"
        # Gives the bucket of `n` pairs of padded length `L` one full batch.
        tokens = max(n * max(s, t) for n, _, s, t in counts["buckets"])
        fix = (
            f"lower --batch-tokens to {tokens} or less"
            if tokens >= config.max_length
            else f"use --batch-size {fullest} or less instead of --batch-tokens"
        )
    else:
        setting = f"--batch-size {config.batch_size}"
        fix = f"lower --batch-size to {fullest} or less"
    return (
        f"no full training batch in an epoch: {kept} of {counts['pairs']} "
        f"pairs of {config.train!r} fit --max-length {config.max_length}, and "
        f"the fullest length bucket holds {fullest} where its batch needs "
        f"{batch} ({setting}); {fix}, or set --steps-per-epoch (an endless "
        "stream, where buckets fill up across passes)"
    )


def _left_out_message(config, counts):
    """One line: the pairs each epoch leaves out, why, and how to keep them."""
    reasons, fixes = [], []
    batch_flag = "--batch-tokens" if config.batch_tokens else "--batch-size"
    if counts["partial"]:
        reasons.append(
            f"{counts['partial']} in the length buckets' last, partial batches "
            "(static batch shapes; other pairs each epoch)"
        )
        fixes.append(
            "set --steps-per-epoch (an endless stream loses no pair at epoch "
            f"ends) or lower {batch_flag}"
        )
    if counts["too_long"]:
        reasons.append(
            f"{counts['too_long']} longer than --max-length {config.max_length}"
        )
        fixes.append("raise --max-length")
    left_out = counts["partial"] + counts["too_long"]
    return (
        f"{left_out} of {counts['pairs']} training pairs are left out of each "
        f"epoch: {', '.join(reasons)}. To train on every pair, "
        f"{'; '.join(fixes)}."
    )


def _wall_clock(config, started, **kwargs):
    """A `WallClockLimit` for what is left of `max_minutes` since `started`."""
    remaining = config.max_minutes - (time.time() - started) / 60
    return WallClockLimit(max(remaining, 0.01), **kwargs)


def _has_batches(dataset):
    for _ in dataset.take(1):
        return True
    return False
