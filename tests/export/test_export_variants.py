"""Every model variant exports, reloads and serves what the model generates.

Issue 9: "All options ... work with ... export". For each variant option a
tiny untrained model is wrapped in a `Translator`, exported with
`export_translator`, reloaded with `tf.saved_model.load`, and the served
translations must equal the in-process output for the same inputs: beam
search (`serving_default`) the translator's own search run in process,
greedy (`translate_greedy`) `model.generate` (uncompiled, like the
SavedModel graph). The greedy ids are also checked against the uncached
forward pass, so each variant's decoding cache is exercised.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer import Transformer
from keras_transformer.export import Translator
from keras_transformer.export import export_translator
from tests.export import test_translator

# `tokenizer`: tests/export/conftest.py, as in test_translator.py.
SENTENCES = [
    *test_translator.SENTENCES,
    # Longer than max_relative_position below, so clipping is exercised.
    "seven thousand, seven hundred and seventy-seven",
]
MAX_INPUT_TOKENS = 16
MAX_EXTRA_LENGTH = 6
BEAM_SIZE = 2

VARIANTS = {
    "learned": {"position_encoding": "learned", "max_positions": 32},
    "rotary": {"position_encoding": "rotary"},
    "relative": {"position_encoding": "relative", "max_relative_position": 4},
    "mqa": {"num_key_value_heads": 1},
    "gqa": {"num_heads": 4, "num_key_value_heads": 2},
    "pre_ln": {"normalize_first": True},
}


def _translator(tokenizer, **overrides):
    config = {"num_layers": 1, "d_model": 32, "num_heads": 2, "d_ff": 64}
    model = Transformer(vocabulary_size=tokenizer.vocab_size, **{**config, **overrides})
    return Translator(
        model,
        tokenizer,
        tokenizer,
        beam_size=BEAM_SIZE,
        max_input_tokens=MAX_INPUT_TOKENS,
        max_extra_length=MAX_EXTRA_LENGTH,
    )


def _greedy(translator):
    """In-process greedy `model.generate` on the translator's ids."""
    source_ids, empty = translator._encode(tf.constant(SENTENCES))
    outputs = translator.model.generate(
        source_ids,
        max_length=int(source_ids.shape[1]) + MAX_EXTRA_LENGTH,
        return_scores=True,
        jit_compile=False,
    )
    text = translator.target_tokenizer.detokenize(outputs["ids"])
    text = tf.where(empty, tf.constant(""), text)
    return source_ids, outputs, list(text.numpy())


def _assert_same(served, expected):
    assert list(served["translations"].numpy()) == list(
        expected["translations"].numpy()
    )
    np.testing.assert_allclose(
        served["scores"].numpy(), expected["scores"].numpy(), atol=1e-4
    )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_exported_variant_serves_model_output(variant, tokenizer, tmp_path):
    translator = _translator(tokenizer, **VARIANTS[variant])
    model = translator.model
    for name, value in VARIANTS[variant].items():
        assert getattr(model, name) == value  # the option reached the model

    path = export_translator(translator, tmp_path)
    loaded = tf.saved_model.load(path)
    sentences = tf.constant(SENTENCES)

    # Beam search: the reloaded signature vs the same search run in process
    # (the exported tf.function, on the live model's variables).
    served = loaded.signatures["serving_default"](sentences=sentences)
    _assert_same(served, translator.translate(sentences))

    # Greedy: the reloaded signature vs `model.generate` in process.
    source_ids, outputs, expected = _greedy(translator)
    served = loaded.signatures["translate_greedy"](sentences=sentences)
    _assert_same(served, {"translations": tf.constant(expected), **outputs})

    # The cached greedy search agrees with the uncached, teacher-forced
    # forward pass: up to and including the first EOS, every generated token
    # is the argmax (over the tokens search may pick: never PAD or BOS).
    ids = outputs["ids"].numpy()
    target_in = np.concatenate(
        [np.full((len(ids), 1), model.bos_id, ids.dtype), ids[:, :-1]], axis=1
    )
    logits = model({"source": source_ids, "target": target_in}).numpy()
    logits[..., [model.pad_id, model.bos_id]] = -np.inf
    argmax = np.argmax(logits, axis=-1)
    real = np.cumsum(ids == model.eos_id, axis=1) - (ids == model.eos_id) == 0
    np.testing.assert_array_equal(argmax[real], ids[real])
