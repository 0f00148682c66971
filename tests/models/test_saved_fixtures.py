"""`.keras` files saved by an older version of the library still load.

The fixtures were written by `tests/fixtures/make_saved_models.py` at commit
006c17f, before the code-health split of the layers, decoding and training
packages; they hold compiled models (the library's optimizer, schedule, loss
and metric) of four architecture variants.
"""

import os

import keras
import numpy as np
import pytest

import keras_transformer  # noqa: F401  (registers the serializables)

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
NAMES = [
    "sinusoidal_post_ln",
    "rotary_gqa_pre_ln",
    "relative_separate_vocab",
    "learned_mqa",
]


@pytest.fixture(scope="module")
def expected():
    return np.load(os.path.join(FIXTURES, "saved_models_expected.npz"))


@pytest.mark.parametrize("name", NAMES)
def test_old_keras_file_loads_and_gives_the_same_outputs(name, expected):
    model = keras.saving.load_model(os.path.join(FIXTURES, f"{name}.keras"))
    assert isinstance(model, keras_transformer.Transformer)
    inputs = {"source": expected["source"], "target": expected["target"]}
    logits = keras.ops.convert_to_numpy(model(inputs))
    np.testing.assert_allclose(logits, expected[f"{name}_logits"], atol=1e-5)
    greedy = keras.ops.convert_to_numpy(model.generate(inputs["source"], max_length=6))
    np.testing.assert_array_equal(greedy, expected[f"{name}_greedy"])
    # Compiled with the library's loss, metric and schedule: they load too.
    assert type(model.loss).__name__ == "LabelSmoothedCrossEntropy"
    assert model.optimizer.iterations.numpy() == 1
