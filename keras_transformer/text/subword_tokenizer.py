"""In-graph SentencePiece tokenization with the package's special ids."""

import hashlib
import os
import re

import sentencepiece as spm
import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.python.ops import sentencepiece_tokenizer as tf_text_sentencepiece

from keras_transformer.special_tokens import BOS_ID
from keras_transformer.special_tokens import BOS_PIECE
from keras_transformer.special_tokens import EOS_ID
from keras_transformer.special_tokens import EOS_PIECE
from keras_transformer.special_tokens import PAD_ID
from keras_transformer.special_tokens import PAD_PIECE
from keras_transformer.special_tokens import UNK_ID
from keras_transformer.special_tokens import UNK_PIECE

MODEL_FILE_SUFFIX = ".model"

_SPECIAL_PIECES = (
    (PAD_ID, PAD_PIECE),
    (UNK_ID, UNK_PIECE),
    (BOS_ID, BOS_PIECE),
    (EOS_ID, EOS_PIECE),
)


def sanitize_utf8(strings):
    """Replaces invalid UTF-8 in a string tensor with U+FFFD, in the graph.

    `SubwordTokenizer.tokenize` does not need this: SentencePiece maps
    malformed bytes to `<unk>` without failing. Use it before string ops that
    do reject invalid UTF-8, or pass `sanitize=True` to `tokenize` to get
    U+FFFD semantics instead (which the default `nmt_nfkc` normalization
    then turns into a word boundary, so the bad bytes leave no `<unk>`).

    Args:
        strings: a `tf.string` tensor of any shape.

    Returns:
        A `tf.string` tensor of the same shape holding valid UTF-8.

    Example:

    >>> sanitize_utf8(tf.constant([b"ok", b"a\\xffb"])).numpy().tolist()
    [b'ok', b'a\\xef\\xbf\\xbdb']
    """
    return tf.strings.unicode_transcode(
        strings,
        input_encoding="UTF-8",
        output_encoding="UTF-8",
        errors="replace",
        replacement_char=0xFFFD,
    )


