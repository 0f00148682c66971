"""`Transformer.__init__`: argument checks, stored arguments, sub-layers."""

import inspect

import keras
import pytest

from keras_transformer import Transformer

SMALL = dict(num_layers=1, d_model=16, num_heads=2, d_ff=32)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_vocabulary_size": 0}, "`target_vocabulary_size` must be a positive"),
        ({"d_model": 0}, "`d_model` must be a positive integer"),
        ({"num_heads": 2.0}, "`num_heads` must be a positive integer"),
        ({"bos_id": -1}, "`bos_id` must be a valid token id. Received: bos_id=-1"),
        # Special ids must lie in both vocabularies.
        ({"target_vocabulary_size": 30, "pad_id": 30}, "Received: pad_id=30"),
        ({"target_vocabulary_size": 50, "eos_id": 45}, "Received: eos_id=45"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Transformer(vocabulary_size=40, **{**SMALL, **kwargs})


@pytest.mark.parametrize(
    "kwargs, shared",
    [
        ({}, True),
        ({"target_vocabulary_size": 40}, True),  # the same size: one vocabulary
        ({"target_vocabulary_size": 30}, False),
        ({"share_embeddings": False}, False),
    ],
)
def test_share_embeddings_default_and_sub_layers_in_creation_order(kwargs, shared):
    model = Transformer(vocabulary_size=40, **SMALL, **kwargs)
    assert model.share_embeddings is shared
    assert (model.source_embedding is model.target_embedding) is shared
    names = [layer.name for layer in model.layers]
    embeddings = ["target_embedding"] + ([] if shared else ["source_embedding"])
    assert names == embeddings + ["encoder", "decoder"]


def test_every_argument_is_stored_and_in_the_config():
    arguments = dict(
        vocabulary_size=40, target_vocabulary_size=30, num_layers=2,
        num_decoder_layers=1, d_model=16, num_heads=4, d_ff=24, dropout=0.2,
        attention_dropout=0.1, activation_dropout=0.05, activation="gelu",
        normalize_first=True, layer_norm_epsilon=1e-5, num_key_value_heads=2,
        position_encoding="learned", max_wavelength=500, max_relative_position=4,
        max_positions=64, share_embeddings=False, tie_output_embeddings=False,
        pad_id=0, bos_id=1, eos_id=5,
    )  # fmt: skip
    parameters = set(inspect.signature(Transformer.__init__).parameters)
    assert set(arguments) == parameters - {"self", "kwargs"}
    model = Transformer(**arguments)
    config = model.get_config()
    for name, value in arguments.items():
        if name == "activation":
            assert model.activation is keras.activations.get(value)
            assert keras.activations.deserialize(config[name]) is model.activation
        else:
            assert getattr(model, name) == value, name
            assert config[name] == value, name
    assert (model.encoder.num_layers, model.decoder.num_layers) == (2, 1)
    assert Transformer.from_config(config).get_config() == config
