import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transformer import Transformer

VOCAB = 40
SOURCE = np.array([[5, 6, 7, 8, 3, 0, 0], [9, 10, 11, 12, 13, 14, 3]], "int32")
TARGET_IN = np.array([[2, 15, 16, 17, 18, 0], [2, 19, 20, 21, 22, 23]], "int32")


def _tiny(**overrides):
    config = dict(num_layers=2, d_model=16, num_heads=2, d_ff=32, dropout=0.1)
    return Transformer(vocabulary_size=VOCAB, **{**config, **overrides})


def _logits(model, source=SOURCE, target=TARGET_IN):
    return np.asarray(model({"source": source, "target": target}))


def test_logits_shape_and_dtype():
    logits = _tiny()({"source": SOURCE, "target": TARGET_IN})
    assert logits.shape == (2, 6, VOCAB)
    assert logits.dtype == "float32"


@pytest.mark.parametrize("t", [1, 3, 5])
def test_future_target_tokens_do_not_change_earlier_logits(t):
    model = _tiny()
    changed = TARGET_IN.copy()
    changed[:, t:] = np.random.default_rng(t).integers(4, VOCAB, changed[:, t:].shape)
    before, after = _logits(model), _logits(model, target=changed)
    np.testing.assert_array_equal(before[:, :t], after[:, :t])
    assert not np.allclose(before[:, t:], after[:, t:])


@pytest.mark.parametrize("extra", [1, 3])
def test_source_padding_does_not_change_logits(extra):
    model = _tiny()
    padded = np.pad(SOURCE, ((0, 0), (0, extra)))
    np.testing.assert_allclose(_logits(model, source=padded), _logits(model), atol=1e-5)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_cached_decoding_equals_full_decoder_pass(jit_compile):
    model = _tiny(num_decoder_layers=3)
    full = _logits(model)
    source_mask = SOURCE != 0

    def step(ids, cache, index):
        return model.decode(
            ids, None, source_padding_mask=source_mask, cache=cache, cache_index=index
        )

    step = tf.function(step, jit_compile=True) if jit_compile else step
    cache = model.init_cache(model.encode(SOURCE), max_length=TARGET_IN.shape[1])
    logits = []
    for index in range(TARGET_IN.shape[1]):
        out, cache = step(TARGET_IN[:, index : index + 1], cache, tf.constant(index))
        logits.append(np.asarray(out))
    logits = np.concatenate(logits, axis=1)
    real = TARGET_IN != 0
    np.testing.assert_allclose(logits[real], full[real], atol=1e-5)


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"position_encoding": "rotary"},
        {"position_encoding": "relative", "max_relative_position": 3},
        {"position_encoding": "learned"},
        {"num_key_value_heads": 1},
    ],
)
@pytest.mark.parametrize("cache_dtype", [None, "float32"])
def test_cached_decoding_under_mixed_bfloat16_keeps_the_cache_dtype(
    cache_dtype, variant
):
    # Decoder, DecoderBlock and MultiHeadAttention do not autocast their call
    # arguments: a float32 cache stays float32 through `decode` (XLA:CPU
    # would otherwise convert a 16-bit cache in full at every step).
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = _tiny(num_decoder_layers=3, dropout=0.0, **variant)
    full = _logits(model)
    cache = model.init_cache(
        model.encode(SOURCE), max_length=TARGET_IN.shape[1], dtype=cache_dtype
    )
    expected = cache_dtype or "bfloat16"

    @tf.function(jit_compile=True, autograph=False)
    def step(ids, cache, index):
        return model.decode(
            ids, None, source_padding_mask=SOURCE != 0, cache=cache, cache_index=index
        )

    logits = []
    for index in range(TARGET_IN.shape[1]):
        out, cache = step(TARGET_IN[:, index : index + 1], cache, tf.constant(index))
        logits.append(np.asarray(out))
    for part in ("self", "cross"):
        for buffers in cache[part]:
            for buffer in buffers.values():
                assert keras.backend.standardize_dtype(buffer.dtype) == expected
    real = TARGET_IN != 0
    np.testing.assert_allclose(
        np.concatenate(logits, axis=1)[real], full[real], atol=0.1
    )


