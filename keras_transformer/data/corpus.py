"""Parallel corpora: re-iterable (source, target) string pairs."""

import tensorflow as tf

from keras_transformer.data.errors import DataError


class ParallelCorpus:
    """A re-iterable collection of `(source, target)` sentence pairs.

    Every source of `keras_transformer.data` returns one. Iterating gives
    Python `str` pairs (e.g. to train a vocabulary or to score a test set);
    `dataset()` gives a `tf.data.Dataset` of scalar `tf.string` pairs that
    streams from disk, for `make_dataset`.

    Subclasses implement `__iter__` and `dataset()`, and `__len__` where the
    number of pairs is known without reading the data again.
    """

    name = "corpus"

    def __iter__(self):
        raise NotImplementedError

    def dataset(self):
        """The pairs as a `tf.data.Dataset` of `(tf.string, tf.string)`."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.name})"


class InMemoryCorpus(ParallelCorpus):
    """Pairs held in a Python list.

    Args:
        pairs: iterable of `(source, target)` pairs of `str` (or UTF-8
            `bytes`).
        name: str, shown in messages.

    Example:

    >>> corpus = InMemoryCorpus([("one", "eins"), ("two", "zwei")])
    >>> len(corpus), list(corpus)[1]
    (2, ('two', 'zwei'))
    """

    def __init__(self, pairs, name="in-memory"):
        self.name = name
        self.pairs = []
        for index, pair in enumerate(pairs):
            if (
                isinstance(pair, str | bytes)
                or not hasattr(pair, "__len__")
                or len(pair) != 2
            ):
                raise DataError(
                    f"{name}: pair {index} is not a (source, target) pair: {pair!r:.80}"
                )
            self.pairs.append((_text(pair[0]), _text(pair[1])))

    def __iter__(self):
        return iter(self.pairs)

    def __len__(self):
        return len(self.pairs)

    def dataset(self):
        if not self.pairs:
            empty = tf.constant([], tf.string)
            return tf.data.Dataset.from_tensor_slices((empty, empty))
        sources, targets = zip(*self.pairs)
        return tf.data.Dataset.from_tensor_slices((list(sources), list(targets)))


class DatasetCorpus(ParallelCorpus):
    """Wraps a `tf.data.Dataset` of `(source, target)` scalar `tf.string` pairs.

    Args:
        dataset: the `tf.data.Dataset`.
        name: str, shown in messages.
    """

    def __init__(self, dataset, name="tf.data"):
        spec = dataset.element_spec
        if not (
            isinstance(spec, tuple)
            and len(spec) == 2
            and all(
                isinstance(s, tf.TensorSpec)
                and s.dtype == tf.string
                and s.shape.rank in (0, None)
                for s in spec
            )
        ):
            raise DataError(
                f"{name}: expected a dataset of (source, target) scalar tf.string "
                f"pairs, got elements {spec}"
            )
        self._dataset = dataset
        self.name = name

    def __iter__(self):
        for source, target in self._dataset.as_numpy_iterator():
            yield _text(source), _text(target)

    def dataset(self):
        return self._dataset


def as_corpus(pairs):
    """A `ParallelCorpus` from a corpus, a list of pairs or a `tf.data.Dataset`.

    Args:
        pairs: a `ParallelCorpus` (returned as is), a `tf.data.Dataset` of
            `(source, target)` scalar `tf.string` pairs, or an iterable of
            `(source, target)` strings.

    Returns:
        A `ParallelCorpus`.

    Example:

    >>> as_corpus([("one", "eins")])
    InMemoryCorpus(in-memory)
    """
    if isinstance(pairs, ParallelCorpus):
        return pairs
    if isinstance(pairs, tf.data.Dataset):
        return DatasetCorpus(pairs)
    if isinstance(pairs, str | bytes):
        raise DataError(
            f"expected (source, target) pairs, got a string {pairs!r:.80}; "
            "use parse_spec() for a SPEC such as 'tsv:PATH'"
        )
    return InMemoryCorpus(pairs)


def _text(value):
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(
                f"not valid UTF-8 (byte {error.start}): {value!r:.80}"
            ) from None
    return str(value)
