"""Training SentencePiece subword models in memory."""

import io
import itertools
import random
import re

import sentencepiece as spm

from keras_transformer.special_tokens import BOS_ID
from keras_transformer.special_tokens import BOS_PIECE
from keras_transformer.special_tokens import EOS_ID
from keras_transformer.special_tokens import EOS_PIECE
from keras_transformer.special_tokens import PAD_ID
from keras_transformer.special_tokens import PAD_PIECE
from keras_transformer.special_tokens import UNK_ID
from keras_transformer.special_tokens import UNK_PIECE

MODEL_TYPES = ("bpe", "unigram")

# Options `train_sentencepiece` sets itself; `trainer_kwargs` may not override
# them (the special ids in particular are fixed for the whole package).
_RESERVED_OPTIONS = frozenset(
    {
        "input",
        "sentence_iterator",
        "model_writer",
        "model_prefix",
        "vocab_size",
        "model_type",
        "character_coverage",
        "input_sentence_size",
        "shuffle_input_sentence",
        "hard_vocab_limit",
        "num_threads",
        "pad_id",
        "unk_id",
        "bos_id",
        "eos_id",
        "pad_piece",
        "unk_piece",
        "bos_piece",
        "eos_piece",
    }
)

_TOO_HIGH = re.compile(
    r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)"
)
_TOO_SMALL = re.compile(
    r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)"
)


def train_sentencepiece(
    sentences,
    vocab_size,
    model_type="bpe",
    character_coverage=1.0,
    max_sentences=None,
    seed=1234,
    input_sentence_size=1_000_000,
    hard_vocab_limit=False,
    num_threads=16,
    **trainer_kwargs,
):
    """Trains a SentencePiece model in memory and returns its serialized proto.

    The model reserves the package's special ids (see
    `keras_transformer.special_tokens`): `<pad>`=0, `<unk>`=1, `<s>`=2,
    `</s>`=3. Nothing is written to disk; pass the result to
    `SubwordTokenizer(model_proto)`.

    Vocabulary size. By default (`hard_vocab_limit=False`) `vocab_size` is an
    upper bound: a small corpus (a few hundred sentences) may not contain
    enough distinct pieces, and SentencePiece then returns a smaller
    vocabulary instead of failing. Always size the model's embedding from
    `SubwordTokenizer(proto).vocab_size`, not from the requested number. With
    `hard_vocab_limit=True` a corpus that cannot fill `vocab_size` raises a
    `ValueError` that states the largest size that would work.

    Determinism. The same sentences, `seed`, `input_sentence_size` and
    `num_threads` give a byte-identical proto. SentencePiece's own sentence
    sampling is not reproducible across processes, so sampling is done here,
    in Python, with a seeded reservoir sampler, and SentencePiece always
    trains on every sentence it receives. Changing `num_threads` can change
    the learned vocabulary, which is why it has a fixed default (16,
    SentencePiece's own default) rather than the machine's core count.

    Args:
        sentences: iterable of `str` (or UTF-8 `bytes`, decoded with
            replacement of invalid bytes). Leading and trailing whitespace is
            stripped and empty lines are skipped. Consumed once, so a
            generator works. SentencePiece ignores sentences longer than
            `max_sentence_length` bytes (4192 unless set in
            `trainer_kwargs`).
        vocab_size: int, the (maximum) number of pieces, special ones
            included.
        model_type: `"bpe"` (default) or `"unigram"`.
        character_coverage: float in `(0, 1]`, the fraction of characters the
            vocabulary must cover; rarer characters become `<unk>`.
            Defaults to `1.0` (right for alphabetic languages; use e.g.
            `0.9995` for Chinese or Japanese).
        max_sentences: optional int, read at most this many non-empty
            sentences from `sentences` (the first ones). `None` reads all.
        seed: int, seed of the reservoir sampler.
        input_sentence_size: optional int. When more sentences than this are
            read, train on a seeded uniform sample of this many. `None`
            trains on all of them. Defaults to 1,000,000 (SentencePiece's
            recommendation).
        hard_vocab_limit: bool, fail instead of returning a smaller
            vocabulary when the corpus cannot fill `vocab_size`. Defaults to
            `False`.
        num_threads: int, SentencePiece trainer threads. Defaults to `16`.
        **trainer_kwargs: further `SentencePieceTrainer.train` options (for
            example `byte_fallback=True`, `max_sentence_length=8192`,
            `user_defined_symbols=[...]`). Options set by this function
            (ids, pieces, sizes, sampling) are rejected.

    Returns:
        `bytes`, the serialized SentencePiece `ModelProto`.

    Raises:
        ValueError: for an invalid argument, a corpus with no non-empty
            sentence, a `vocab_size` smaller than the characters to cover, a
            `vocab_size` the corpus cannot fill (only with
            `hard_vocab_limit=True`), or any other SentencePiece training
            error.
        TypeError: when a sentence is neither `str` nor `bytes`.

    Example:

    >>> from keras_transformer.text import SubwordTokenizer
    >>> sentences = ["one two three", "four five six", "seven eight nine"] * 50
    >>> proto = train_sentencepiece(sentences, vocab_size=40)
    >>> tokenizer = SubwordTokenizer(proto)
    >>> tokenizer.decode(tokenizer.encode(["nine two"]))
    ['nine two']
    """
    _check_model_options(vocab_size, model_type, character_coverage)
    _check_reading_options(
        max_sentences, input_sentence_size, num_threads, trainer_kwargs
    )
    corpus = _training_sentences(sentences, max_sentences, input_sentence_size, seed)
    options = {
        "vocab_size": vocab_size,
        "model_type": model_type,
        "character_coverage": float(character_coverage),
        "hard_vocab_limit": hard_vocab_limit,
        "num_threads": num_threads,
    }
    try:
        return _train_proto(corpus, options, trainer_kwargs)
    except RuntimeError as error:
        raise _training_error(error, vocab_size, character_coverage) from error


