"""Small generated corpora and a trained tokenizer shared by the text tests."""

import random

import pytest
from num2words import num2words

from keras_transformer.text import SubwordTokenizer
from keras_transformer.text import train_sentencepiece


def number_sentences(lang, count, seed):
    """`count` numbers written out in words, e.g. "four hundred and three"."""
    rng = random.Random(seed)
    return [num2words(rng.randint(0, 10**6), lang=lang) for _ in range(count)]


@pytest.fixture(scope="session")
def english_sentences():
    return number_sentences("en", 300, seed=0)


@pytest.fixture(scope="session")
def spanish_sentences():
    return number_sentences("es", 300, seed=1)


@pytest.fixture(scope="session")
def model_proto(english_sentences):
    return train_sentencepiece(english_sentences, vocab_size=100)


@pytest.fixture(scope="session")
def tokenizer(model_proto):
    return SubwordTokenizer(model_proto)