@pytest.mark.parametrize("num_heads, num_key_value_heads", [(2, None), (4, 2), (4, 1)])
@pytest.mark.parametrize("beam_size", [1, 3])
def test_cache_layout_and_size(num_heads, num_key_value_heads, beam_size):
    model = _tiny(num_heads=num_heads, num_key_value_heads=num_key_value_heads)
    model.build()
    max_length, (batch, source_length) = 9, SOURCE.shape
    cache = model.init_cache(model.encode(SOURCE), max_length, beam_size=beam_size)
    kv_heads, key_dim = num_key_value_heads or num_heads, 16 // num_heads
    assert len(cache["self"]) == len(cache["cross"]) == 2
    for block_cache in cache["self"]:  # one row per sentence, its beams' slots
        for name in ("key", "value"):
            shape = (batch, kv_heads, max_length * beam_size, key_dim)
            if beam_size == 1:
                shape = (batch, kv_heads, max_length, key_dim)
            assert block_cache[name].shape == shape
    if beam_size == 1:
        assert "ancestry" not in cache
    else:  # every row starts with its own history
        np.testing.assert_array_equal(
            cache["ancestry"],
            np.broadcast_to(
                np.arange(beam_size)[:, None], (batch, beam_size, max_length)
            ),
        )
    for block_cache in cache["cross"]:  # one row per sentence, shared by beams
        for name in ("key", "value"):
            assert block_cache[name].shape == (batch, kv_heads, source_length, key_dim)
    # Elements: 2 (K, V) x layers x rows x kv_heads x length x d_k, so
    # MQA/GQA shrink the cache by num_heads / num_key_value_heads.
    size = lambda part: sum(
        int(np.prod(b.shape)) for c in cache[part] for b in c.values()
    )
    assert size("self") == 2 * 2 * batch * beam_size * kv_heads * max_length * key_dim
    assert size("cross") == 2 * 2 * batch * kv_heads * source_length * key_dim


def _paper_parameter_count(vocab, n, d, d_ff):
    attention = 4 * (d * d + d)  # W_Q, W_K, W_V, W_O with biases
    ffn = d * d_ff + d_ff + d_ff * d + d
    norm = 2 * d
    encoder_layer = attention + ffn + 2 * norm
    decoder_layer = 2 * attention + ffn + 3 * norm
    return vocab * d + n * (encoder_layer + decoder_layer)


def test_base_preset_parameter_count():
    # One 37,000 x 512 matrix shared by source/target embeddings and the
    # pre-softmax projection: 18,944,000; 6 encoder layers 18,914,304; 6
    # decoder layers 25,224,192; total 63,082,496 (the paper rounds to 65M).
    model = Transformer.from_preset("base", vocabulary_size=37000)
    model.build()
    assert model.count_params() == 63_082_496
    assert model.count_params() == _paper_parameter_count(37000, 6, 512, 2048)


def test_big_preset_parameter_count():
    model = Transformer.from_preset("big", vocabulary_size=37000)
    model.build()
    assert model.count_params() == _paper_parameter_count(37000, 6, 1024, 4096)
    assert model.count_params() == 214_245_376  # paper: 213M


def test_presets_are_the_papers():
    base = Transformer.from_preset("base", vocabulary_size=100)
    assert (base.num_layers, base.d_model, base.num_heads, base.d_ff) == (
        6, 512, 8, 2048,
    )  # fmt: skip
    assert base.dropout == 0.1
    big = Transformer.from_preset("big", vocabulary_size=100, dropout=0.2)
    assert (big.d_model, big.num_heads, big.d_ff, big.dropout) == (1024, 16, 4096, 0.2)


def test_separate_vocabularies():
    model = Transformer(
        vocabulary_size=30, target_vocabulary_size=50, num_layers=1, d_model=16,
        num_heads=2, d_ff=32,
    )  # fmt: skip
    logits = model({"source": SOURCE % 30, "target": TARGET_IN})
    assert logits.shape == (2, 6, 50)
    assert model.source_embedding is not model.target_embedding


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"d_model": 500, "num_heads": 8},
            "d_model=500 is not divisible by num_heads=8",
        ),
        (
            {"target_vocabulary_size": 50, "share_embeddings": True},
            "vocabulary_size=40 != target_vocabulary_size=50",
        ),
        ({"vocabulary_size": 0}, "vocabulary_size"),
        ({"eos_id": 99}, "eos_id"),
    ],
)
def test_invalid_configuration(kwargs, message):
    config = dict(vocabulary_size=VOCAB, num_layers=1, d_model=16, num_heads=2, d_ff=8)
    with pytest.raises(ValueError, match=message):
        Transformer(**{**config, **kwargs})


