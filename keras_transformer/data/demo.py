"""The embedded default corpus: English number words -> German number words.

`demo_pairs()` needs no download: it writes the numbers `0..9999` in words
with `num2words`, e.g. "four thousand, two hundred and fifteen" ->
"viertausendzweihundertfünfzehn". German writes a number as one compound
with the units before the tens ("fünfzehn", "einundzwanzig"), so the model
must reorder and merge pieces, not copy words.

Why `0..9999` by default: every number is built from a few hundred pieces
("X thousand", "X hundred", and the 100 irregular words for 0..99, all of
them in `train`), each of which appears in hundreds of training numbers, so
the held-out numbers are new combinations of well-seen pieces: the small
model of `keras-transformer demo` learns to translate them exactly in a few
CPU minutes (the project README gives a run's scores). Larger ranges (e.g.
to 99,999) add the German reordering of the thousands
("zweiundvierzigtausend") but need more data and training time.
"""

import numpy as np
from num2words import num2words

from keras_transformer.data.corpus import InMemoryCorpus

SPLITS = ("train", "valid", "test")
DEFAULT_MAX_NUMBER = 9999
# Numbers below this are irregular words ("seventeen" -> "siebzehn") that
# cannot be inferred from other numbers: they are always in `train`.
ALWAYS_TRAIN_BELOW = 100
TEST_DIVISOR = 10  # 1/10 of the others are test numbers
VALID_DIVISOR = 20  # 1/20 are validation numbers


def demo_numbers(split="train", max_number=DEFAULT_MAX_NUMBER, seed=0):
    """The numbers of one split of the demo corpus.

    The numbers `0..max_number` are split deterministically: every number
    below 100 is in `train` (their words are irregular, e.g. "seventeen" ->
    "siebzehn", and cannot be inferred); of the others, 10% go to `test`,
    5% to `valid` and the rest to `train`, by a permutation seeded with
    `seed`. The splits are disjoint and cover `0..max_number`; held-out
    numbers are new combinations of pieces seen in training. With the
    default `max_number=9999`: 8,515 train, 495 valid, 990 test numbers.

    Args:
        split: `"train"`, `"valid"` or `"test"`.
        max_number: int >= 100, the largest number.
        seed: int, seed of the permutation.

    Returns:
        A sorted list of ints.

    Example:

    >>> len(demo_numbers("test")), demo_numbers("test", max_number=999)[:3]
    (990, [102, 108, 136])
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: {split!r}")
    if isinstance(max_number, bool) or not isinstance(max_number, int | np.integer):
        raise ValueError(f"`max_number` must be an int. Received: {max_number!r}")
    if max_number < ALWAYS_TRAIN_BELOW:
        raise ValueError(f"`max_number` must be at least 100. Received: {max_number}")
    rest = np.random.default_rng(seed).permutation(
        np.arange(ALWAYS_TRAIN_BELOW, max_number + 1)
    )
    n_test = len(rest) // TEST_DIVISOR
    n_valid = len(rest) // VALID_DIVISOR
    chosen = {
        "test": rest[:n_test],
        "valid": rest[n_test : n_test + n_valid],
        "train": np.concatenate(
            [np.arange(ALWAYS_TRAIN_BELOW), rest[n_test + n_valid :]]
        ),
    }[split]
    return sorted(int(n) for n in chosen)


def demo_pair(number):
    """`(English words, German words)` of `number`, by `num2words`.

    Args:
        number: int.

    Returns:
        A `(source, target)` pair of `str`.

    Example:

    >>> demo_pair(4215)
    ('four thousand, two hundred and fifteen', 'viertausendzweihundertfünfzehn')
    """
    return num2words(number, lang="en"), num2words(number, lang="de")


def demo_pairs(split="train", max_number=DEFAULT_MAX_NUMBER, seed=0):
    """English -> German number words of one split of the demo corpus.

    Args:
        split: `"train"`, `"valid"` or `"test"`.
        max_number: int >= 100, the largest number (default 9999).
        seed: int, seed of the split (see `demo_numbers`).

    Returns:
        An `InMemoryCorpus` of `(English, German)` pairs in the order of
        `demo_numbers(split, max_number, seed)`, which it also holds as
        `.numbers`.

    Example:

    >>> corpus = demo_pairs("test")
    >>> len(corpus), corpus.numbers[0], list(corpus)[0]
    (990, 101, ('one hundred and one', 'einhunderteins'))
    """
    numbers = demo_numbers(split, max_number, seed)
    corpus = InMemoryCorpus(
        [demo_pair(n) for n in numbers],
        name=f"demo:{split}"
        if max_number == DEFAULT_MAX_NUMBER
        else f"demo:{max_number}:{split}",
    )
    corpus.numbers = numbers
    return corpus
