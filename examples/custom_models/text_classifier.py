"""A sentiment classifier from the Transformer encoder, trained on IMDB reviews.

    token ids -> Encoder (embeddings, positions, N self-attention blocks)
              -> masked mean pooling over the real (non-pad) tokens
              -> Dropout -> Dense(2) logits

The reviews are tokenized with a SentencePiece vocabulary
(`keras_transformer.text`) trained on a sample of the training reviews, inside
the `tf.data` pipeline. The model is a functional Keras model; its one custom
layer, `MaskedMeanPooling`, is a registered serializable, so the saved
`.keras` file loads with `keras.saving.load_model` (safe mode) once this
module is imported.

Run (downloads `imdb_reviews` through TensorFlow Datasets):

    python examples/custom_models/text_classifier.py --output-dir runs/imdb

A CPU-sized run: `--epochs 1 --steps-per-epoch 200 --max-length 128`.
"""

import argparse
import json
import os
import re
import sys

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_transformer.layers import Encoder
from keras_transformer.special_tokens import PAD_ID
from keras_transformer.text import SubwordTokenizer
from keras_transformer.text import train_sentencepiece

PACKAGE = "keras_transformer_examples"
MODEL_FILE = "classifier.keras"
TOKENIZER_NAME = "imdb"
_HTML_BREAK = r"<br\s*/?>"


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedMeanPooling(keras.layers.Layer):
    """Mean over the time axis of the positions whose mask is `True`.

    Reads the Keras mask that the `Encoder` attaches to its outputs (token
    id != `pad_id`), so padding never changes the result. A row with no
    real token pools to zeros.

    Call arguments:
        inputs: `(batch_size, length, features)`.
        mask: optional bool `(batch_size, length)`; all `True` if absent.

    Returns:
        `(batch_size, features)`.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.mean(inputs, axis=1)
        weights = ops.cast(mask, inputs.dtype)[:, :, None]  # (B, T, 1)
        total = ops.sum(inputs * weights, axis=1)  # (B, F)
        count = ops.maximum(ops.sum(weights, axis=1), ops.cast(1, inputs.dtype))
        return total / count

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, inputs_shape):
        return (inputs_shape[0], inputs_shape[-1])


def build_classifier(
    vocabulary_size,
    num_classes=2,
    num_layers=2,
    d_model=128,
    num_heads=4,
    d_ff=256,
    dropout=0.1,
    pad_id=PAD_ID,
):
    """The functional classifier: int ids `(batch, length)` -> logits.

    Args:
        vocabulary_size: int, the tokenizer's `vocab_size`.
        num_classes: int.
        num_layers, d_model, num_heads, d_ff, dropout: the encoder's sizes.
        pad_id: int, padding id of the inputs (masked out everywhere).

    Returns:
        An uncompiled `keras.Model`.
    """
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    hidden = Encoder(
        num_layers=num_layers,
        num_heads=num_heads,
        d_ff=d_ff,
        d_model=d_model,
        vocabulary_size=vocabulary_size,
        dropout=dropout,
        pad_id=pad_id,
        name="encoder",
    )(token_ids)  # (B, T, d_model), carries the mask ids != pad_id
    pooled = MaskedMeanPooling(name="masked_mean_pooling")(hidden)  # (B, d_model)
    pooled = keras.layers.Dropout(dropout, name="dropout")(pooled)
    logits = keras.layers.Dense(num_classes, name="logits")(pooled)
    return keras.Model(token_ids, logits, name="transformer_text_classifier")


def clean_text(texts):
    """Replaces IMDB's `<br />` tags with spaces (a `tf.string` op)."""
    return tf.strings.regex_replace(texts, _HTML_BREAK, " ")


def train_tokenizer(texts, vocab_size, max_sentences=None):
    """A SentencePiece vocabulary trained on `texts` (an iterable of str)."""
    sentences = (re.sub(_HTML_BREAK, " ", _as_text(text)) for text in texts)
    proto = train_sentencepiece(sentences, vocab_size, max_sentences=max_sentences)
    return SubwordTokenizer(proto, name=TOKENIZER_NAME)


def _as_text(text):
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


