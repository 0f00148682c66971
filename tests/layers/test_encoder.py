import keras
import numpy as np
import pytest

from keras_transformer.layers import Encoder
from keras_transformer.layers import TokenEmbedding
from tests.test_case import run_layer_test

IDS = np.array([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14]], "int32")


def test_padding_invariance_with_token_inputs():
    encoder = Encoder(num_layers=2, num_heads=2, d_ff=16, d_model=8, vocabulary_size=20)
    short = np.asarray(encoder(IDS[:, :4]))
    long = np.asarray(encoder(np.pad(IDS[:, :4], ((0, 0), (0, 5)))))
    np.testing.assert_allclose(long[0, :4], short[0], atol=1e-5)


def test_embedded_inputs_use_given_padding_mask():
    embedding = TokenEmbedding(20, 8)
    encoder = Encoder(num_layers=1, num_heads=2, d_ff=16)
    by_ids = Encoder.from_config(
        {**encoder.get_config(), "vocabulary_size": 20, "d_model": 8}
    )
    by_ids(IDS)
    x = embedding(IDS)
    encoder(x, padding_mask=IDS != 0)
    by_ids.token_embedding.set_weights(embedding.get_weights())
    encoder.set_weights(by_ids.get_weights()[1:])
    np.testing.assert_allclose(
        encoder(x, padding_mask=IDS != 0), by_ids(IDS), atol=1e-6
    )


def test_stacks_in_a_functional_classifier():
    inputs = keras.Input((None,), dtype="int32")
    x = Encoder(2, 2, 16, d_model=8, vocabulary_size=20)(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model(inputs, outputs)
    assert model(IDS).shape == (2, 2)


def test_pre_ln_adds_a_final_layer_norm():
    post = Encoder(2, 2, 16, d_model=8, vocabulary_size=20)
    pre = Encoder(2, 2, 16, d_model=8, vocabulary_size=20, normalize_first=True)
    post(IDS)
    pre(IDS)
    assert len(pre.trainable_weights) == len(post.trainable_weights) + 2


def test_requires_d_model_with_vocabulary():
    with pytest.raises(ValueError, match="d_model"):
        Encoder(2, 2, 16, vocabulary_size=20)
    with pytest.raises(ValueError, match="d_model=10 is not divisible by num_heads=4"):
        Encoder(2, 4, 16, d_model=10, vocabulary_size=20)


def test_rank_1_ids_are_rejected():
    encoder = Encoder(1, 2, 16, d_model=8, vocabulary_size=20)
    with pytest.raises(ValueError, match="batch_size, length"):
        encoder(np.array([1, 2, 3]))


def test_layer_checklist():
    run_layer_test(
        Encoder,
        {"num_layers": 2, "num_heads": 2, "d_ff": 16, "d_model": 8,
         "vocabulary_size": 20},
        {"inputs": IDS},
        expected_output_shape=(2, 6, 8),
        expected_num_trainable_weights=1 + 2 * 12,
        expected_num_seed_generators=1 + 2 * 2,
    )  # fmt: skip
