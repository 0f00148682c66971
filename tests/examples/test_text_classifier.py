"""examples/custom_models/text_classifier.py: trains on mock IMDB, round-trips."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_transformer.text import SubwordTokenizer
from tests.examples import load_example

example = load_example("custom_models/text_classifier")

TINY = [
    "--epochs", "1", "--steps-per-epoch", "3", "--eval-steps", "2",
    "--batch-size", "4", "--max-length", "24", "--vocab-size", "48",
    "--vocab-sample", "32", "--num-layers", "1", "--d-model", "16",
    "--num-heads", "2", "--d-ff", "32", "--no-jit-compile", "--verbose", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("classifier")
    # No downloads here: TFDS's mock data has imdb_reviews' features (random
    # text, labels 0/1) and replaces tfds.load.
    with tfds.testing.mock_data(num_examples=32):
        result = example.main(["--output-dir", str(output_dir), *TINY])
    return result


def test_trains_and_evaluates(trained):
    history = trained["history"]
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"]).all()
    assert 0.0 <= history["accuracy"][0] <= 1.0
    assert np.isfinite(trained["test"]["loss"])
    assert 4 < trained["tokenizer"].vocab_size <= 48


def test_keras_round_trip(trained):
    model, tokenizer = trained["model"], trained["tokenizer"]
    loaded = keras.saving.load_model(trained["model_path"])  # safe mode
    assert isinstance(
        loaded.get_layer("masked_mean_pooling"), example.MaskedMeanPooling
    )
    texts = tf.constant(["abc def ghij", "a b<br />c", ""])
    ids = example.encode(tokenizer, texts, 24)
    assert ids.shape == (3, 24)
    np.testing.assert_array_equal(
        np.asarray(loaded(ids, training=False)), np.asarray(model(ids, training=False))
    )
    reloaded = SubwordTokenizer.load(trained["tokenizer_path"])
    np.testing.assert_array_equal(example.encode(reloaded, texts, 24), ids)
    probabilities = example.classify(loaded, reloaded, ["abc def", "gh"], 24)
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-6)


def test_padding_does_not_change_the_prediction():
    model = example.build_classifier(
        30, num_layers=1, d_model=8, num_heads=2, d_ff=16, dropout=0.0
    )
    ids = np.array([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14]], "int32")
    logits = np.asarray(model(ids))
    longer = np.pad(ids, ((0, 0), (0, 5)))  # five more padding columns
    np.testing.assert_allclose(np.asarray(model(longer)), logits, atol=1e-5)
    shorter = ids[:1, :4]
    np.testing.assert_allclose(np.asarray(model(shorter)), logits[:1], atol=1e-5)


def test_masked_mean_pooling():
    pooling = example.MaskedMeanPooling()
    x = np.arange(12, dtype="float32").reshape(2, 3, 2)
    mask = np.array([[True, True, False], [False, False, False]])
    pooled = np.asarray(pooling(x, mask=mask))
    np.testing.assert_allclose(pooled, [[1.0, 2.0], [0.0, 0.0]])
    np.testing.assert_allclose(np.asarray(pooling(x)), x.mean(1))
