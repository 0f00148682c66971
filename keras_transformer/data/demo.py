"""The embedded default corpus: English number words -> German number words."""

import numpy as np
from num2words import num2words

from keras_transformer.data.corpus import InMemoryCorpus

SPLITS = ("train", "valid", "test")
DEFAULT_MAX_NUMBER = 9999


def demo_numbers(split="train", max_number=DEFAULT_MAX_NUMBER, seed=0):
    """The numbers of one split of the demo corpus.

    The numbers `0..max_number` are split deterministically: every number
    below 100 is in `train` (their words are irregular, e.g. "seventeen" ->
    "siebzehn", and cannot be inferred), and of the others 10% go to `test`,
    5% to `valid` and the rest to `train`, by a seeded permutation. Held-out
    numbers are therefore new combinations of pieces seen in training.

    Args:
        split: `"train"`, `"valid"` or `"test"`.
        max_number: int, the largest number.
        seed: int, seed of the permutation.

    Returns:
        A sorted list of ints.
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: {split!r}")
    if max_number < 100:
        raise ValueError(f"`max_number` must be at least 100. Received: {max_number}")
    rest = np.random.default_rng(seed).permutation(np.arange(100, max_number + 1))
    n_test = len(rest) // 10
    n_valid = len(rest) // 20
    chosen = {
        "test": rest[:n_test],
        "valid": rest[n_test : n_test + n_valid],
        "train": np.concatenate([np.arange(100), rest[n_test + n_valid :]]),
    }[split]
    return sorted(int(n) for n in chosen)


def demo_pair(number):
    """`(English words, German words)` of `number`."""
    return num2words(number, lang="en"), num2words(number, lang="de")


def demo_pairs(split="train", max_number=DEFAULT_MAX_NUMBER, seed=0):
    """English -> German number words of one split, as an `InMemoryCorpus`.

    Example:

    >>> demo_pair(4215)
    ('four thousand, two hundred and fifteen', 'viertausendzweihundertfünfzehn')
    """
    pairs = [demo_pair(n) for n in demo_numbers(split, max_number, seed)]
    return InMemoryCorpus(pairs, name=f"demo:{split}")
