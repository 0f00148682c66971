"""TFDS loading, offline: `tfds.testing.mock_data` fakes the stored examples.

The real `wmt14_translate/de-en` builder code runs (its features are a
`Translation` dict keyed by language code, supervised keys `("de", "en")`);
only reading the prepared files is replaced by the examples below.
"""

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_transformer.data import DataError
from keras_transformer.data import load_tfds
from keras_transformer.data import make_dataset
from keras_transformer.data import parse_spec

NAME = "wmt14_translate/de-en"
PAIRS = [("eins", "one"), ("zwei Häuser", "two houses"), ("drei", "three")]


def _as_dataset(builder, split, decoders=None, read_config=None, **kwargs):
    """Known German/English examples, tagged with the split's name."""
    assert set(builder.info.features.keys()) == {"de", "en"}
    examples = {
        "de": [f"{de} ({split})" for de, _ in PAIRS],
        "en": [f"{en} ({split})" for _, en in PAIRS],
    }
    return tf.data.Dataset.from_tensor_slices(examples)


@pytest.fixture
def mock_wmt():
    with tfds.testing.mock_data(as_dataset_fn=_as_dataset):
        yield


def test_default_direction_is_the_supervised_keys(mock_wmt):
    corpus = load_tfds(NAME, "train")
    assert list(corpus) == [(f"{de} (train)", f"{en} (train)") for de, en in PAIRS]
    assert corpus.name == f"tfds:{NAME}:de-en:train"


@pytest.mark.parametrize("direction", ["en-de", "en->de"])
def test_spec_picks_the_direction_and_split(mock_wmt, direction):
    corpus = parse_spec(f"tfds:{NAME}:{direction}", split="valid")
    expected = [(f"{en} (validation)", f"{de} (validation)") for de, en in PAIRS]
    assert list(corpus) == expected
    assert corpus.name == f"tfds:{NAME}:en-de:validation"


def test_one_language_implies_the_other(mock_wmt):
    corpus = load_tfds(NAME, "test", source_language="en")
    assert next(iter(corpus)) == ("one (test)", "eins (test)")
    corpus = load_tfds(NAME, "test", target_language="en")
    assert next(iter(corpus)) == ("eins (test)", "one (test)")


def test_version_in_the_name(mock_wmt):
    corpus = parse_spec(f"tfds:{NAME}:1.0.0:en-de", split="train[:2]")
    assert corpus.name == f"tfds:{NAME}:1.0.0:en-de:train[:2]"


def test_feeds_the_pipeline(mock_wmt):
    corpus = load_tfds(NAME, "train", "en", "de")
    tokenize = lambda s: tf.strings.unicode_decode(s, "UTF-8") + 4
    dataset = make_dataset(corpus, tokenize, tokenize, batch_size=3,
                           max_source_length=32, max_target_length=32,
                           drop_remainder=False)  # fmt: skip
    batches = list(dataset)
    assert sum(int(target_out.shape[0]) for _, target_out in batches) == 3
    assert all(target_out.dtype == tf.int32 for _, target_out in batches)


def test_random_mock_examples():
    # The default mock: random strings from the real feature specs.
    with tfds.testing.mock_data(num_examples=5):
        pairs = list(parse_spec(f"tfds:{NAME}:en-de"))
    assert len(pairs) == 5
    assert all(isinstance(s, str) and isinstance(t, str) for s, t in pairs)


def test_unknown_language(mock_wmt):
    with pytest.raises(DataError, match=r"no language 'fr'; it has \['de', 'en'\]"):
        parse_spec(f"tfds:{NAME}:fr-de")
    with pytest.raises(DataError, match="source and target are both 'de'"):
        load_tfds(NAME, "train", "de", "de")


def test_not_a_translation_dataset():
    with tfds.testing.mock_data(num_examples=2):
        with pytest.raises(DataError, match="tfds:mnist: not a translation dataset"):
            parse_spec("tfds:mnist")


def test_unknown_dataset():
    with pytest.raises(DataError, match="tfds:no_such_dataset_xyz: cannot load"):
        parse_spec("tfds:no_such_dataset_xyz")