class SubwordTokenizer(tf.Module):
    """SentencePiece tokenizer that runs inside the TensorFlow graph.

    Wraps `tensorflow_text.SentencepieceTokenizer`, so `tokenize` and
    `detokenize` work eagerly, in a `tf.function`, in `tf.data.Dataset.map`
    and inside an exported SavedModel. The SavedModel is self-contained:
    tf-text passes the serialized model to its `SentencepieceOp` as a string
    attribute, so the proto is embedded in `saved_model.pb` (no asset file).
    The ops it puts in a graph (`SentencepieceOp`, `SentencepieceTokenizeOp`,
    `SentencepieceDetokenizeOp`, and `SentencepieceIdToStringOp` /
    `SentencepieceStringToIdOp` for `id_to_piece` / `piece_to_id`) are linked into the stock TF Serving
    `tensorflow_model_server`; a Python process loading the SavedModel must
    `import tensorflow_text` first to register them.

    The model must reserve the package's special ids (`<pad>`=0, `<unk>`=1,
    `<s>`=2, `</s>`=3), as models from `train_sentencepiece` do.

    Args:
        model_proto: `bytes`, a serialized SentencePiece `ModelProto` (the
            content of a `.model` file).
        name: str, the module name; also the default file name for `save`.
            Defaults to `"subword_tokenizer"`.

    Attributes:
        model_proto: the serialized model, `bytes`.
        vocab_size: number of pieces, a Python int. Size embeddings and
            logits with this.

    Example:

    >>> from keras_transformer.text import train_sentencepiece
    >>> proto = train_sentencepiece(["one two three", "four five"] * 50, 30)
    >>> tokenizer = SubwordTokenizer(proto)
    >>> ids = tokenizer.tokenize(tf.constant(["two one", ""]))
    >>> ids.shape.as_list()
    [2, None]
    >>> tokenizer.detokenize(ids).numpy().tolist()
    [b'two one', b'']
    """

    def __init__(self, model_proto, name="subword_tokenizer"):
        super().__init__(name=name)
        self.model_proto, self._vocab_size = _check_model_proto(model_proto)
        self._tokenizer = tf_text.SentencepieceTokenizer(
            model=self.model_proto, out_type=tf.int32
        )
        # tf-text's own resource is private to the eager kernel that created
        # it, and `tf.random.set_seed` (so `keras.utils.set_random_seed`)
        # clears the eager kernel cache, deleting it: every later call fails
        # with "Resource localhost/_0_SentencepieceOp/... does not exist"
        # (tensorflow/text#570, still so in 2.21.1). A resource with a
        # `shared_name` lives in the resource manager instead. The name is
        # the proto's hash, so only identical models share one.
        if not hasattr(self._tokenizer, "_model_resource"):
            raise ImportError(
                "Unsupported tensorflow-text version: SentencepieceTokenizer "
                "has no `_model_resource`. Use tensorflow-text 2.21."
            )
        self._tokenizer._model_resource = _SharedSentencepieceResource(self.model_proto)

    @property
    def vocab_size(self):
        return self._vocab_size

    def tokenize(self, strings, sanitize=False):
        """Splits strings into subword ids. No `<s>`/`</s>` is added.

        Invalid UTF-8 does not fail: malformed bytes become `<unk>` (a run of
        unknown characters gives one `<unk>`, as SentencePiece merges them).
        An empty string gives an empty row.

        Args:
            strings: `tf.string` tensor (or Python `str`/list), usually of
                shape `(batch_size,)`.
            sanitize: bool, replace invalid UTF-8 with U+FFFD first (see
                `sanitize_utf8`). Defaults to `False`.

        Returns:
            For a `(batch_size,)` input, an int32 `tf.RaggedTensor` of shape
            `(batch_size, None)`; for a scalar, an int32 tensor
            `(num_tokens,)`; in general one ragged dimension more than the
            input.
        """
        strings = tf.convert_to_tensor(strings, dtype=tf.string)
        if sanitize:
            strings = sanitize_utf8(strings)
        return self._tokenizer.tokenize(strings)

    def detokenize(self, ids):
        """Turns id sequences back into text.

        Made for decoder output: `<pad>` and `<s>` ids are dropped, and so is
        everything from the first `</s>` on, so a row `[5, 9, 3, 0, 0]`
        detokenizes like `[5, 9]`. Ids outside `[0, vocab_size)` are read as
        `<unk>` (rendered " ⁇ ") rather than failing, so a model with a
        padded output vocabulary cannot break an exported translator.

        Args:
            ids: integer tensor `(batch_size, sequence_length)`, integer
                `tf.RaggedTensor` `(batch_size, None)`, or a single sequence
                `(sequence_length,)`.

        Returns:
            `tf.string` tensor `(batch_size,)`, or a scalar for a single
            sequence.
        """
        if isinstance(ids, tf.RaggedTensor):
            if ids.shape.rank != 2:
                raise ValueError(
                    "`detokenize` expects a ragged tensor of shape "
                    f"(batch_size, None). Received: shape={ids.shape}"
                )
            ids = ids.to_tensor(default_value=PAD_ID)
        else:
            ids = tf.convert_to_tensor(ids)
            if ids.shape.rank == 1:
                return tf.squeeze(self.detokenize(ids[tf.newaxis]), axis=0)
            if ids.shape.rank != 2:
                raise ValueError(
                    "`detokenize` expects ids of shape (batch_size, "
                    f"sequence_length) or (sequence_length,). Received: "
                    f"shape={ids.shape}"
                )
        if not ids.dtype.is_integer:
            raise TypeError(
                f"`detokenize` expects integer ids. Received: dtype={ids.dtype.name}"
            )
        in_range = tf.logical_and(ids >= 0, ids < self._vocab_size)
        ids = tf.where(in_range, ids, tf.cast(UNK_ID, ids.dtype))
        ids = tf.cast(ids, tf.int32)
        eos_seen = tf.cumsum(tf.cast(tf.equal(ids, EOS_ID), tf.int32), axis=1)
        keep = tf.logical_and(tf.not_equal(ids, PAD_ID), tf.not_equal(ids, BOS_ID))
        keep = tf.logical_and(keep, tf.equal(eos_seen, 0))
        return self._tokenizer.detokenize(tf.ragged.boolean_mask(ids, keep))

    def id_to_piece(self, ids):
        """Maps ids to their pieces, e.g. `0` to `b"<pad>"`.

        Args:
            ids: integer tensor (or ragged tensor) of any shape.

        Returns:
            `tf.string` tensor of the same shape.

        Raises:
            tf.errors.InvalidArgumentError: for an id outside
                `[0, vocab_size)` (the underlying op would crash the process).
        """
        if isinstance(ids, tf.RaggedTensor):
            return ids.with_flat_values(self.id_to_piece(ids.flat_values))
        ids = tf.convert_to_tensor(ids)
        if not ids.dtype.is_integer:
            raise TypeError(
                f"`id_to_piece` expects integer ids. Received: dtype={ids.dtype.name}"
            )
        in_range = tf.reduce_all(tf.logical_and(ids >= 0, ids < self._vocab_size))
        check = tf.debugging.Assert(
            in_range,
            [f"`id_to_piece`: ids must be in [0, {self._vocab_size}). Received:", ids],
            summarize=20,
        )
        with tf.control_dependencies([check]):
            return self._tokenizer.id_to_string(tf.cast(ids, tf.int32))

    def piece_to_id(self, pieces):
        """Maps pieces to ids; unknown pieces give `UNK_ID`.

        Args:
            pieces: `tf.string` tensor of any shape.

        Returns:
            int32 tensor of the same shape.
        """
        pieces = tf.convert_to_tensor(pieces, dtype=tf.string)
        return self._tokenizer.string_to_id(pieces)

    def encode(self, sentences):
        """Tokenizes a list of Python strings eagerly.

        Args:
            sentences: list of `str` (or `bytes`).

        Returns:
            A list of lists of int ids, one per sentence.
        """
        if isinstance(sentences, str | bytes):
            raise TypeError(
                "`encode` expects a list of strings, not a single string. "
                "Wrap it in a list: `encode([sentence])`."
            )
        sentences = list(sentences)
        if not sentences:
            return []
        return self.tokenize(tf.constant(sentences, dtype=tf.string)).to_list()

    def decode(self, ids):
        """Detokenizes a list of id lists eagerly (see `detokenize`).

        Args:
            ids: list of lists of ints (rows may differ in length).

        Returns:
            A list of `str`, one per row.
        """
        ids = [list(row) for row in ids]
        if not ids:
            return []
        ids = tf.ragged.constant(ids, dtype=tf.int64, ragged_rank=1)
        texts = self.detokenize(ids).numpy().tolist()
        return [text.decode("utf-8", errors="replace") for text in texts]

    def save(self, directory, name=None):
        """Writes the raw model proto to `directory/<name>.model`.

        Args:
            directory: str, created if missing (any `tf.io.gfile` path).
            name: str, file name without suffix. Defaults to `self.name`.

        Returns:
            The path of the written file.
        """
        tf.io.gfile.makedirs(directory)
        path = os.path.join(directory, (name or self.name) + MODEL_FILE_SUFFIX)
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(self.model_proto)
        return path

    @classmethod
    def load(cls, path, name=None):
        """Builds a tokenizer from a `.model` file.

        Args:
            path: str, a SentencePiece `.model` file (any `tf.io.gfile` path).
            name: str, the module name. Defaults to the file name without
                its suffix.

        Returns:
            A `SubwordTokenizer`.

        Raises:
            ValueError: naming the file, when it is missing, a directory,
                not a SentencePiece model, or lacks the special ids.
        """
        path = os.fspath(path)
        if not tf.io.gfile.exists(path):
            raise ValueError(f"SentencePiece model file not found: {path}")
        if tf.io.gfile.isdir(path):
            raise ValueError(
                f"Expected a SentencePiece .model file, got a directory: {path}"
            )
        with tf.io.gfile.GFile(path, "rb") as f:
            model_proto = f.read()
        if name is None:
            name = _module_name(os.path.basename(path))
        try:
            return cls(model_proto, name=name)
        except ValueError as error:
            raise ValueError(
                f"Cannot load SentencePiece model {path}: {error}"
            ) from error