def _check_model_options(vocab_size, model_type, character_coverage):
    """Raises `ValueError` for an invalid size, type or coverage of the model."""
    _check_int("vocab_size", vocab_size)
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"`model_type` must be one of {MODEL_TYPES}. "
            f"Received: model_type={model_type!r}"
        )
    if (
        not isinstance(character_coverage, int | float)
        or isinstance(character_coverage, bool)
        or not 0.0 < character_coverage <= 1.0
    ):
        raise ValueError(
            "`character_coverage` must be a float in (0, 1]. "
            f"Received: character_coverage={character_coverage!r}"
        )


def _check_reading_options(
    max_sentences, input_sentence_size, num_threads, trainer_kwargs
):
    """Raises `ValueError` for invalid sampling, thread or trainer options."""
    if max_sentences is not None:
        _check_int("max_sentences", max_sentences)
    if input_sentence_size is not None:
        _check_int("input_sentence_size", input_sentence_size)
    _check_int("num_threads", num_threads)
    reserved = sorted(_RESERVED_OPTIONS.intersection(trainer_kwargs))
    if reserved:
        raise ValueError(
            "These SentencePiece options are set by `train_sentencepiece` and "
            f"cannot be passed in `trainer_kwargs`: {reserved}"
        )


def _training_sentences(sentences, max_sentences, input_sentence_size, seed):
    """The list of sentences to train on: cleaned, cut and sampled.

    Raises:
        ValueError: when no non-empty sentence is left.
    """
    corpus = _clean_sentences(sentences)
    if max_sentences is not None:
        corpus = itertools.islice(corpus, max_sentences)
    if input_sentence_size is None:
        corpus = list(corpus)
    else:
        corpus = _reservoir_sample(corpus, input_sentence_size, seed)
    if not corpus:
        raise ValueError(
            "Cannot train a SentencePiece model: `sentences` contains no "
            "non-empty sentence."
        )
    return corpus


def _train_proto(corpus, options, trainer_kwargs):
    """Runs the SentencePiece trainer on `corpus`; returns the proto bytes.

    `options` are the trainer options of `train_sentencepiece`'s arguments;
    the special pieces and ids are the package's, and SentencePiece samples
    nothing (`corpus` is the sample).
    """
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=writer,
        input_sentence_size=0,  # Sampling is done by `_training_sentences`.
        shuffle_input_sentence=False,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        pad_piece=PAD_PIECE,
        unk_piece=UNK_PIECE,
        bos_piece=BOS_PIECE,
        eos_piece=EOS_PIECE,
        **options,
        **{"minloglevel": 2, **trainer_kwargs},
    )
    return writer.getvalue()


def _check_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )


def _clean_sentences(sentences):
    """Yields stripped, non-empty `str` sentences."""
    if isinstance(sentences, str | bytes):
        raise TypeError(
            "`sentences` must be an iterable of strings, not a single string. "
            "Wrap it in a list: `[sentence]`."
        )
    for index, sentence in enumerate(sentences):
        if isinstance(sentence, bytes):
            sentence = sentence.decode("utf-8", errors="replace")
        elif not isinstance(sentence, str):
            raise TypeError(
                "`sentences` must contain `str` or `bytes`. "
                f"Received: {type(sentence).__name__} at position {index}"
            )
        sentence = sentence.strip()
        if sentence:
            yield sentence


def _reservoir_sample(sentences, size, seed):
    """Uniform sample of `size` sentences (all of them, in order, if fewer)."""
    rng = random.Random(seed)
    sample = []
    for count, sentence in enumerate(sentences):
        if count < size:
            sample.append(sentence)
        else:
            slot = rng.randrange(count + 1)
            if slot < size:
                sample[slot] = sentence
    return sample


def _training_error(error, vocab_size, character_coverage):
    message = str(error)
    match = _TOO_HIGH.search(message)
    if match:
        return ValueError(
            f"vocab_size={vocab_size} is too large for this corpus: "
            f"SentencePiece can build at most {match.group(2)} pieces from it. "
            f"Pass vocab_size<={match.group(2)}, more sentences, or "
            "hard_vocab_limit=False (then vocab_size is an upper bound)."
        )
    match = _TOO_SMALL.search(message)
    if match:
        return ValueError(
            f"vocab_size={vocab_size} is too small: the 4 special pieces plus "
            f"the characters covered at character_coverage={character_coverage} "
            f"need at least {match.group(2)} pieces. Increase vocab_size or "
            "lower character_coverage."
        )
    return ValueError(f"SentencePiece training failed: {message}")
