import keras
import numpy as np
import pytest

from keras_transformer.training import TransformerSchedule
from keras_transformer.training import transformer_optimizer


@pytest.mark.parametrize(
    "step, expected",
    [
        (1, 512**-0.5 * 4000**-1.5),  # warm-up: step * warmup^-1.5
        (4000, 512**-0.5 * 4000**-0.5),  # the peak, 6.988e-4
        (100_000, 512**-0.5 * 100_000**-0.5),  # decay: step^-0.5
    ],
)
def test_schedule_equals_paper_formula(step, expected):
    schedule = TransformerSchedule(d_model=512, warmup_steps=4000)
    formula = 512**-0.5 * min(step**-0.5, step * 4000**-1.5)
    assert expected == pytest.approx(formula)
    # Called with the optimizer's 0-based iterations: step = iterations + 1.
    np.testing.assert_allclose(float(schedule(step - 1)), expected, rtol=1e-6)


def test_schedule_scale_and_first_step_are_finite():
    schedule = TransformerSchedule(d_model=64, warmup_steps=10, scale=2.0)
    assert np.isfinite(float(schedule(0)))
    assert float(schedule(0)) == pytest.approx(2.0 * 64**-0.5 * 10**-1.5)


def test_optimizer_uses_the_schedule_during_training():
    optimizer = transformer_optimizer(d_model=16, warmup_steps=5)
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.9, 0.98, 1e-9)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer, "mse")
    model.fit(np.ones((6, 2)), np.ones((6, 1)), batch_size=2, verbose=0)
    assert int(optimizer.iterations) == 3
    np.testing.assert_allclose(
        float(optimizer.learning_rate), 16**-0.5 * 4 * 5**-1.5, rtol=1e-6
    )


def test_serialization_round_trip():
    schedule = TransformerSchedule(d_model=64, warmup_steps=10, scale=2.0)
    assert schedule.get_config() == {"d_model": 64, "warmup_steps": 10, "scale": 2.0}
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(schedule)
    )
    assert type(revived) is TransformerSchedule
    assert revived.get_config() == schedule.get_config()
    assert float(revived(123)) == float(schedule(123))
    optimizer = keras.optimizers.deserialize(
        keras.optimizers.serialize(transformer_optimizer(512, warmup_steps=100))
    )
    learning_rate = keras.optimizers.serialize(optimizer)["config"]["learning_rate"]
    assert learning_rate["class_name"] == "TransformerSchedule"
    assert learning_rate["config"] == {
        "d_model": 512,
        "warmup_steps": 100,
        "scale": 1.0,
    }
    assert optimizer.beta_2 == 0.98


def test_invalid_arguments():
    with pytest.raises(ValueError, match="`warmup_steps` must be a positive.*=0"):
        TransformerSchedule(d_model=64, warmup_steps=0)
    with pytest.raises(ValueError, match="`d_model`.*=-1"):
        TransformerSchedule(d_model=-1)
    with pytest.raises(ValueError, match="sets \\['beta_2'\\]"):
        transformer_optimizer(64, beta_2=0.999)
