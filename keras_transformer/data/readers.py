"""Users' own parallel text: a TSV file or two line-aligned files.

Both readers check the whole file when they are created, in one streaming
pass, so bad input fails before training starts, with a one-line `DataError`
naming the file and line. The checked corpus then streams from disk with
`tf.data.TextLineDataset`.
"""

import itertools
import os

import tensorflow as tf

from keras_transformer.data.corpus import ParallelCorpus
from keras_transformer.data.errors import DataError

# The characters `tf.strings.strip` removes (ASCII whitespace); the Python
# side strips the same ones, so `list(corpus)` and `corpus.dataset()` agree.
_WHITESPACE = " \t\n\v\f\r"
_BOM = "\ufeff"


def _check_file(path):
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, expected a text file")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: the file is empty")


def _lines(path):
    """Yields `(line_number, text)`; raises `DataError` on invalid UTF-8.

    Lines are split on `\\n` only (like `tf.data.TextLineDataset`); the line
    break, a `\\r` before it and a UTF-8 byte-order mark on line 1 are
    removed.
    """
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path}:{number}: not valid UTF-8 (byte {error.start + 1} "
                    f"of the line is 0x{raw[error.start]:02x})"
                ) from None
            if number == 1:
                text = text.removeprefix(_BOM)
            yield number, text.rstrip("\n").removesuffix("\r")


def _strip(text):
    return text.strip(_WHITESPACE)


def _tf_lines(path):
    """`TextLineDataset(path)`, without the byte-order mark of line 1."""
    lines = tf.data.TextLineDataset(path)
    return lines.map(lambda line: tf.strings.regex_replace(line, "^\ufeff", ""))


def _split_tsv_line(path, number, line):
    fields = line.split("\t")
    if len(fields) != 2:
        tabs = len(fields) - 1
        raise DataError(
            f"{path}:{number}: expected 'source<TAB>target', found {tabs} "
            f"tab{'' if tabs == 1 else 's'}"
        )
    source, target = _strip(fields[0]), _strip(fields[1])
    if not source or not target:
        side = "source" if not source else "target"
        raise DataError(f"{path}:{number}: the {side} side is empty")
    return source, target


