"""`decoding.generation.check_search_arguments`: what `generate()` accepts."""

import types

import numpy as np
import pytest

from keras_transformer.decoding.generation import check_search_arguments


def _model(position_encoding="learned", max_positions=8, vocabulary=10):
    return types.SimpleNamespace(
        output_vocabulary_size=vocabulary,
        position_encoding=position_encoding,
        max_positions=max_positions,
    )


def test_numpy_integers_are_accepted_as_python_ints():
    counts = check_search_arguments(_model(), np.int64(8), np.int32(3), np.int16(2))
    assert counts == (8, 3, 2)
    assert all(type(count) is int for count in counts)


@pytest.mark.parametrize(
    "name, value",
    [
        ("max_length", 0),
        ("max_length", -1),
        ("max_length", 4.0),
        ("max_length", np.float32(4)),
        ("max_length", "4"),
        ("beam_size", True),
        ("beam_size", np.int64(0)),
        ("num_return_sequences", None),
    ],
)
def test_counts_must_be_positive_integers(name, value):
    counts = {"max_length": 4, "beam_size": 2, "num_return_sequences": 1}
    counts[name] = value
    with pytest.raises(ValueError, match=f"`{name}` must be a positive integer"):
        check_search_arguments(_model(), **counts)


@pytest.mark.parametrize(
    "model, counts, message",
    [
        (_model(), (4, 2, 3), "num_return_sequences=3 must be <= beam_size=2"),
        (_model(vocabulary=10), (4, 6, 1), "at least 12 tokens; the model has 10"),
        (_model(max_positions=8), (9, 1, 1), "max_length=9 exceeds the 8 learned"),
    ],
)
def test_counts_must_fit_each_other_and_the_model(model, counts, message):
    with pytest.raises(ValueError, match=message):
        check_search_arguments(model, *counts)


def test_limits_are_inclusive_and_learned_positions_only():
    assert check_search_arguments(_model(), 8, 5, 5) == (8, 5, 5)
    sinusoidal = _model(position_encoding="sinusoidal", max_positions=8)
    assert check_search_arguments(sinusoidal, 100, 1, 1) == (100, 1, 1)
