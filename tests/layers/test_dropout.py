import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transformer import Transformer
from keras_transformer.layers import Dropout
from keras_transformer.layers import dropout as dropout_module
from tests.test_case import run_layer_test


def _compiled(layer, jit_compile=True, training=True):
    @tf.function(jit_compile=jit_compile)
    def call(x):
        return layer(x, training=training)

    return call


def _hlo(layer, x):
    return _compiled(layer).experimental_get_compiler_ir(x)(stage="hlo")


def test_layer_checklist():
    run_layer_test(
        Dropout,
        {"rate": 0.3, "seed": 1},
        {"inputs": np.ones((2, 5, 8), "float32")},
        expected_output_shape=(2, 5, 8),
        expected_num_trainable_weights=0,
        expected_num_seed_generators=1,
        call_kwargs={"training": True},
    )


def test_xla_draws_with_threefry_where_keras_draws_with_philox():
    x = tf.ones((4, 8))
    ours = _hlo(Dropout(0.1, seed=3), x)
    stock = _hlo(keras.layers.Dropout(0.1, seed=3), x)
    assert "algorithm=rng_three_fry" in ours and "rng_philox" not in ours
    assert "algorithm=rng_philox" in stock


def test_accelerators_draw_with_keras_philox_under_xla(monkeypatch):
    # ThreeFry is a CPU choice (`keras_transformer.utils.cpu_tuned_paths`).
    monkeypatch.setattr(dropout_module, "cpu_tuned_paths", lambda: False)
    hlo = _hlo(Dropout(0.1, seed=3), tf.ones((4, 8)))
    assert "algorithm=rng_philox" in hlo and "rng_three_fry" not in hlo


@pytest.mark.parametrize("jit_compile", [True, False])
@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_drops_rate_and_scales_the_rest(jit_compile, rate):
    n = 1 << 20
    x = tf.random.stateless_uniform((64, 128, 128), seed=(0, 1)) + 1.0
    call = _compiled(Dropout(rate, seed=7), jit_compile)
    y = call(x).numpy()
    dropped = y == 0
    # Binomial(n, rate): 6 standard deviations.
    assert abs(dropped.mean() - rate) < 6 * np.sqrt(rate * (1 - rate) / n)
    np.testing.assert_allclose(y[~dropped], x.numpy()[~dropped] / (1 - rate), rtol=1e-6)
    # Masks are independent of the position: rows and columns drop alike.
    assert abs(dropped.mean(axis=(0, 1)) - rate).max() < 0.02
    assert abs(dropped.mean(axis=(0, 2)) - rate).max() < 0.02


def test_xla_masks_change_each_call_and_follow_the_seed():
    x = tf.ones((32, 256))
    first = _compiled(Dropout(0.5, seed=11))
    masks = [first(x).numpy() == 0 for _ in range(2)]
    assert (masks[0] != masks[1]).mean() > 0.4  # ~0.5 for independent masks
    again = _compiled(Dropout(0.5, seed=11))
    np.testing.assert_array_equal(again(x).numpy() == 0, masks[0])
    other = _compiled(Dropout(0.5, seed=12))
    assert (other(x).numpy() == 0).tolist() != masks[0].tolist()


def test_outside_xla_it_is_keras_dropout():
    x = tf.random.normal((8, 16, 32))
    for jit_compile in (None, False):
        ours = _compiled(Dropout(0.2, seed=5), jit_compile)
        stock = _compiled(keras.layers.Dropout(0.2, seed=5), jit_compile)
        np.testing.assert_array_equal(ours(x), stock(x))
    np.testing.assert_array_equal(
        Dropout(0.2, seed=5)(x, training=True),
        keras.layers.Dropout(0.2, seed=5)(x, training=True),
    )


def test_inference_and_rate_zero_return_the_input_rate_one_zeros():
    x = tf.random.normal((4, 8))
    np.testing.assert_array_equal(_compiled(Dropout(0.5), training=False)(x), x)
    np.testing.assert_array_equal(_compiled(Dropout(0.0))(x), x)
    np.testing.assert_array_equal(_compiled(Dropout(1.0))(x), np.zeros((4, 8)))


def test_noise_shape_broadcasts_under_xla():
    x = tf.ones((16, 10, 64))
    y = _compiled(Dropout(0.5, noise_shape=(None, 1, 64), seed=2))(x).numpy()
    np.testing.assert_array_equal(y, np.broadcast_to(y[:, :1], y.shape))
    assert 0.3 < (y == 0).mean() < 0.7
    assert not (y == y[:1]).all()  # `None` took the batch size, not 1


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_under_xla(policy):
    layer = Dropout(0.25, seed=4, dtype=policy)
    y = _compiled(layer)(tf.ones((64, 64), layer.compute_dtype))
    assert y.dtype == layer.compute_dtype
    values = set(np.unique(tf.cast(y, "float32").numpy()).tolist())
    assert values == {0.0, np.float32(tf.cast(1 / 0.75, layer.compute_dtype))}


def test_rejects_a_bad_rate():
    with pytest.raises(ValueError, match="rate"):
        Dropout(1.5)


def test_the_transformer_uses_it_everywhere():
    model = Transformer(
        vocabulary_size=32,
        num_layers=1,
        d_model=16,
        num_heads=2,
        d_ff=32,
        dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.1,
    )
    model({"source": np.ones((1, 3), "int32"), "target": np.ones((1, 3), "int32")})
    dropouts = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.Dropout)
    ]
    # 2 embeddings, 2 encoder + 3 decoder residuals, 1 attention-weight
    # (encoder) + 2 (decoder self/cross), 2 feed-forward inner.
    assert len(dropouts) == 2 + 5 + 3 + 2
    assert all(type(layer) is Dropout for layer in dropouts)
