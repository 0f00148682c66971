import pytest
import tensorflow_datasets as tfds

from keras_transformer.data import DataError
from keras_transformer.data import parse_spec


def test_wmt_loading_offline_with_mock_data():
    # tfds.testing.mock_data fakes the examples from the dataset's features,
    # so the real `tfds.load("wmt14_translate/de-en")` code path runs offline.
    with tfds.testing.mock_data(num_examples=5):
        corpus = parse_spec("tfds:wmt14_translate/de-en:en-de", split="train")
        pairs = list(corpus)
    assert len(pairs) == 5
    assert all(isinstance(s, str) and isinstance(t, str) for s, t in pairs)
    assert corpus.name.startswith("tfds:wmt14_translate/de-en:en-de")


def test_default_direction_is_the_supervised_keys():
    with tfds.testing.mock_data(num_examples=2):
        corpus = parse_spec("tfds:wmt14_translate/de-en", split="valid")
    assert ":de-en:validation" in corpus.name


def test_unknown_language():
    with tfds.testing.mock_data(num_examples=2):
        with pytest.raises(DataError, match="no language 'fr'"):
            parse_spec("tfds:wmt14_translate/de-en:fr-de")


def test_unknown_dataset():
    with pytest.raises(DataError, match="tfds:no_such_dataset_xyz"):
        parse_spec("tfds:no_such_dataset_xyz")
