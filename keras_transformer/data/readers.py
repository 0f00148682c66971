"""Users' own parallel text: a TSV file or two line-aligned files."""

import os

import tensorflow as tf

from keras_transformer.data.corpus import ParallelCorpus
from keras_transformer.data.errors import DataError


def _check_file(path):
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, expected a text file")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: the file is empty")


def _lines(path):
    """Yields `(line_number, text)`; raises `DataError` on invalid UTF-8."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path}:{number}: not valid UTF-8 (byte {error.start})"
                ) from None
            yield number, text.rstrip("\r\n")


def _split_tsv_line(path, number, line):
    fields = line.split("\t")
    if len(fields) != 2:
        raise DataError(
            f"{path}:{number}: expected 'source<TAB>target', found "
            f"{len(fields) - 1} tab(s)"
        )
    source, target = fields[0].strip(), fields[1].strip()
    if not source or not target:
        side = "source" if not source else "target"
        raise DataError(f"{path}:{number}: the {side} side is empty")
    return source, target


class TsvCorpus(ParallelCorpus):
    """`source<TAB>target` per line, UTF-8. Blank lines are skipped.

    The file is checked once, when the corpus is created (every line has
    exactly one tab and two non-empty sides, and is valid UTF-8), so a bad
    file fails before training starts, with its file name and line number.

    Args:
        path: the TSV file.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.name = f"tsv:{self.path}"
        _check_file(self.path)
        self.num_pairs = sum(1 for _ in self._pairs())
        if self.num_pairs == 0:
            raise DataError(f"{self.path}: no sentence pairs in the file")

    def _pairs(self):
        for number, line in _lines(self.path):
            if line.strip():
                yield _split_tsv_line(self.path, number, line)

    def __iter__(self):
        return self._pairs()

    def __len__(self):
        return self.num_pairs

    def dataset(self):
        lines = tf.data.TextLineDataset(self.path)
        lines = lines.filter(lambda line: tf.strings.length(tf.strings.strip(line)) > 0)
        fields = lines.map(lambda line: tf.strings.split(line, "\t", maxsplit=1))
        return fields.map(lambda f: (tf.strings.strip(f[0]), tf.strings.strip(f[1])))


class ParallelFilesCorpus(ParallelCorpus):
    """Two line-aligned files: line `i` of one translates line `i` of the other.

    Args:
        source_path: the source-language file.
        target_path: the target-language file.
    """

    def __init__(self, source_path, target_path):
        self.source_path = os.fspath(source_path)
        self.target_path = os.fspath(target_path)
        self.name = f"files:{self.source_path},{self.target_path}"
        _check_file(self.source_path)
        _check_file(self.target_path)
        self.num_pairs = sum(1 for _ in self._pairs())

    def _pairs(self):
        sources = _lines(self.source_path)
        targets = _lines(self.target_path)
        while True:
            source = next(sources, None)
            target = next(targets, None)
            if source is None and target is None:
                return
            if source is None or target is None:
                shorter, number = (
                    (self.source_path, target[0])
                    if source is None
                    else (self.target_path, source[0])
                )
                raise DataError(
                    f"{shorter}: ends before line {number}; the files are not "
                    "line-aligned"
                )
            (number, source_text), (_, target_text) = source, target
            if not source_text.strip() and not target_text.strip():
                continue
            for path, text in (
                (self.source_path, source_text),
                (self.target_path, target_text),
            ):
                if not text.strip():
                    raise DataError(f"{path}:{number}: empty line")
            yield source_text.strip(), target_text.strip()

    def __iter__(self):
        return self._pairs()

    def __len__(self):
        return self.num_pairs

    def dataset(self):
        sources = tf.data.TextLineDataset(self.source_path)
        targets = tf.data.TextLineDataset(self.target_path)
        pairs = tf.data.Dataset.zip((sources, targets))
        pairs = pairs.filter(lambda s, t: tf.strings.length(tf.strings.strip(s)) > 0)
        return pairs.map(lambda s, t: (tf.strings.strip(s), tf.strings.strip(t)))


def read_tsv(path):
    """A checked `TsvCorpus`; raises `DataError` on bad input."""
    return TsvCorpus(path)


def read_parallel_files(source_path, target_path):
    """A checked `ParallelFilesCorpus`; raises `DataError` on bad input."""
    return ParallelFilesCorpus(source_path, target_path)