class _SharedSentencepieceResource(tf.saved_model.experimental.TrackableResource):
    """A `SentencepieceOp` resource that survives eager kernel-cache resets.

    Saved into a SavedModel like tf-text's own resource: the restored graph
    re-creates it from the `SentencepieceOp` node, whose `model` attribute
    holds the serialized proto.
    """

    def __init__(self, model_proto):
        self._model_proto = model_proto
        digest = hashlib.sha256(model_proto).hexdigest()
        self._shared_name = f"keras_transformer_sentencepiece_{digest}"
        super().__init__()
        _ = self.resource_handle  # Create it now, eagerly.

    def _create_resource(self):
        return tf_text_sentencepiece.gen_sentencepiece_tokenizer.sentencepiece_op(
            model=self._model_proto, shared_name=self._shared_name
        )


def _check_model_proto(model_proto):
    """Validates a serialized model; returns `(model_proto, vocab_size)`."""
    if isinstance(model_proto, bytearray | memoryview):
        model_proto = bytes(model_proto)
    if not isinstance(model_proto, bytes):
        raise TypeError(
            "`model_proto` must be the serialized SentencePiece model as bytes. "
            f"Received: {type(model_proto).__name__}. To read a file, use "
            "`SubwordTokenizer.load(path)`."
        )
    if not model_proto:
        raise ValueError("`model_proto` is empty; expected a SentencePiece model.")
    processor = spm.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(model_proto)
    except (RuntimeError, OSError) as error:
        raise ValueError(
            f"`model_proto` is not a valid SentencePiece model ({error})."
        ) from error
    size = processor.get_piece_size()
    if size <= EOS_ID:
        raise ValueError(
            f"The SentencePiece model has only {size} pieces; expected the 4 "
            "special pieces and more."
        )
    found = tuple((i, processor.id_to_piece(i)) for i, _ in _SPECIAL_PIECES)
    types_ok = processor.is_unknown(UNK_ID) and all(
        processor.is_control(i) for i in (PAD_ID, BOS_ID, EOS_ID)
    )
    if found != _SPECIAL_PIECES or not types_ok:
        raise ValueError(
            "The SentencePiece model does not use the package's special ids "
            f"{dict(_SPECIAL_PIECES)}; it has {dict(found)}. Train it with "
            "`keras_transformer.text.train_sentencepiece` (or pass pad_id=0, "
            "unk_id=1, bos_id=2, eos_id=3 to SentencePieceTrainer)."
        )
    return model_proto, int(size)


def _module_name(file_name):
    """A valid `tf.Module` name from a file name such as `source.model`."""
    stem = (
        file_name[: -len(MODEL_FILE_SUFFIX)]
        if file_name.endswith(MODEL_FILE_SUFFIX)
        else file_name
    )
    stem = re.sub(r"\W", "_", stem)
    if not stem or not (stem[0].isalpha() or stem[0] == "_"):
        stem = "tokenizer_" + stem
    return stem
