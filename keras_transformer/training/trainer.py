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
from keras_transformer.training.losses import LabelSmoothedCrossEntropy
from keras_transformer.training.metrics import MaskedAccuracy
from keras_transformer.training.schedules import transformer_optimizer


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
        warmup_steps, learning_rate_scale: the paper's schedule.
        label_smoothing: float.
        max_minutes: wall-clock budget; training stops cleanly after it.
        bleu_sentences: validation sentences decoded for BLEU each epoch.
        seed: int.
        jit_compile: compile the train step with XLA.
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
    warmup_steps: int = 4000
    learning_rate_scale: float = 1.0
    label_smoothing: float = 0.1
    max_minutes: float | None = None
    bleu_sentences: int = 200
    bleu_beam_size: int = 1
    bleu_tokenize: str = "13a"
    seed: int = 1234
    jit_compile: bool = True
    verbose: int | str = "auto"


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


def build_model(config, source_tokenizer, target_tokenizer):
    """The `Transformer` for `config` and the vocabularies, compiled."""
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
        jit_compile=config.jit_compile,
    )
    return model


def train_translator(config):
    """Trains a translator and writes its model directory.

    Returns:
        The dict written to `metrics.json`.
    """
    keras.utils.set_random_seed(config.seed)
    os.makedirs(config.output, exist_ok=True)
    started = time.time()
    train_pairs = _pairs(config.train, "train")
    valid_spec = config.valid or (
        config.train if config.train.split(":")[0] == "demo" else None
    )
    valid_pairs = _pairs(valid_spec, "valid") if valid_spec else None
    source_tokenizer, target_tokenizer = _vocabularies(config, train_pairs)
    layout.write_json(
        layout.path(config.output, layout.CONFIG_FILE), dataclasses.asdict(config)
    )

    def dataset(pairs, training):
        return data.make_dataset(
            pairs,
            source_tokenizer.tokenize,
            target_tokenizer.tokenize,
            batch_size=None if config.batch_tokens else config.batch_size,
            batch_tokens=config.batch_tokens,
            max_source_length=config.max_length,
            max_target_length=config.max_length,
            shuffle=training,
            seed=config.seed,
            repeat=training and config.steps_per_epoch is not None,
            drop_remainder=training,
        )

    train_data = dataset(train_pairs, True)
    valid_data = dataset(valid_pairs, False) if valid_pairs is not None else None
    model = build_model(config, source_tokenizer, target_tokenizer)

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
    ]
    wall_clock = None
    if config.max_minutes:
        remaining = config.max_minutes - (time.time() - started) / 60
        wall_clock = WallClockLimit(max(remaining, 0.01))
        callbacks.append(wall_clock)

    history = model.fit(
        train_data,
        validation_data=valid_data,
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        callbacks=callbacks,
        verbose=config.verbose,
    )
    model.save(layout.path(config.output, layout.MODEL_FILE))
    logs = history.history
    last = lambda name: float(logs[name][-1]) if logs.get(name) else math.nan
    metrics = {
        "steps": int(model.optimizer.iterations.numpy()),
        "epochs_completed": len(logs.get("loss", [])),
        "train_loss": last("loss"),
        "train_accuracy": last("masked_accuracy"),
        "valid_loss": last("val_loss"),
        "valid_accuracy": last("val_masked_accuracy"),
        "valid_bleu": last("val_bleu"),
        "stopped_by_time_limit": bool(wall_clock and wall_clock.stopped_early),
        "wall_seconds": round(time.time() - started, 1),
        "parameters": int(model.count_params()),
    }
    layout.write_json(layout.path(config.output, layout.METRICS_FILE), metrics)
    return metrics
