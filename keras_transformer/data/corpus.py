"""Parallel corpora: re-iterable (source, target) string pairs."""

import tensorflow as tf


class ParallelCorpus:
    """A re-iterable collection of `(source, target)` sentence pairs.

    Subclasses implement `__iter__` (Python `str` pairs, e.g. to train a
    vocabulary) and `dataset()` (a `tf.data.Dataset` of `tf.string` pairs
    that streams, for training).
    """

    name = "corpus"

    def __iter__(self):
        raise NotImplementedError

    def dataset(self):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.name})"


class InMemoryCorpus(ParallelCorpus):
    """Pairs held in a Python list.

    Args:
        pairs: list of `(source, target)` strings.
        name: str, shown in messages.
    """

    def __init__(self, pairs, name="in-memory"):
        self.pairs = [(_text(s), _text(t)) for s, t in pairs]
        self.name = name

    def __iter__(self):
        return iter(self.pairs)

    def __len__(self):
        return len(self.pairs)

    def dataset(self):
        if not self.pairs:
            return tf.data.Dataset.from_tensor_slices(
                (tf.constant([], tf.string), tf.constant([], tf.string))
            )
        sources, targets = zip(*self.pairs)
        return tf.data.Dataset.from_tensor_slices((list(sources), list(targets)))


def as_corpus(pairs):
    """A `ParallelCorpus` from a corpus, a list of pairs or a `tf.data.Dataset`."""
    if isinstance(pairs, ParallelCorpus):
        return pairs
    if isinstance(pairs, tf.data.Dataset):
        return DatasetCorpus(pairs)
    return InMemoryCorpus(list(pairs))


class DatasetCorpus(ParallelCorpus):
    """Wraps a `tf.data.Dataset` of `(source, target)` `tf.string` pairs."""

    def __init__(self, dataset, name="tf.data"):
        self._dataset = dataset
        self.name = name

    def __iter__(self):
        for source, target in self._dataset.as_numpy_iterator():
            yield _text(source), _text(target)

    def dataset(self):
        return self._dataset


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
