"""Source and target vocabularies: shared or separate, saved with a manifest."""

import itertools
import json
import os

import tensorflow as tf

from keras_transformer import special_tokens
from keras_transformer.text.sentencepiece_trainer import train_sentencepiece
from keras_transformer.text.subword_tokenizer import SubwordTokenizer

MANIFEST_FILE = "vocabularies.json"
MANIFEST_FORMAT_VERSION = 1

_SPECIAL_IDS = {
    special_tokens.PAD_PIECE: special_tokens.PAD_ID,
    special_tokens.UNK_PIECE: special_tokens.UNK_ID,
    special_tokens.BOS_PIECE: special_tokens.BOS_ID,
    special_tokens.EOS_PIECE: special_tokens.EOS_ID,
}


def build_vocabularies(
    source_sentences,
    target_sentences,
    vocab_size,
    shared=True,
    model_type="bpe",
    **kwargs,
):
    """Trains the source and target subword vocabularies.

    With `shared=True` (the paper's setup for English-German, and what weight
    tying between encoder and decoder embeddings needs) one model is trained
    on both sides, taking sentences from the two iterables alternately so
    that `max_sentences` and sampling see both languages. Otherwise one
    model is trained per side.

    Args:
        source_sentences: iterable of source-language strings.
        target_sentences: iterable of target-language strings.
        vocab_size: int, the maximum size of each vocabulary (see
            `train_sentencepiece` for why the real size may be smaller).
        shared: bool, train one vocabulary for both sides. Defaults to
            `True`.
        model_type: `"bpe"` (default) or `"unigram"`.
        **kwargs: further `train_sentencepiece` arguments
            (`character_coverage`, `max_sentences`, `seed`, ...).

    Returns:
        `(source_tokenizer, target_tokenizer)`, two `SubwordTokenizer`s; the
        same object twice when `shared=True`.

    Example:

    >>> src, tgt = build_vocabularies(
    ...     ["one two", "three four"] * 50, ["uno dos", "tres cuatro"] * 50, 40
    ... )
    >>> src is tgt
    True
    """
    if shared:
        sentences = _interleave(source_sentences, target_sentences)
        proto = train_sentencepiece(
            sentences, vocab_size, model_type=model_type, **kwargs
        )
        tokenizer = SubwordTokenizer(proto, name="shared")
        return tokenizer, tokenizer
    source = SubwordTokenizer(
        train_sentencepiece(
            source_sentences, vocab_size, model_type=model_type, **kwargs
        ),
        name="source",
    )
    target = SubwordTokenizer(
        train_sentencepiece(
            target_sentences, vocab_size, model_type=model_type, **kwargs
        ),
        name="target",
    )
    return source, target


def save_vocabularies(directory, source_tokenizer, target_tokenizer):
    """Writes the vocabularies and a JSON manifest to `directory`.

    A shared vocabulary (the same object twice) is written once, as
    `shared.model`; separate ones as `source.model` and `target.model`.
    `vocabularies.json` records which files hold which side, the vocabulary
    sizes and the special ids.

    Args:
        directory: str, created if missing (any `tf.io.gfile` path).
        source_tokenizer: a `SubwordTokenizer`.
        target_tokenizer: a `SubwordTokenizer`.

    Returns:
        The path of the manifest.
    """
    for name, tokenizer in (("source", source_tokenizer), ("target", target_tokenizer)):
        if not isinstance(tokenizer, SubwordTokenizer):
            raise TypeError(
                f"`{name}_tokenizer` must be a SubwordTokenizer. "
                f"Received: {type(tokenizer).__name__}"
            )
    shared = source_tokenizer is target_tokenizer
    if shared:
        path = source_tokenizer.save(directory, name="shared")
        source_file = target_file = os.path.basename(path)
    else:
        source_file = os.path.basename(source_tokenizer.save(directory, name="source"))
        target_file = os.path.basename(target_tokenizer.save(directory, name="target"))
    manifest = {
        "format_version": MANIFEST_FORMAT_VERSION,
        "shared": shared,
        "source": {"file": source_file, "vocab_size": source_tokenizer.vocab_size},
        "target": {"file": target_file, "vocab_size": target_tokenizer.vocab_size},
        "special_ids": _SPECIAL_IDS,
    }
    manifest_path = os.path.join(directory, MANIFEST_FILE)
    with tf.io.gfile.GFile(manifest_path, "w") as f:
        f.write(json.dumps(manifest, indent=2) + "\n")
    return manifest_path


