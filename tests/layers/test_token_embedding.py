import numpy as np
import pytest

from keras_transformer.layers import TokenEmbedding
from tests.test_case import run_layer_test


def test_scaled_by_sqrt_d_model_and_tied_logits():
    layer = TokenEmbedding(vocabulary_size=10, d_model=4)
    ids = np.array([[5, 6, 0]])
    x = layer(ids)
    table = layer.embeddings.numpy()
    np.testing.assert_allclose(x, table[ids] * 2.0, atol=1e-6)
    np.testing.assert_allclose(layer.logits(x), np.asarray(x) @ table.T, atol=1e-5)
    assert len(layer.weights) == 1


def test_untied_output_has_its_own_kernel():
    layer = TokenEmbedding(vocabulary_size=10, d_model=4, tie_weights=False)
    x = layer(np.array([[1, 2]]))
    assert len(layer.weights) == 2
    np.testing.assert_allclose(
        layer.logits(x), np.asarray(x) @ layer.output_kernel.numpy(), atol=1e-5
    )


def test_mask_marks_padding():
    layer = TokenEmbedding(vocabulary_size=10, d_model=4)
    np.testing.assert_array_equal(
        layer.compute_mask(np.array([[3, 4, 0, 0]])), [[True, True, False, False]]
    )


def test_float_ids_are_rejected():
    with pytest.raises(ValueError, match="integer"):
        TokenEmbedding(10, 4)(np.array([[1.0, 2.0]], "float32"))


@pytest.mark.parametrize("tie_weights", [True, False])
def test_layer_checklist(tie_weights):
    run_layer_test(
        TokenEmbedding,
        {"vocabulary_size": 20, "d_model": 8, "tie_weights": tie_weights},
        {"token_ids": np.array([[4, 5, 0], [7, 8, 9]], "int32")},
        expected_output_shape=(2, 3, 8),
        expected_num_trainable_weights=1 if tie_weights else 2,
    )


@pytest.mark.parametrize("tie_weights", [True, False])
def test_precomputed_output_projection_gives_the_same_logits(tie_weights):
    embedding = TokenEmbedding(vocabulary_size=11, d_model=4, tie_weights=tie_weights)
    x = embedding(np.array([[5, 6, 0]]))
    kernel = embedding.output_projection()
    assert tuple(kernel.shape) == (4, 11)
    expected = (
        embedding.embeddings.numpy().T if tie_weights else embedding.output_kernel
    )
    np.testing.assert_array_equal(kernel, expected)
    np.testing.assert_array_equal(
        embedding.logits(x, kernel=kernel), embedding.logits(x)
    )
