"""What the WMT 2014 English-German scripts share: flags, files, data, model.

The scripts (`prepare.py`, `train.py`, `average.py`, `evaluate.py`,
`export.py`) are thin command lines over `keras_transformer`; this module
holds the few things they have in common. Every file operation goes through
`tf.io.gfile`, so a model directory may be local or on Cloud Storage
(`gs://bucket/...`). Where a library function only takes local files (Keras
weight files, checkpoint averaging, the SavedModel export's warmup file),
the file is written to a local temporary directory and copied.

A model directory holds (the layout of `keras_transformer.model_directory`,
plus the WMT files):

```
DIR/
  wmt_config.json           the settings of the run (checked on every re-run)
  vocabulary/               shared SentencePiece BPE model + vocabularies.json
  checkpoints/ckpt-N.weights.h5   model + optimizer state after step N
  logs/                     TensorBoard
  averaged.weights.h5       average of the last K checkpoints (average.py)
  averaged.json             which checkpoints were averaged
  model.keras               the averaged model (loads with `keras-transformer`)
  eval/                     BLEU reports and translations (evaluate.py)
  export/1/                 the SavedModel translator (export.py)
```
"""

import argparse
import contextlib
import itertools
import json
import os
import shutil
import sys
import tempfile

import tensorflow as tf

from keras_transformer import data
from keras_transformer import model_directory as layout
from keras_transformer.models.transformer import Transformer
from keras_transformer.special_tokens import PAD_ID
from keras_transformer.text import build_vocabularies
from keras_transformer.text import load_vocabularies
from keras_transformer.text import save_vocabularies
from keras_transformer.training.checkpoints import list_step_checkpoints
from keras_transformer.training.trainer import SetupError
from keras_transformer.training.trainer import TrainConfig

TFDS_NAME = "wmt14_translate/de-en"
DIRECTIONS = ("en-de", "de-en")
CONFIG_FILE = "wmt_config.json"
VOCABULARY_DIR = layout.VOCABULARY_DIR
CHECKPOINT_DIR = layout.CHECKPOINT_DIR
LOG_DIR = layout.LOG_DIR
MODEL_FILE = layout.MODEL_FILE
EXPORT_DIR = layout.EXPORT_DIR
EVAL_DIR = "eval"
AVERAGED_WEIGHTS = "averaged.weights.h5"
AVERAGED_INFO = "averaged.json"
CHECKPOINT_PREFIX = "ckpt-"
CHECKPOINT_SUFFIX = ".weights.h5"
# The `pattern` of `list_step_checkpoints` (not the `partial-` files).
CHECKPOINT_PATTERN = f"{CHECKPOINT_PREFIX}*{CHECKPOINT_SUFFIX}"

# The paper averages the last 5 checkpoints of base models, 20 of big ones.
AVERAGE_LAST = {"base": 5, "big": 20}

# Settings that change the model or its vocabulary: a re-run of a model
# directory must keep them.
_FIXED_SETTINGS = ("direction", "vocab_size", "preset", "model")


