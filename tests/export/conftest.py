import pytest
from num2words import num2words

from keras_transformer.text import SubwordTokenizer
from keras_transformer.text import train_sentencepiece


@pytest.fixture(scope="module")
def tokenizer():
    """A 120-piece SentencePiece model of English and German number words,
    shared by source and target (the translators' tests)."""
    corpus = [num2words(n) for n in range(0, 3000, 7)]
    corpus += [num2words(n, lang="de") for n in range(0, 3000, 7)]
    return SubwordTokenizer(train_sentencepiece(corpus, vocab_size=120))