def load_vocabularies(directory):
    """Reads vocabularies written by `save_vocabularies`.

    Args:
        directory: str, the directory holding `vocabularies.json`.

    Returns:
        `(source_tokenizer, target_tokenizer)`; the same object twice when
        the vocabulary is shared.

    Raises:
        ValueError: naming the file, when the manifest or a model file is
            missing or corrupted, or the manifest does not match the models.
    """
    manifest_path = os.path.join(directory, MANIFEST_FILE)
    shared, files, sizes = _read_manifest(manifest_path)
    source = _load_side(directory, manifest_path, files, sizes, "source")
    if shared:
        if files["target"] != files["source"]:
            raise ValueError(
                f"Corrupted vocabulary manifest {manifest_path}: shared "
                f"vocabulary with different files {files}."
            )
        return source, source
    return source, _load_side(directory, manifest_path, files, sizes, "target")


def _read_manifest(manifest_path):
    """`(shared, files, sizes)` of a checked `vocabularies.json`.

    `files` and `sizes` map `"source"` and `"target"` to the model's file
    name and vocabulary size.
    """
    if not tf.io.gfile.exists(manifest_path):
        raise ValueError(f"Vocabulary manifest not found: {manifest_path}")
    with tf.io.gfile.GFile(manifest_path, "r") as f:
        text = f.read()
    try:
        manifest = json.loads(text)
        version = manifest["format_version"]
        shared = bool(manifest["shared"])
        sides = {side: manifest[side] for side in ("source", "target")}
        files = {side: sides[side]["file"] for side in sides}
        sizes = {side: sides[side]["vocab_size"] for side in sides}
        special_ids = manifest["special_ids"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"Corrupted vocabulary manifest {manifest_path}: {error!r}"
        ) from error
    _check_manifest(manifest_path, version, special_ids, files)
    return shared, files, sizes


def _check_manifest(manifest_path, version, special_ids, files):
    """Raises `ValueError` for a manifest this package cannot read."""
    if version != MANIFEST_FORMAT_VERSION:
        raise ValueError(
            f"Unsupported vocabulary manifest version {version!r} in "
            f"{manifest_path}; this version reads {MANIFEST_FORMAT_VERSION}."
        )
    if special_ids != _SPECIAL_IDS:
        raise ValueError(
            f"{manifest_path} records special ids {special_ids}, but this "
            f"package uses {_SPECIAL_IDS}."
        )
    for side, file_name in files.items():
        if not isinstance(file_name, str) or os.path.basename(file_name) != file_name:
            raise ValueError(
                f"Corrupted vocabulary manifest {manifest_path}: {side} file "
                f"must be a plain file name. Received: {file_name!r}"
            )


def _load_side(directory, manifest_path, files, sizes, side):
    """The tokenizer of one side, checked against the manifest's size."""
    tokenizer = SubwordTokenizer.load(os.path.join(directory, files[side]))
    if tokenizer.vocab_size != sizes[side]:
        raise ValueError(
            f"{manifest_path} records {side} vocab_size={sizes[side]}, but "
            f"{files[side]} has {tokenizer.vocab_size} pieces."
        )
    return tokenizer


def _interleave(*iterables):
    """Round-robin over iterables until all are exhausted."""
    sentinel = object()
    for items in itertools.zip_longest(*iterables, fillvalue=sentinel):
        for item in items:
            if item is not sentinel:
                yield item