def encode(tokenizer, texts, max_length):
    """`tf.string` `(batch,)` -> int32 `(batch, max_length)`, padded with 0."""
    ids = tokenizer.tokenize(clean_text(texts))[:, :max_length]
    return ids.to_tensor(default_value=PAD_ID, shape=[None, max_length])


def make_dataset(raw, tokenizer, max_length, batch_size, shuffle=False, repeat=False):
    """`(text, label)` pairs -> batches of `(ids, label)` of static shape."""
    if shuffle:
        raw = raw.shuffle(10_000, seed=0, reshuffle_each_iteration=True)
    if repeat:
        raw = raw.repeat()
    dataset = raw.batch(batch_size, drop_remainder=repeat)
    dataset = dataset.map(
        lambda text, label: (encode(tokenizer, text, max_length), label),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def load_imdb(data_dir=None, download=True):
    """The `imdb_reviews` train and test splits as `(text, label)` datasets."""
    import tensorflow_datasets as tfds

    train, test = tfds.load(
        "imdb_reviews",
        split=["train", "test"],
        as_supervised=True,
        data_dir=data_dir,
        download=download,
    )
    return train, test


def classify(model, tokenizer, texts, max_length=256):
    """Class probabilities `(len(texts), num_classes)` for Python strings."""
    ids = encode(tokenizer, tf.constant(list(texts), dtype=tf.string), max_length)
    return np.asarray(ops.softmax(model(ids, training=False), axis=-1))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="TFDS data directory.")
    parser.add_argument(
        "--no-download", action="store_true", help="Use only prepared TFDS data."
    )
    parser.add_argument("--output-dir", default="runs/text_classifier")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        default=None,
        help="Training batches per epoch (default: one pass over the data).",
    )
    parser.add_argument(
        "--eval-steps",
        type=int,
        default=None,
        help="Test batches to evaluate (default: the whole test split).",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument(
        "--vocab-sample",
        type=int,
        default=5000,
        help="Training reviews the SentencePiece vocabulary is trained on.",
    )
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--d-ff", type=int, default=256)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-jit-compile", action="store_true", help="Train without XLA."
    )
    parser.add_argument("--verbose", type=int, default=2)
    return parser.parse_args(argv)


def main(argv=None):
    """Trains, evaluates and saves the classifier.

    Returns:
        dict with `"model"`, `"tokenizer"`, `"history"` (the `fit` history
        dict), `"test"` (evaluation metrics), `"model_path"` and
        `"tokenizer_path"`.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    keras.utils.set_random_seed(args.seed)
    train_raw, test_raw = load_imdb(args.data_dir, download=not args.no_download)

    sample = (text for text, _ in train_raw.take(args.vocab_sample).as_numpy_iterator())
    tokenizer = train_tokenizer(sample, args.vocab_size)
    print(f"SentencePiece vocabulary: {tokenizer.vocab_size} pieces")

    repeat = args.steps_per_epoch is not None
    train = make_dataset(
        train_raw, tokenizer, args.max_length, args.batch_size, True, repeat
    )
    test = make_dataset(test_raw, tokenizer, args.max_length, args.batch_size)

    model = build_classifier(
        tokenizer.vocab_size,
        num_layers=args.num_layers,
        d_model=args.d_model,
        num_heads=args.num_heads,
        d_ff=args.d_ff,
        dropout=args.dropout,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=not args.no_jit_compile,
    )
    history = model.fit(
        train,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        shuffle=False,  # the dataset shuffles itself
        verbose=args.verbose,
    )
    test_metrics = model.evaluate(
        test, steps=args.eval_steps, return_dict=True, verbose=args.verbose
    )
    print("test:", json.dumps({k: round(float(v), 4) for k, v in test_metrics.items()}))

    os.makedirs(args.output_dir, exist_ok=True)
    model_path = os.path.join(args.output_dir, MODEL_FILE)
    model.save(model_path)
    tokenizer_path = tokenizer.save(args.output_dir)
    print(f"saved {model_path} and {tokenizer_path}")
    return {
        "model": model,
        "tokenizer": tokenizer,
        "history": history.history,
        "test": test_metrics,
        "model_path": model_path,
        "tokenizer_path": tokenizer_path,
    }


if __name__ == "__main__":
    main()
