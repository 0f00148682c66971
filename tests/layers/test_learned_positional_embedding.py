import numpy as np

from keras_transformer.layers import LearnedPositionalEmbedding
from tests.test_case import run_layer_test


def test_rows_of_the_table_from_start_index():
    layer = LearnedPositionalEmbedding(10)
    out = layer(np.zeros((2, 3, 4), "float32"), start_index=5)
    np.testing.assert_array_equal(out[1], layer.embeddings.numpy()[5:8])


def test_layer_checklist():
    run_layer_test(
        LearnedPositionalEmbedding,
        {"max_positions": 16},
        {"inputs": np.zeros((2, 5, 8), "float32")},
        expected_output_shape=(2, 5, 8),
        expected_num_trainable_weights=1,
        float32_outputs=(0,),
        run_training_check=False,
    )