class TsvCorpus(ParallelCorpus):
    """`source<TAB>target` per line, UTF-8. Blank lines are skipped.

    The file is checked once, when the corpus is created: every non-blank
    line is valid UTF-8 and has exactly one tab between two non-empty sides.
    Whitespace around each side is removed.

    Args:
        path: the TSV file.

    Raises:
        DataError: a missing or empty file, invalid UTF-8, or a malformed
            line; the message names the file and line.

    Example:

    >>> import pathlib
    >>> _ = pathlib.Path("train.tsv").write_text("one\\teins\\ntwo\\tzwei\\n")
    >>> corpus = TsvCorpus("train.tsv")
    >>> len(corpus), next(iter(corpus))
    (2, ('one', 'eins'))
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.name = f"tsv:{self.path}"
        _check_file(self.path)
        self.num_pairs = sum(1 for _ in self._pairs())
        if self.num_pairs == 0:
            raise DataError(f"{self.path}: no sentence pairs (only blank lines)")

    def _pairs(self):
        for number, line in _lines(self.path):
            if _strip(line):
                yield _split_tsv_line(self.path, number, line)

    def __iter__(self):
        return self._pairs()

    def __len__(self):
        return self.num_pairs

    def dataset(self):
        lines = _tf_lines(self.path).filter(
            lambda line: tf.strings.length(tf.strings.strip(line)) > 0
        )
        fields = lines.map(lambda line: tf.strings.split(line, "\t", maxsplit=1))
        return fields.map(lambda f: (tf.strings.strip(f[0]), tf.strings.strip(f[1])))


class ParallelFilesCorpus(ParallelCorpus):
    """Two line-aligned files: line `i` of one translates line `i` of the other.

    Both files are checked when the corpus is created: valid UTF-8, the same
    number of lines (blank lines at the very end of a file are ignored), and
    no line blank on one side only. Lines blank on both sides are skipped.

    Args:
        source_path: the source-language file.
        target_path: the target-language file.

    Raises:
        DataError: a missing or empty file, invalid UTF-8, different line
            counts, or a line blank on one side only; the message names the
            file and line.

    Example:

    >>> import pathlib
    >>> _ = pathlib.Path("train.en").write_text("one\\ntwo\\n")
    >>> _ = pathlib.Path("train.de").write_text("eins\\nzwei\\n")
    >>> corpus = ParallelFilesCorpus("train.en", "train.de")
    >>> next(iter(corpus))
    ('one', 'eins')
    """

    def __init__(self, source_path, target_path):
        self.source_path = os.fspath(source_path)
        self.target_path = os.fspath(target_path)
        self.name = f"files:{self.source_path},{self.target_path}"
        _check_file(self.source_path)
        _check_file(self.target_path)
        self.num_pairs = sum(1 for _ in self._pairs())
        if self.num_pairs == 0:
            raise DataError(f"{self.source_path}: no sentence pairs (only blank lines)")

    def _pairs(self):
        paths = (self.source_path, self.target_path)
        sources, targets = _lines(self.source_path), _lines(self.target_path)
        for number in itertools.count(1):
            source, target = next(sources, None), next(targets, None)
            if source is None and target is None:
                return
            if target is None:
                _check_rest_is_blank(*paths, number, source[1], sources)
                return
            if source is None:
                _check_rest_is_blank(*paths[::-1], number, target[1], targets)
                return
            source_text, target_text = _strip(source[1]), _strip(target[1])
            if not source_text and not target_text:
                continue
            if not source_text or not target_text:
                blank, other = paths if not source_text else paths[::-1]
                raise DataError(
                    f"{blank}:{number}: blank line, but line {number} of "
                    f"{other} is not (the files must be line-aligned)"
                )
            yield source_text, target_text

    def __iter__(self):
        return self._pairs()

    def __len__(self):
        return self.num_pairs

    def dataset(self):
        pairs = tf.data.Dataset.zip(
            (_tf_lines(self.source_path), _tf_lines(self.target_path))
        )
        pairs = pairs.map(lambda s, t: (tf.strings.strip(s), tf.strings.strip(t)))
        return pairs.filter(lambda s, t: tf.strings.length(s) > 0)


def _check_rest_is_blank(longer, shorter, number, text, rest):
    """Raises unless line `number` and the rest of `longer` are blank."""
    first_extra = None if not _strip(text) else number
    total = number
    for total, line in rest:
        if first_extra is None and _strip(line):
            first_extra = total
    if first_extra is not None:
        raise DataError(
            f"{longer}:{first_extra}: {total} lines, but {shorter} has "
            f"{number - 1} (the files must be line-aligned)"
        )


def read_tsv(path):
    """Reads a `source<TAB>target` file into a checked, streaming corpus.

    Args:
        path: the UTF-8 TSV file; blank lines are skipped.

    Returns:
        A `TsvCorpus`: iterate for `(source, target)` `str` pairs, call
        `.dataset()` for a streaming `tf.data.Dataset` of them.

    Raises:
        DataError: a missing or empty file, invalid UTF-8, a line without
            exactly one tab, or an empty side, e.g.
            `train.tsv:17: expected 'source<TAB>target', found 0 tabs`.

    Example:

    >>> import pathlib
    >>> _ = pathlib.Path("train.tsv").write_text("one\\teins\\ntwo\\tzwei\\n")
    >>> corpus = read_tsv("train.tsv")
    >>> len(corpus), corpus.name
    (2, 'tsv:train.tsv')
    """
    return TsvCorpus(path)


def read_parallel_files(source_path, target_path):
    """Reads two line-aligned files into a checked, streaming corpus.

    Args:
        source_path: the UTF-8 source-language file, one sentence a line.
        target_path: the UTF-8 target-language file, line-aligned with it.

    Returns:
        A `ParallelFilesCorpus`.

    Raises:
        DataError: a missing or empty file, invalid UTF-8, different line
            counts (`train.de:4500001: 4500001 lines, but train.en has
            4500000 ...`), or a line blank on one side only.

    Example:

    >>> import pathlib
    >>> _ = pathlib.Path("train.en").write_text("one\\ntwo\\n")
    >>> _ = pathlib.Path("train.de").write_text("eins\\nzwei\\n")
    >>> corpus = read_parallel_files("train.en", "train.de")
    >>> len(corpus), list(corpus)
    (2, [('one', 'eins'), ('two', 'zwei')])
    """
    return ParallelFilesCorpus(source_path, target_path)