def run_cli(main, argv=None, prog="wmt"):
    """Runs `main(argv)`; user errors become one line on stderr and status 2.

    User errors are the library's: `SetupError` (a bad flag or model
    directory, no such device), `data.DataError` (bad input data), and
    `FileNotFoundError` and `FileExistsError`.
    """
    try:
        main(argv)
    except (SetupError, data.DataError, FileNotFoundError, FileExistsError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    return 0


# ----------------------------------------------------------------------------
# Files (local or gs://)


def join(directory, *names):
    """`directory/name/...`; works for local paths and `gs://` URLs."""
    return os.path.join(os.fspath(directory), *names)


def is_remote(path):
    """Whether `path` is a URL (`gs://...`) rather than a local path."""
    return "://" in os.fspath(path)


def write_json(path, value):
    """Writes `value` as JSON to `path` (any `tf.io.gfile` path)."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    partial = path + ".partial"
    with tf.io.gfile.GFile(partial, "w") as f:
        f.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    tf.io.gfile.rename(partial, path, overwrite=True)


def read_json(path):
    with tf.io.gfile.GFile(path, "r") as f:
        return json.loads(f.read())


def upload(local_path, path):
    """Copies a local file to `path` so that no reader sees half a file."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    partial = path + ".partial"
    tf.io.gfile.copy(local_path, partial, overwrite=True)
    tf.io.gfile.rename(partial, path, overwrite=True)


def upload_tree(local_directory, directory):
    """Copies a local directory tree to `directory` (any gfile path)."""
    for root, _, files in os.walk(local_directory):
        relative = os.path.relpath(root, local_directory)
        target = directory if relative == "." else join(directory, relative)
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(join(root, name), join(target, name), overwrite=True)


@contextlib.contextmanager
def local_directory():
    """A temporary local directory, removed afterwards."""
    directory = tempfile.mkdtemp(prefix="wmt-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def local_copy(path, directory):
    """`path` itself when local, else a copy of it inside `directory`."""
    if not is_remote(path):
        return os.fspath(path)
    local = join(directory, os.path.basename(path))
    tf.io.gfile.copy(path, local, overwrite=True)
    return local


def save_weights(model, path):
    """`model.save_weights` (model and optimizer state) to any gfile path.

    The file appears complete or not at all: it is written under another
    name (locally first for a remote `path`) and renamed.
    """
    if not is_remote(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        partial = join(os.path.dirname(path), "partial-" + os.path.basename(path))
        model.save_weights(partial)
        os.replace(partial, path)
        return
    with local_directory() as directory:
        local = join(directory, os.path.basename(path))
        model.save_weights(local)
        upload(local, path)


def load_weights(model, path):
    """`model.load_weights` from any gfile path."""
    with local_directory() as directory:
        model.load_weights(local_copy(path, directory))


# ----------------------------------------------------------------------------
# Checkpoints


def checkpoint_path(model_dir, step):
    return join(
        checkpoint_dir(model_dir), f"{CHECKPOINT_PREFIX}{step}{CHECKPOINT_SUFFIX}"
    )


def checkpoint_dir(model_dir):
    """`DIR/checkpoints`: list it with the library's `list_step_checkpoints`."""
    return join(model_dir, CHECKPOINT_DIR)


# ----------------------------------------------------------------------------
# Flags, settings


def add_data_flags(parser):
    parser.add_argument(
        "--direction",
        default="en-de",
        choices=DIRECTIONS,
        help="Translation direction (default en-de, the paper's).",
    )
    parser.add_argument(
        "--data-dir",
        help="TFDS data directory, e.g. gs://BUCKET/tensorflow_datasets "
        "(default: TFDS's, ~/tensorflow_datasets).",
    )
    parser.add_argument(
        "--no-download",
        action="store_true",
        help="Use only data already prepared in --data-dir.",
    )


def add_vocabulary_flags(parser):
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=37000,
        help="Shared BPE vocabulary size (paper: about 37000).",
    )
    parser.add_argument(
        "--vocab-sample",
        type=int,
        default=1_000_000,
        help="Sentences (both languages together) the vocabulary is trained "
        "on: a seeded uniform sample of the whole training split.",
    )
    parser.add_argument("--seed", type=int, default=1234)


def add_batching_flags(parser):
    parser.add_argument(
        "--batch-tokens",
        type=int,
        default=25000,
        help="Padded tokens per side per global batch (paper: ~25000).",
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=256,
        help="Longest training sentence kept, in subword tokens (EOS/BOS "
        "included); longer pairs are dropped.",
    )
    parser.add_argument(
        "--bucket-boundaries",
        type=int_list,
        help="Padded lengths of the length buckets, e.g. 16,32,64,128 "
        "(default: the library's 8,12,16,24,32,48,64,96,128,192,...). Fewer "
        "buckets: fewer batch shapes to compile (TPU, XLA), more padding; "
        "without XLA, the library's FINE_BOUNDARIES (8,10,12,14,16,20,...) "
        "pad less.",
    )


def add_mock_flag(parser):
    parser.add_argument(
        "--mock-examples",
        type=int,
        metavar="N",
        help="Smoke tests: replace the dataset with N random examples per "
        "split (tfds.testing.mock_data); nothing is downloaded.",
    )


def mock_data(num_examples):
    """`tfds.testing.mock_data(num_examples=...)`, or nothing for `None`."""
    if not num_examples:
        return contextlib.nullcontext()
    import tensorflow_datasets as tfds

    return tfds.testing.mock_data(num_examples=num_examples)


def verbosity(value):
    """argparse type of `--verbose`: `auto` or an int."""
    return value if value == "auto" else int(value)


def int_list(text):
    """argparse type: `"16,32,64"` -> `[16, 32, 64]`."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers like 16,32,64: {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


def direction_languages(direction):
    source, _, target = direction.partition("-")
    return source, target


def load_pairs(args, split):
    """The tfds `wmt14_translate/de-en` split as `(source, target)` pairs."""
    source, target = direction_languages(args.direction)
    return data.load_tfds(
        TFDS_NAME,
        split,
        source_language=source,
        target_language=target,
        data_dir=args.data_dir,
        download=not args.no_download,
    )


def vocabulary_settings(args):
    return {"direction": args.direction, "vocab_size": args.vocab_size}


def load_config(model_dir):
    """The `wmt_config.json` of `model_dir`, or `None`."""
    path = join(model_dir, CONFIG_FILE)
    return read_json(path) if tf.io.gfile.exists(path) else None


def require_config(model_dir):
    """The stored settings of a model directory that `train.py` has used."""
    config = load_config(model_dir)
    if config is None or "preset" not in config:
        raise SetupError(
            f"{join(model_dir, CONFIG_FILE)} is missing or has no model "
            f"settings: is {model_dir} a directory written by "
            "examples/wmt/train.py?"
        )
    return config


def check_or_write_config(model_dir, settings):
    """Writes `settings` on the first run; on a re-run, checks they match.

    Only the keys of `_FIXED_SETTINGS` that `settings` has are compared (the
    model and its vocabulary); batching, step counts and the strategy may
    change between runs. The stored file is updated with the new values.
    """
    path = join(model_dir, CONFIG_FILE)
    stored = load_config(model_dir) or {}
    changed = {
        key: (stored[key], settings[key])
        for key in _FIXED_SETTINGS
        if key in stored and key in settings and stored[key] != settings[key]
    }
    if changed:
        details = ", ".join(
            f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items()
        )
        raise SetupError(
            f"{model_dir} was made with other settings ({details}); use a new "
            "--model-dir or the original flags."
        )
    write_json(path, {**stored, **settings})
    return {**stored, **settings}


# ----------------------------------------------------------------------------
# Vocabulary


def vocabulary(model_dir, args, log=print):
    """The shared tokenizer of `model_dir`, trained first if missing.

    A shared SentencePiece BPE vocabulary (`build_vocabularies(shared=True)`)
    of at most `--vocab-size` pieces, trained on a seeded uniform sample of
    `--vocab-sample` sentences of the whole training split (English and
    German alternately), as the paper's shared ~37,000-token BPE vocabulary.
    """
    directory = join(model_dir, VOCABULARY_DIR)
    check_or_write_config(model_dir, vocabulary_settings(args))
    if tf.io.gfile.exists(join(directory, "vocabularies.json")):
        tokenizer, _ = load_vocabularies(directory)
        return tokenizer
    log(
        f"Training a shared BPE vocabulary of {args.vocab_size} pieces on "
        f"{args.vocab_sample} sampled sentences of {TFDS_NAME} (reads the "
        "whole training split once)..."
    )
    # One pass over the corpus feeds both sides (tee buffers one pair).
    sources, targets = itertools.tee(iter(load_pairs(args, "train")))
    tokenizer, _ = build_vocabularies(
        (source for source, _ in sources),
        (target for _, target in targets),
        args.vocab_size,
        shared=True,
        model_type="bpe",
        input_sentence_size=args.vocab_sample,
        seed=args.seed,
    )
    save_vocabularies(directory, tokenizer, tokenizer)
    check_or_write_config(
        model_dir, {"vocab_sample": args.vocab_sample, "vocab_seed": args.seed}
    )
    log(f"Wrote {directory} ({tokenizer.vocab_size} pieces).")
    return tokenizer


# ----------------------------------------------------------------------------
# Batching


def make_dataset(
    pairs, tokenizer, args, training, seed=None, replicas=1, drop_remainder=True
):
    """Token-budget batches of `pairs` (the library's `data.make_dataset`).

    Every batch holds at most `--batch-tokens` padded tokens per side; pairs
    longer than `--max-length` tokens are dropped. With several replicas the
    batch is cut to a multiple of their number (at most `replicas - 1`
    sentences dropped), so each replica gets the same shape (TPUs need it).
    """
    dataset = data.make_dataset(
        pairs,
        tokenizer.tokenize,
        tokenizer.tokenize,
        batch_tokens=args.batch_tokens,
        max_source_length=args.max_length,
        max_target_length=args.max_length,
        bucket_boundaries=getattr(args, "bucket_boundaries", None),
        shuffle=training,
        seed=seed,
        repeat=training,
        drop_remainder=drop_remainder,
    )
    if replicas > 1:
        # TODO(library): make_dataset could round each bucket's batch size
        # down to a multiple of the replica count itself.
        def trim(inputs, target_out):
            size = tf.shape(target_out)[0] // replicas * replicas
            return {name: ids[:size] for name, ids in inputs.items()}, target_out[:size]

        dataset = dataset.map(trim).filter(
            lambda inputs, target_out: tf.shape(target_out)[0] > 0
        )
    return dataset


def require_a_full_batch(pairs, tokenizer, args):
    """Raises `SetupError` when `pairs` cannot fill a single training batch.

    The training pipeline repeats forever and drops partial batches, so on a
    tiny corpus (`--mock-examples`) with a large `--batch-tokens` it would
    wait forever without a batch.
    """
    dataset = make_dataset(pairs, tokenizer, args, training=False)
    if not any(True for _ in dataset.take(1)):
        raise SetupError(
            f"the data cannot fill one batch of --batch-tokens "
            f"{args.batch_tokens}; use a smaller budget (e.g. --batch-tokens 96 "
            "--max-length 24 with --mock-examples)"
        )


def batch_report(dataset, num_batches=None):
    """Padding and fill of token-budget batches.

    Returns:
        dict with `batches`, `padding_source` and `padding_target` (pad
        fraction of the padded tokens), `real_tokens_source` and
        `real_tokens_target` (mean non-pad tokens per batch),
        `max_padded_tokens` (largest `batch * length` of either side) and
        `shapes` (number of distinct batch shapes).
    """
    totals = {"source": [0, 0], "target": [0, 0]}
    shapes = set()
    batches = 0
    largest = 0
    for inputs, target_out in dataset.take(num_batches or -1):
        for side, ids in (("source", inputs["source"]), ("target", target_out)):
            ids = ids.numpy()
            totals[side][0] += int((ids != PAD_ID).sum())
            totals[side][1] += ids.size
            largest = max(largest, ids.size)
        shapes.add((*inputs["source"].shape, target_out.shape[1]))
        batches += 1
    report = {"batches": batches, "max_padded_tokens": largest, "shapes": len(shapes)}
    for side, (real, padded) in totals.items():
        report[f"padding_{side}"] = 1.0 - real / max(padded, 1)
        report[f"real_tokens_{side}"] = real / max(batches, 1)
    return report


def format_batch_report(report, batch_tokens):
    return (
        f"{report['batches']} batches, {report['shapes']} shapes, budget "
        f"{batch_tokens} padded tokens per side (largest seen "
        f"{report['max_padded_tokens']}); padding "
        f"{100 * report['padding_source']:.1f}% source, "
        f"{100 * report['padding_target']:.1f}% target; real tokens per batch "
        f"{report['real_tokens_source']:.0f} source, "
        f"{report['real_tokens_target']:.0f} target"
    )


# ----------------------------------------------------------------------------
# Model


def add_model_flags(parser):
    parser.add_argument(
        "--preset",
        default="base",
        choices=["base", "big", "tiny"],
        help="The paper's base or big model (tiny: for CPUs and tests).",
    )
    for flag, kind, text in (
        ("--num-layers", int, "encoder and decoder layers"),
        ("--d-model", int, "model width"),
        ("--num-heads", int, "attention heads"),
        ("--d-ff", int, "feed-forward width"),
        ("--dropout", float, "residual/embedding dropout (base 0.1, big 0.3)"),
    ):
        parser.add_argument(flag, type=kind, help=f"Override the preset's {text}.")


def model_overrides(args):
    names = ("num_layers", "d_model", "num_heads", "d_ff", "dropout")
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def train_config(model_dir, config, **kwargs):
    """The library `TrainConfig` of a stored `wmt_config.json` dict."""
    source, target = direction_languages(config["direction"])
    return TrainConfig(
        train=f"tfds:{TFDS_NAME}:{source}-{target}",
        output=os.fspath(model_dir),
        preset=config["preset"],
        model_overrides=dict(config.get("model", {})),
        vocab_size=config["vocab_size"],
        shared_vocabulary=True,
        **kwargs,
    )


def inference_model(config, tokenizer):
    """The uncompiled, built `Transformer` of a stored config (float32)."""
    model = Transformer.from_preset(
        config["preset"],
        vocabulary_size=tokenizer.vocab_size,
        **config.get("model", {}),
    )
    model.build()
    return model


def load_trained(model_dir, checkpoint="averaged"):
    """`(model, tokenizer, weights_path)` of a model directory.

    Args:
        checkpoint: `"averaged"` (`DIR/averaged.weights.h5`, written by
            average.py), `"latest"` (the newest `DIR/checkpoints/ckpt-N`) or
            the path of a weights file.
    """
    config = require_config(model_dir)
    tokenizer, _ = load_vocabularies(join(model_dir, VOCABULARY_DIR))
    if checkpoint == "averaged":
        path = join(model_dir, AVERAGED_WEIGHTS)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(
                f"{path} not found; run examples/wmt/average.py --model-dir "
                f"{model_dir} first (or pass --checkpoint latest)."
            )
    elif checkpoint == "latest":
        directory = checkpoint_dir(model_dir)
        checkpoints = list_step_checkpoints(directory, CHECKPOINT_PATTERN)
        if not checkpoints:
            raise FileNotFoundError(f"No checkpoint in {directory}.")
        path = checkpoints[-1][1]
    else:
        path = checkpoint
    model = inference_model(config, tokenizer)
    load_weights(model, path)
    return model, tokenizer, path