def test_unknown_preset():
    with pytest.raises(ValueError, match="Unknown preset 'huge'"):
        Transformer.from_preset("huge", vocabulary_size=10)


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"source": SOURCE[0], "target": TARGET_IN}, "shape \\(batch_size, length\\)"),
        ({"source": SOURCE.astype("float32"), "target": TARGET_IN}, "integer"),
        ({"source": SOURCE}, "Missing: \\['target'\\]"),
    ],
)
def test_invalid_inputs(inputs, message):
    with pytest.raises(ValueError, match=message):
        _tiny()(inputs)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_fit_step(policy):
    keras.config.set_dtype_policy(policy)
    model = _tiny()
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(
        {"source": SOURCE, "target": TARGET_IN}, TARGET_IN, epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])
    logits = model({"source": SOURCE, "target": TARGET_IN})
    assert logits.dtype == "float32"
    assert all(w.dtype == "float32" for w in model.weights if "float" in w.dtype)


def test_keras_round_trip_in_a_fresh_process(tmp_path):
    model = _tiny(normalize_first=True, num_key_value_heads=1)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit({"source": SOURCE, "target": TARGET_IN}, TARGET_IN, epochs=2, verbose=0)
    path = tmp_path / "tiny.keras"
    model.save(path)
    expected = _logits(model)
    np.save(tmp_path / "inputs.npy", {"source": SOURCE, "target": TARGET_IN})
    script = textwrap.dedent(
        f"""
        import json, numpy as np, keras_transformer
        import keras
        model = keras.saving.load_model({str(path)!r})
        inputs = np.load({str(tmp_path / "inputs.npy")!r}, allow_pickle=True).item()
        logits = np.asarray(model(inputs, training=False))
        print(json.dumps({{"type": type(model).__name__,
                           "logits": logits.tolist()}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["type"] == "Transformer"
    np.testing.assert_array_equal(np.array(loaded["logits"], "float32"), expected)


VARIANTS = [
    {"position_encoding": "learned", "max_positions": 16},
    {"position_encoding": "rotary"},
    {"position_encoding": "relative", "max_relative_position": 3},
    {"num_key_value_heads": 1},
    {"normalize_first": True},
]


@pytest.mark.parametrize(
    "variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values()))
)
def test_variants_are_causal_cacheable_and_serializable(variant, tmp_path):
    model = _tiny(**variant)
    logits = _logits(model)
    # Causality.
    changed = TARGET_IN.copy()
    changed[:, 3:] = 30
    np.testing.assert_array_equal(_logits(model, target=changed)[:, :3], logits[:, :3])
    # Cached decoding under XLA equals the full pass.
    step = tf.function(
        lambda ids, cache, index: model.decode(
            ids, None, source_padding_mask=SOURCE != 0, cache=cache, cache_index=index
        ),
        jit_compile=True,
    )
    cache = model.init_cache(model.encode(SOURCE), max_length=TARGET_IN.shape[1])
    steps = []
    for index in range(TARGET_IN.shape[1]):
        out, cache = step(TARGET_IN[:, index : index + 1], cache, tf.constant(index))
        steps.append(np.asarray(out))
    real = TARGET_IN != 0
    np.testing.assert_allclose(np.concatenate(steps, 1)[real], logits[real], atol=1e-5)
    # Config and weights survive a .keras round trip.
    model.save(tmp_path / "variant.keras")
    loaded = keras.saving.load_model(tmp_path / "variant.keras")
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(_logits(loaded), logits)


@pytest.mark.parametrize("position_encoding", ["learned", "rotary", "relative"])
def test_variants_under_mixed_bfloat16(position_encoding):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = _tiny(position_encoding=position_encoding)
    logits = model({"source": SOURCE, "target": TARGET_IN})
    assert logits.dtype == "float32"
    assert np.all(np.isfinite(np.asarray(logits)))


def test_unknown_position_encoding():
    with pytest.raises(ValueError, match="position_encoding"):
        _tiny(position_encoding="alibi")


def test_variant_parameter_counts():
    base = _tiny()
    base.build()
    d, layers, dk = 16, 2, 8
    learned = _tiny(position_encoding="learned", max_positions=16)
    learned.build()
    assert learned.count_params() == base.count_params() + 2 * 16 * d
    relative = _tiny(position_encoding="relative", max_relative_position=3)
    relative.build()
    # a^K and a^V, (2k + 1) x d_k each, in every self-attention layer.
    assert relative.count_params() == base.count_params() + 2 * layers * 2 * 7 * dk
    rotary = _tiny(position_encoding="rotary")
    rotary.build()
    assert rotary.count_params() == base.count_params()
    mqa = _tiny(num_key_value_heads=1)
    mqa.build()
    # K and V projections shrink from d x d to d x d_k (+ biases), 3 per layer pair.
    per_attention = 2 * (d * d + d) - 2 * (d * dk + dk)
    assert mqa.count_params() == base.count_params() - 3 * layers * per_attention
