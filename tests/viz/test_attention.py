"""`attention_weights` returns the layers' own attention weights."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_transformer import Transformer
from keras_transformer.special_tokens import BOS_ID
from keras_transformer.special_tokens import EOS_ID
from keras_transformer.viz import attention_weights

# Row 0 (the one plotted) is padded; row 1 is not.
SOURCE = np.array([[5, 6, 7, 3, 0, 0], [8, 9, 10, 11, 12, 3]], "int32")
TARGET = np.array([[2, 13, 14, 15, 0], [2, 16, 17, 18, 19]], "int32")
# `return_attention` too, so the test's own `generate` call reuses the trace.
GENERATE = {"max_length": 6, "jit_compile": False, "return_attention": True}


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    # Dropout everywhere: the weights must still be inference-mode ones.
    model = Transformer(
        vocabulary_size=30, num_layers=2, d_model=16, num_heads=2, d_ff=32,
        dropout=0.1, attention_dropout=0.1,
    )  # fmt: skip
    model.build()
    return model


def _layer_scores(model, source, target=None):
    """The layers' `return_attention_scores` outputs, for the whole batch."""
    source = ops.convert_to_tensor(source)
    mask = ops.not_equal(source, 0)
    _, encoder_scores = model.encoder(
        model.source_embedding(source),
        padding_mask=mask,
        return_attention_scores=True,
        training=False,
    )
    if target is None:
        return encoder_scores
    _, decoder_scores = model.decode(
        ops.convert_to_tensor(target),
        model.encode(source, training=False),
        source_padding_mask=mask,
        return_attention_scores=True,
        training=False,
    )
    return decoder_scores


def _assert_layer_output(weights, layer_output):
    """Equal to the layer's output for the sentence alone; batched, ~equal."""
    single, batched = (np.asarray(x) for x in layer_output)
    np.testing.assert_array_equal(weights, single)
    np.testing.assert_allclose(weights, batched, rtol=1e-5, atol=1e-6)


def _check_rows(weights):
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert (weights >= 0).all()


def test_encoder_self_attention(model):
    weights = attention_weights(model, SOURCE)
    assert weights.shape == (2, 2, 6, 6)  # (layers, heads, S, S)
    assert weights.dtype == np.float32
    _check_rows(weights)
    assert (weights[..., 4:] == 0).all()  # source padding is never attended
    single, batched = _layer_scores(model, SOURCE[:1]), _layer_scores(model, SOURCE)
    for layer in range(2):
        _assert_layer_output(weights[layer], (single[layer][0], batched[layer][0]))
    # Inference mode: dropout does not change them.
    np.testing.assert_array_equal(weights, attention_weights(model, SOURCE))
    # A single sentence (1-D ids) gives the same weights.
    np.testing.assert_array_equal(weights, attention_weights(model, SOURCE[0]))


def test_decoder_masked_self_attention(model):
    weights = attention_weights(model, SOURCE, TARGET, kind="decoder")
    assert weights.shape == (2, 2, 5, 5)  # (layers, heads, T, T)
    _check_rows(weights)
    future = np.triu(np.ones((5, 5), bool), k=1)
    assert (weights[..., future] == 0).all()  # no query sees a later position
    assert (weights[..., 4] == 0).all()  # target padding
    assert (weights[..., ~future][..., :-1] > 0).all()
    single = _layer_scores(model, SOURCE[:1], TARGET[:1])
    batched = _layer_scores(model, SOURCE, TARGET)
    for layer in range(2):
        _assert_layer_output(
            weights[layer],
            (s[layer]["self_attention"][0] for s in (single, batched)),
        )


def test_encoder_decoder_attention(model):
    weights, query_ids, key_ids = attention_weights(
        model, SOURCE, TARGET, kind="cross", return_tokens=True
    )
    assert weights.shape == (2, 2, 5, 6)  # (layers, heads, T, S)
    _check_rows(weights)
    assert (weights[..., 4:] == 0).all()  # source padding
    assert (weights[..., :4] > 0).all()
    np.testing.assert_array_equal(query_ids, TARGET[0])
    np.testing.assert_array_equal(key_ids, SOURCE[0])
    single = _layer_scores(model, SOURCE[:1], TARGET[:1])
    batched = _layer_scores(model, SOURCE, TARGET)
    for layer in range(2):
        for head in range(2):
            _assert_layer_output(
                weights[layer, head],
                (s[layer]["cross_attention"][0, head] for s in (single, batched)),
            )


def test_attention_over_the_models_own_translation(model):
    outputs = model.generate(SOURCE[:1], **GENERATE)
    generated = np.asarray(outputs["ids"])[0]
    eos = np.flatnonzero(generated == EOS_ID)
    generated = generated[: eos[0] + 1] if eos.size else generated

    cross, query_ids, key_ids = attention_weights(
        model, SOURCE, kind="cross", return_tokens=True, generate_kwargs=GENERATE
    )
    # One row per generated token, labelled by that token.
    np.testing.assert_array_equal(query_ids, generated)
    np.testing.assert_array_equal(key_ids, SOURCE[0])
    assert cross.shape == (2, 2, len(generated), 6)
    _check_rows(cross)
    assert (cross[..., 4:] == 0).all()
    # Recomputed without the cache, the last layer's mean over heads is the
    # alignment the cached search itself reported.
    np.testing.assert_allclose(
        cross[-1].mean(0),
        np.asarray(outputs["attention"])[0, : len(generated)],
        atol=1e-5,
    )

    decoder, query_ids, key_ids = attention_weights(
        model, SOURCE, kind="decoder", return_tokens=True, generate_kwargs=GENERATE
    )
    inputs = np.concatenate([[BOS_ID], generated[:-1]])
    np.testing.assert_array_equal(query_ids, inputs)
    np.testing.assert_array_equal(key_ids, inputs)
    expected = attention_weights(model, SOURCE, inputs, kind="decoder")
    np.testing.assert_array_equal(decoder, expected)
    assert (decoder[..., np.triu(np.ones(decoder.shape[-2:], bool), 1)] == 0).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "self"}, "kind"),
        ({"source_ids": np.zeros((1, 2, 3), "int32")}, "shape"),
        ({"source_ids": np.zeros((1, 0), "int32")}, "shape"),
        ({"source_ids": np.ones((1, 3), "float32")}, "integer"),
        ({"target_ids": np.ones((2, 2, 2), "int32"), "kind": "cross"}, "shape"),
    ],
)
def test_invalid_arguments(model, kwargs, message):
    kwargs = {"source_ids": SOURCE, **kwargs}
    with pytest.raises(ValueError, match=message):
        attention_weights(model, **kwargs)
