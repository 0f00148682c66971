"""End-to-end training of a translator: data, vocabulary, model, `fit`, files.

`train_translator(TrainConfig(...))` is what `keras-transformer train` and
`keras-transformer demo` run. It writes a trained-model directory (see
`keras_transformer.model_directory`). The settings, `TrainConfig`, are
declared in `keras_transformer.training.config` (and imported here).
"""

import dataclasses
import itertools
import json
import math
import os
import shlex
import sys
import time

import keras

from keras_transformer import data
from keras_transformer import model_directory as layout
from keras_transformer.data.pipeline import count_batches
from keras_transformer.models.transformer import Transformer
from keras_transformer.text import build_vocabularies
from keras_transformer.text import load_vocabularies
from keras_transformer.text import save_vocabularies
from keras_transformer.training import init_from
from keras_transformer.training.callbacks import BleuCallback
from keras_transformer.training.callbacks import WallClockLimit
from keras_transformer.training.checkpoints import checkpoint_step
from keras_transformer.training.config import (
    MIXED_PRECISION_POLICIES as MIXED_PRECISION_POLICIES,
)
from keras_transformer.training.config import MODEL_SETTINGS
from keras_transformer.training.config import PAPER_WARMUP_STEPS
from keras_transformer.training.config import RESUME_KEYS
from keras_transformer.training.config import WARMUP_FRACTION
from keras_transformer.training.config import TrainConfig
from keras_transformer.training.config import resolve_warmup_steps
from keras_transformer.training.config import warmup_scale
from keras_transformer.training.custom_loop import build_training_state
from keras_transformer.training.custom_loop import fit_custom_loop
from keras_transformer.training.custom_loop import worker_info
from keras_transformer.training.losses import LabelSmoothedCrossEntropy
from keras_transformer.training.metrics import MaskedAccuracy
from keras_transformer.training.model_settings import argument_changes
from keras_transformer.training.model_settings import check_model_arguments
from keras_transformer.training.model_settings import model_arguments
from keras_transformer.training.resume import DataPosition
from keras_transformer.training.resume import StepCheckpoint
from keras_transformer.training.resume import fit_by_epoch
from keras_transformer.training.resume import list_checkpoints
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
        num_layers=2,
        d_model=128,
        num_heads=4,
        d_ff=256,
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

    Loaded from `DIR/vocabulary/` when there, else from `config.init_from`'s,
    else trained on the first `config.vocabulary_sentences` pairs (saying in
    one line when the data allows fewer pieces than `config.vocab_size`);
    new ones are not saved yet.
    """
    directory = layout.path(config.output, layout.VOCABULARY_DIR)
    if os.path.exists(os.path.join(directory, "vocabularies.json")):
        return load_vocabularies(directory), False
    if config.init_from:
        try:
            return load_vocabularies(init_from.vocabulary_dir(config)), True
        except ValueError as error:
            raise SetupError(str(error)) from None
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
    message = _vocabulary_size_message(config, source, target)
    if message:
        print(message, flush=True)
    return (source, target), True


def _vocabulary_size_message(config, source, target):
    """One line when the vocabularies have fewer pieces than asked, else `None`.

    SentencePiece builds at most as many pieces as the data holds
    (`train_sentencepiece`'s `hard_vocab_limit=False`).
    """
    sizes = {"source": source.vocab_size, "target": target.vocab_size}
    if min(sizes.values()) >= config.vocab_size:
        return None
    if source is target:
        used = f"{source.vocab_size} pieces"
    else:
        used = ", ".join(f"{side} {size}" for side, size in sizes.items())
        used = f"{used} pieces"
    return (
        f"Vocabulary: {used} (--vocab-size {config.vocab_size} asked; the "
        f"training data allows no more)."
    )


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


def run_model_arguments(config):
    """The `Transformer` arguments of the run (vocabulary sizes apart).

    The preset's, `model_overrides` and the model settings
    (`model_settings.model_arguments`), or with `config.init_from` the
    initial model's (`init_from.initial_model_arguments`).

    Raises:
        SetupError: when the arguments cannot build a model, or change the
            architecture of the `init_from` model.
    """
    if config.init_from:
        try:
            return init_from.initial_model_arguments(config)
        except ValueError as error:
            raise SetupError(str(error)) from None
    arguments = model_arguments(config)
    if arguments["share_embeddings"] and not config.shared_vocabulary:
        raise SetupError(
            "model settings: --share-embeddings needs one vocabulary for both "
            "languages; leave out --separate-vocabularies or --share-embeddings"
        )
    try:
        check_model_arguments(arguments, vocabulary_size=config.vocab_size)
    except ValueError as error:
        raise SetupError(f"model settings: {error}") from None
    return arguments


def build_model(
    config, source_tokenizer, target_tokenizer, jit_compile=None, planned_steps=None
):
    """The `Transformer` for `config` and the vocabularies, compiled.

    With `config.init_from`, it has the initial model's weights. Without
    `config.warmup_steps`, the warm-up is `resolve_warmup_steps(config,
    planned_steps)` (said in one line when shorter than the paper's). Call
    it under the strategy's scope.

    Args:
        config: a `TrainConfig`.
        source_tokenizer: the source `SubwordTokenizer`.
        target_tokenizer: the target one (the same object when shared).
        jit_compile: optional bool, overrides `config.jit_compile`.
        planned_steps: optional int, the run's train steps (epochs x
            batches per epoch).

    Returns:
        A compiled `Transformer`.
    """
    arguments = run_model_arguments(config)
    if target_tokenizer is not source_tokenizer:
        arguments["target_vocabulary_size"] = target_tokenizer.vocab_size
    if config.init_from:
        try:
            init_from.check_vocabulary_sizes(
                config, source_tokenizer.vocab_size, target_tokenizer.vocab_size
            )
        except ValueError as error:
            raise SetupError(str(error)) from None
    try:
        model = Transformer(vocabulary_size=source_tokenizer.vocab_size, **arguments)
    except ValueError as error:  # e.g. a special id outside a tiny vocabulary
        raise SetupError(f"model settings: {error}") from None
    if config.init_from:
        init_from.load_initial_weights(model, config)
    warmup_steps = _run_warmup_steps(config, planned_steps)
    model.compile(
        optimizer=transformer_optimizer(
            model.d_model,
            warmup_steps=warmup_steps,
            scale=warmup_scale(config, warmup_steps),
        ),
        loss=LabelSmoothedCrossEntropy(label_smoothing=config.label_smoothing),
        metrics=[MaskedAccuracy()],
        jit_compile=config.jit_compile if jit_compile is None else jit_compile,
        steps_per_execution=config.steps_per_execution,
    )
    return model


# The settings that describe the model: compared through the arguments they
# give (`model_arguments`), not one by one.
_ARCHITECTURE_KEYS = frozenset({"preset", "model_overrides", *MODEL_SETTINGS})


def _check_resumable(config):
    """Refuses a run whose model cannot be built, or that would resume
    checkpoints written with other settings.

    Settings missing from an older `train_config.json` are not compared
    (model settings: the preset's). The model is compared by its
    constructor arguments, so `--preset tiny --num-layers 2` resumes a
    `--preset tiny` run (whose `num_layers` is 2).
    """
    arguments = run_model_arguments(config)
    saved_path = layout.path(config.output, layout.CONFIG_FILE)
    if not os.path.exists(saved_path):
        return
    try:
        saved = layout.read_json(saved_path)
    except ValueError as error:
        raise SetupError(f"{saved_path!r} is not valid JSON ({error})") from error
    current = dataclasses.asdict(config)
    changed = [
        f"{k}: {saved[k]!r} -> {current[k]!r}"
        for k in RESUME_KEYS
        if k not in _ARCHITECTURE_KEYS and k in saved and saved[k] != current[k]
    ]
    if config.init_from or saved.get("init_from"):
        # The initial model's architecture; the settings may set dropouts.
        changed += [
            f"{k}: {saved.get(k)!r} -> {current[k]!r}"
            for k in MODEL_SETTINGS
            if saved.get(k) != current[k]
        ]
    elif "preset" in saved:
        changed += argument_changes(model_arguments(saved), arguments)
    if changed:
        raise SetupError(
            f"{config.output!r} holds a run with other settings "
            f"({', '.join(changed)}); use a new --output directory, or the "
            "same settings to resume."
        )


def train_translator(config):
    """Trains a translator and writes its model directory.

    Rerunning with the same `config` after an interruption (crash, `kill
    -9`, preemption, `max_minutes`) resumes from the latest complete
    checkpoint in `DIR/checkpoints/resume/` at the exact batch: weights,
    optimizer, dropout RNG and data position are restored, so the result
    equals an uninterrupted run's (with `deterministic=True`).

    What happened is printed (unless `config.verbose` is 0): `resuming from
    step N of M (checkpoint PATH)` when it resumes, one line when
    `max_minutes` stops it, and at the end a summary (`run_summary`). A
    rerun of a finished run (its checkpoints hold `config.epochs` epochs)
    says so and changes no file. On Ctrl-C (`KeyboardInterrupt`) during
    training, the state reached is saved as a checkpoint and the command
    that resumes (`resume_command`) is printed on stderr before the
    exception propagates.

    Returns:
        The dict written to `metrics.json` (the existing one, for a
        finished run).

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
    finished = _finished_run(config)
    if finished is not None:
        _report_finished(config, finished)
        return finished
    train_pairs = _pairs(config.train, "train")
    valid_spec = _validation_spec(config)
    valid_pairs = _pairs(valid_spec, "valid") if valid_spec else None
    tokenizers, new_vocabularies = _vocabularies(config, train_pairs)
    # Before the run writes anything: it may have no batch to train on.
    counts = _check_training_batches(config, train_pairs, *tokenizers)
    os.makedirs(config.output, exist_ok=True)
    if new_vocabularies:
        save_vocabularies(
            layout.path(config.output, layout.VOCABULARY_DIR), *tokenizers
        )
    _write_config(config, counts)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return _train_multiworker(config, strategy, train_pairs, *tokenizers, started)
    # Counted once: the progress bars' and `fit`'s steps per epoch.
    batches = config.steps_per_epoch or counts["batches"]
    return _train_with_fit(
        config, strategy, train_pairs, valid_pairs, tokenizers, started, batches
    )


# The warm-up a run without `warmup_steps` started with, kept beside its
# checkpoints: a resumed run keeps it, even with more `epochs`.
WARMUP_FILE = os.path.join("checkpoints", "warmup.json")


def _write_config(config, counts):
    """Writes `train_config.json`, and records the run's warm-up.

    The warm-up is resolved once, when the run starts (`resolve_warmup_steps`
    of the planned steps), in `WARMUP_FILE`, and kept by the run's
    resumptions.
    """
    layout.write_json(
        layout.path(config.output, layout.CONFIG_FILE), dataclasses.asdict(config)
    )
    path = layout.path(config.output, WARMUP_FILE)
    if config.warmup_steps is None and os.path.exists(path):
        return
    planned = config.epochs * (config.steps_per_epoch or counts["batches"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    warmup_steps = resolve_warmup_steps(config, planned)
    layout.write_json(path, {"warmup_steps": warmup_steps, "planned_steps": planned})


def _run_warmup_steps(config, planned_steps):
    """The warm-up of this run: the one `train_config.json` records, else
    `resolve_warmup_steps`; says so when it is not the paper's."""
    if config.warmup_steps is not None:
        return config.warmup_steps
    path = layout.path(config.output, WARMUP_FILE) if config.output else None
    recorded = None
    if path and os.path.exists(path):
        recorded = layout.read_json(path)["warmup_steps"]
    warmup_steps = recorded or resolve_warmup_steps(config, planned_steps)
    if warmup_steps < PAPER_WARMUP_STEPS:
        print(
            f"Warm-up: {warmup_steps} steps, a tenth of the run's planned steps "
            f"(the paper's {PAPER_WARMUP_STEPS} when the run plans "
            f"{int(PAPER_WARMUP_STEPS / WARMUP_FRACTION)} or more; "
            "--warmup-steps sets it).",
            flush=True,
        )
    return warmup_steps


def _validation_spec(config):
    """The SPEC of the validation data: `config.valid`, or the demo's split.

    Returns:
        A SPEC string, or `None` when there is no validation data.
    """
    if config.valid:
        return config.valid
    return config.train if config.train.split(":")[0] == "demo" else None


def _train_with_fit(
    config, strategy, train_pairs, valid_pairs, tokenizers, started, batches
):
    """Trains with `model.fit`, resuming from `DIR/checkpoints/resume/`.

    `batches` is the number of batches per epoch. Says when it resumes,
    when the time limit stops it and where it stopped on Ctrl-C, and ends
    with the run's summary.
    """
    position, train_data, valid_data = _fit_datasets(
        config, train_pairs, valid_pairs, tokenizers
    )
    planned = config.epochs * batches
    jit_compile = resolve_jit_compile(config, strategy)
    with strategy.scope():
        model = build_model(config, *tokenizers, jit_compile, planned_steps=planned)
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
    if state:
        checkpoint.restored(state["step"])
        _say(
            config,
            f"resuming from step {state['step']} of {planned} "
            f"(checkpoint {checkpoint.last_saved})",
        )
    callbacks = _bleu_callbacks(config, model, valid_pairs, *tokenizers)
    callbacks += _file_callbacks(config, checkpoint)
    wall_clock = None
    if config.max_minutes:
        wall_clock = _wall_clock(config, started, restart_each_fit=False)
        callbacks.append(wall_clock)
    stopped = lambda: bool(wall_clock and wall_clock.stopped_early)
    try:
        _fit(
            model,
            train_data,
            config,
            checkpoint,
            initial_epoch,
            # The batches of the first epoch already trained on (none when
            # the run starts at the next epoch).
            resumed_batch=state["batch"]
            if state and initial_epoch == state["epoch"]
            else 0,
            stopped=stopped,
            batches_per_epoch=batches,
            validation_data=valid_data,
            callbacks=callbacks,
            verbose=config.verbose,
            # The datasets are shuffled (and batched) by the pipeline.
            shuffle=False,
        )
    except KeyboardInterrupt:
        saved = checkpoint.save_interrupted()
        _report_interrupted(config, saved, checkpoint.steps, planned)
        raise
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
    metrics["planned_steps"] = planned
    metrics.update(init_from.init_from_record(config))
    layout.write_json(layout.path(config.output, layout.METRICS_FILE), metrics)
    _report_end(config, metrics, planned)
    return metrics


def _fit_datasets(config, train_pairs, valid_pairs, tokenizers):
    """`(DataPosition, resumable training dataset, validation dataset or None)`.

    Epoch `e`'s order is seeded by `config.seed + e`, so that a resumed run
    can rebuild it. The validation dataset's length is counted (one
    tokenizing pass) and set as its cardinality, so that Keras neither
    counts it nor warns that it ran out of data.
    """
    import tensorflow as tf

    repeat = config.steps_per_epoch is not None

    def dataset(pairs, training, seed=config.seed):
        return _dataset(config, pairs, *tokenizers, training, seed, repeat)

    position = DataPosition(repeat=repeat)
    train_data = position.dataset(
        lambda epoch: dataset(train_pairs, True, seed=config.seed + epoch)
    )
    valid_data = None
    if valid_pairs is not None:
        valid_data = dataset(valid_pairs, False).apply(
            tf.data.experimental.assert_cardinality(
                _validation_batches(config, valid_pairs, *tokenizers)
            )
        )
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
    batches_per_epoch=None,
    **fit_kwargs,
):
    """Runs `fit` from `initial_epoch` to `config.epochs`.

    Epochs that are passes over the data get one `fit` call each
    (`fit_by_epoch`), told the epoch's `batches_per_epoch` when given (less
    the `resumed_batch` already trained on, for the first). With
    `config.steps_per_epoch`, the epochs are slices of one endless stream,
    and Keras keeps one iterator per `fit` call: a run resumed
    `resumed_batch` batches into an epoch first trains the rest of that
    epoch, then continues on a new stream that skips every batch consumed so
    far. No epoch starts once `stopped()` is true.
    """
    if config.steps_per_epoch is None:
        epoch_steps = None
        if batches_per_epoch:
            epoch_steps = lambda epoch: (
                batches_per_epoch - (resumed_batch if epoch == initial_epoch else 0)
            )
        fit_by_epoch(
            model,
            train_data,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            stop=stopped,
            epoch_steps=epoch_steps,
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
        "epochs_completed": checkpoint.epochs_completed,
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
    pairs; only the chief writes `model.keras` and `metrics.json`, and
    prints the run's summary. No validation or BLEU during training
    (evaluate the model afterwards).
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

    planned = config.epochs * config.steps_per_epoch
    jit_compile = resolve_jit_compile(config, strategy)
    with strategy.scope():
        model = build_model(
            config,
            source_tokenizer,
            target_tokenizer,
            jit_compile,
            planned_steps=planned,
        )
    callbacks = []
    if config.max_minutes:
        callbacks.append(_wall_clock(config, started))
    is_chief = strategy.extended.should_checkpoint
    checkpoint_dir = os.path.join(
        layout.path(config.output, layout.CHECKPOINT_DIR), TRAIN_STATE_DIR
    )
    try:
        history = fit_custom_loop(
            model,
            dataset_fn,
            strategy=strategy,
            epochs=config.epochs,
            steps_per_epoch=config.steps_per_epoch,
            checkpoint_dir=checkpoint_dir,
            callbacks=callbacks,
            verbose=1 if config.verbose else 0,
            save_every_steps=config.checkpoint_every,
            max_to_keep=config.keep_checkpoints,
            jit_compile=jit_compile,
        )
    except KeyboardInterrupt:
        if is_chief:
            saved = _latest_train_state(checkpoint_dir)
            _report_interrupted(
                config, saved, checkpoint_step(saved) if saved else 0, planned
            )
        raise
    metrics = _multiworker_metrics(
        config, model, strategy, history, started, jit_compile
    )
    metrics["stopped_by_time_limit"] = bool(callbacks and callbacks[0].stopped_early)
    metrics["planned_steps"] = planned
    metrics.update(init_from.init_from_record(config))
    if is_chief:
        model.save(layout.path(config.output, layout.MODEL_FILE))
        layout.write_json(layout.path(config.output, layout.METRICS_FILE), metrics)
        _report_end(config, metrics, planned)
    return metrics


def _latest_train_state(checkpoint_dir):
    """The latest multi-worker checkpoint's prefix (`.../ckpt-N`), or `None`."""
    import tensorflow as tf

    return tf.train.latest_checkpoint(checkpoint_dir)


def _multiworker_metrics(config, model, strategy, history, started, jit_compile):
    """The `metrics.json` of a `fit_custom_loop` run."""
    steps = int(model.optimizer.iterations.numpy())
    last = lambda name: float(history[name][-1]) if history.get(name) else math.nan
    return {
        "steps": steps,
        "optimizer_iterations": steps,
        # Finished epochs only: a time limit may stop one part-way.
        "epochs_completed": steps // config.steps_per_epoch,
        "train_loss": last("loss"),
        "train_accuracy": last("masked_accuracy"),
        "wall_seconds": round(time.time() - started, 1),
        "parameters": int(model.count_params()),
        "strategy": type(strategy).__name__,
        "replicas": int(strategy.num_replicas_in_sync),
        "workers": worker_info(strategy)[0],
        "jit_compile": bool(jit_compile),
    }


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
    """Refuses a run that has no batch to train on; says what is left out.

    Tokenizes the training pairs once (`data.pipeline.count_batches`; no
    shuffle, no random numbers, so the run trains as it would without).
    Each epoch of the training pipeline skips the pairs longer than
    `max_length` and, for static batch shapes, each length bucket's last,
    partial batch. With `steps_per_epoch`, the batches come from an endless
    stream where partial batches fill up in the next pass: there, only a
    pair within `max_length` is needed, and the pass stops at the first.
    The pairs an epoch leaves out are said in one line on stderr
    (`_left_out_message`).

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
        print(_left_out_message(config, counts), file=sys.stderr, flush=True)
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


def _say(config, text, file=None):
    """Prints one report line, unless `config.verbose` is 0."""
    if config.verbose:
        print(text, file=file or sys.stdout, flush=True)


def _eval_batches(counts):
    """The batches of one pass of `make_dataset(..., drop_remainder=False)`:
    each length bucket's full batches and its last, partial one."""
    return sum(-(-pairs // batch) for pairs, batch, *_ in counts["buckets"])


def _validation_batches(config, valid_pairs, source_tokenizer, target_tokenizer):
    """The batches of the validation dataset (one tokenizing pass)."""
    counts = count_batches(
        valid_pairs,
        source_tokenizer.tokenize,
        target_tokenizer.tokenize,
        **_batching(config),
    )
    return _eval_batches(counts)


def _checkpointed_epochs(config):
    """The epochs the run's latest checkpoint has completed (0 without one).

    Reads the latest `StepCheckpoint` state of `DIR/checkpoints/resume/`,
    or the step of the latest multi-worker checkpoint.
    """
    import tensorflow as tf

    paths = list_checkpoints(_resume_dir(config))
    if paths:
        try:
            with tf.io.gfile.GFile(paths[-1], "r") as f:
                return int(json.loads(f.read())["epoch"])
        except (ValueError, KeyError, TypeError, OSError):
            return 0
    train_state = os.path.join(
        layout.path(config.output, layout.CHECKPOINT_DIR), TRAIN_STATE_DIR
    )
    latest = tf.train.latest_checkpoint(train_state)
    if latest and config.steps_per_epoch:
        return (checkpoint_step(latest) or 0) // config.steps_per_epoch
    return 0


def _finished_run(config):
    """The `metrics.json` of a finished run in `config.output`, else `None`.

    Finished: `model.keras` and `metrics.json` are there, and the latest
    checkpoint has completed `config.epochs` epochs or more.
    """
    metrics_file = layout.path(config.output, layout.METRICS_FILE)
    if not (
        os.path.exists(layout.path(config.output, layout.MODEL_FILE))
        and os.path.exists(metrics_file)
        and _checkpointed_epochs(config) >= config.epochs
    ):
        return None
    try:
        return layout.read_json(metrics_file)
    except ValueError:
        return None


def resume_command(config):
    """The command that reruns (and so resumes) this run.

    The command line of this process when it is `keras-transformer` (or
    `python -m keras_transformer`), quoted for a POSIX shell; otherwise a
    description of the `train_translator` call.
    """
    argv = sys.argv or [""]
    program = os.path.basename(argv[0])
    package = os.path.basename(os.path.dirname(os.path.abspath(argv[0])))
    if program == "keras-transformer" or (
        program == "__main__.py" and package == "keras_transformer"
    ):
        return shlex.join(["keras-transformer", *argv[1:]])
    return f"train_translator() with the same TrainConfig (output={config.output!r})"


def _report_interrupted(config, saved, steps, planned):
    """Says (on stderr) where an interrupted run stopped and how to resume."""
    if saved:
        where = f"saved checkpoint {saved}"
    else:
        where = "no checkpoint saved: a rerun starts over"
    print(
        f"Training interrupted at step {steps} of {planned}; {where}. "
        f"To resume, run:\n  {resume_command(config)}",
        file=sys.stderr,
        flush=True,
    )


def _duration(seconds):
    """`seconds` as `"42 s"`, `"3 min 05 s"` or `"2 h 07 min"`."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


def _scores_line(metrics):
    """`final train loss 3.21, valid loss 3.40, valid BLEU 12.3`: the ones known."""
    names = (
        ("train_loss", "train loss", "{:.4f}"),
        ("valid_loss", "valid loss", "{:.4f}"),
        ("valid_bleu", "valid BLEU", "{:.2f}"),
    )
    parts = [
        f"{label} {form.format(metrics[key])}"
        for key, label, form in names
        if isinstance(metrics.get(key), (int, float)) and math.isfinite(metrics[key])
    ]
    return "final " + ", ".join(parts) if parts else None


def _next_commands(config):
    """The lines that say how to evaluate and use the trained model."""
    directory = shlex.quote(config.output)
    test = "demo" if config.train.split(":")[0] == "demo" else "SPEC"
    return [
        "Next:",
        f"  keras-transformer evaluate --model {directory} --test {test}",
        f"  keras-transformer translate --model {directory}",
        f"  keras-transformer export --model {directory} --output "
        f"{shlex.quote(layout.path(config.output, layout.EXPORT_DIR))}",
    ]


def run_summary(config, metrics):
    """The lines printed at the end of a training run.

    Args:
        config: the run's `TrainConfig`.
        metrics: the run's `metrics.json` dict.

    Returns:
        A list of lines: how far training went (steps, epochs, time), the
        final losses and BLEU, where the files are (those that exist), and
        the next commands.
    """
    planned = metrics.get("planned_steps")
    epochs = metrics["epochs_completed"]
    state = "finished" if epochs >= config.epochs else "stopped"
    steps = f"{metrics['steps']} of {planned}" if planned else metrics["steps"]
    head = (
        f"Training {state}: {steps} steps, {epochs} of {config.epochs} epochs "
        f"complete, {_duration(metrics['wall_seconds'])}"
    )
    if metrics.get("resumed_from_step") is not None:
        head += f" (resumed from step {metrics['resumed_from_step']})"
    lines = [head + "."]
    scores = _scores_line(metrics)
    if scores:
        lines.append(f"  {scores}")
    where = lambda name: layout.path(config.output, name)
    logs = where(layout.LOG_DIR)
    files = [
        ("model", where(layout.MODEL_FILE)),
        ("vocabulary", where(layout.VOCABULARY_DIR)),
        ("metrics", where(layout.METRICS_FILE)),
        ("logs", f"{logs}  (tensorboard --logdir {shlex.quote(logs)})"),
        ("checkpoints", where(layout.CHECKPOINT_DIR)),
    ]
    files.append(("export", where(layout.EXPORT_DIR)))
    lines += [
        f"  {name + ':':<13}{path}"
        for name, path in files
        if os.path.exists(path.split("  ")[0])
    ]
    return lines + _next_commands(config)


def _report_end(config, metrics, planned):
    """Prints the time-limit line (when it stopped the run) and the summary."""
    if metrics.get("stopped_by_time_limit"):
        _say(
            config,
            f"--max-minutes {config.max_minutes:g} stopped training after "
            f"{metrics['steps']} of {planned} steps ({metrics['epochs_completed']} "
            f"of {config.epochs} epochs complete); to continue, rerun: "
            f"{resume_command(config)}",
        )
    _say(config, "\n".join(run_summary(config, metrics)))


def _report_finished(config, metrics):
    """Says that `config.output` holds a finished run, which is left as it is."""
    _say(
        config,
        f"Nothing to do: {config.output} holds a finished run "
        f"({metrics.get('epochs_completed')} of {config.epochs} epochs, "
        f"{metrics.get('steps')} steps); its files are left as they are. "
        "Raise --epochs to train on, or use a new --output to start over.",
    )
    _say(config, "\n".join(_next_commands(config)))
