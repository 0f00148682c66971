"""The plotted matrices are the model's weights and the layer's encoding."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from keras_transformer import Transformer
from keras_transformer.layers import SinusoidalPositionalEncoding
from keras_transformer.special_tokens import EOS_ID
from keras_transformer.text import SubwordTokenizer
from keras_transformer.text import save_vocabularies
from keras_transformer.text import train_sentencepiece
from keras_transformer.viz import attention_weights
from keras_transformer.viz import explain
from keras_transformer.viz import explain_model_dir
from keras_transformer.viz import plot_attention
from keras_transformer.viz import plot_positional_encoding
from keras_transformer.viz import plot_positions
from keras_transformer.viz import save_figure

pytest.importorskip("matplotlib")

SENTENCES = ["one two three", "four five six", "seven eight nine ten"] * 40
GENERATE = {"max_length": 5, "jit_compile": False}


@pytest.fixture(scope="module")
def tokenizer():
    return SubwordTokenizer(train_sentencepiece(SENTENCES, 40, model_type="unigram"))


@pytest.fixture(scope="module")
def model(tokenizer):
    keras.utils.set_random_seed(5)
    model = Transformer(
        vocabulary_size=tokenizer.vocab_size, num_layers=2, d_model=16,
        num_heads=2, d_ff=32, dropout=0.0,
    )  # fmt: skip
    model.build()
    # Like a trained model, never predict padding (an untrained one may
    # generate nothing but padding): a zero embedding row gives logit 0.
    embeddings = model.target_embedding.embeddings
    embeddings.assign(ops.slice_update(embeddings, (0, 0), ops.zeros((1, 16))))
    return model


def _heat_maps(figure):
    """The heat maps' matrices, in subplot order (colorbars have no images)."""
    return [np.asarray(ax.images[0].get_array()) for ax in figure.axes if ax.images]


def _tick_labels(ax, axis):
    ticks = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [tick.get_text() for tick in ticks]


def test_plot_attention_shows_every_head():
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.ones(4), size=(3, 2)).astype("float32")  # (3, 2, 4)
    figure = plot_attention(weights, ["q0", "q1"], list("abcd"), title="all")
    maps = _heat_maps(figure)
    assert len(maps) == 3
    for head, matrix in enumerate(maps):
        np.testing.assert_array_equal(matrix, weights[head])
    first = figure.axes[0]
    assert _tick_labels(first, "x") == list("abcd")
    assert _tick_labels(first, "y") == ["q0", "q1"]
    assert [ax.get_title() for ax in figure.axes[:3]] == ["head 0", "head 1", "head 2"]
    assert figure._suptitle.get_text() == "all"

    figure = plot_attention(weights, None, None, heads=[2, 0])
    maps = _heat_maps(figure)
    np.testing.assert_array_equal(maps[0], weights[2])
    np.testing.assert_array_equal(maps[1], weights[0])
    assert _tick_labels(figure.axes[0], "x") == ["0", "1", "2", "3"]
    (matrix,) = _heat_maps(plot_attention(weights, heads=-1))
    np.testing.assert_array_equal(matrix, weights[2])
    (matrix,) = _heat_maps(plot_attention(weights[1], [b"x", b"y"], list("abcd")))
    np.testing.assert_array_equal(matrix, weights[1])


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((np.ones((2, 2, 2, 2)),), {}, "shape"),
        ((np.ones((2, 2, 3)), ["a"], None), {}, "query_tokens"),
        ((np.ones((2, 2, 3)), None, ["a"]), {}, "key_tokens"),
        ((np.ones((2, 2, 3)),), {"heads": 2}, "out of range"),
        ((np.ones((2, 2, 3)),), {"heads": []}, "empty"),
        ((np.ones((2, 3)),), {"heads": 1}, "single head"),
    ],
)
def test_plot_attention_rejects_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_attention(*args, **kwargs)


def test_save_figure_writes_png_and_svg(tmp_path):
    figure = plot_attention(np.full((2, 3, 3), 1 / 3), list("abc"), list("abc"))
    png = save_figure(figure, tmp_path / "sub" / "attention.png")
    svg = save_figure(figure, tmp_path / "attention.SVG")
    assert os.path.getsize(png) > 1000
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(svg, encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("<?xml") and "<svg" in text
    with pytest.raises(ValueError, match="format"):
        save_figure(figure, tmp_path / "attention.pdf")


def test_positional_encoding_plot_holds_the_layers_values(tmp_path):
    figure = plot_positional_encoding(length=100, d_model=512)
    matrix = np.asarray(figure.axes[0].images[0].get_array())
    assert matrix.shape == (100, 512)
    layer = SinusoidalPositionalEncoding()
    expected = np.asarray(layer(np.zeros((1, 100, 512), "float32")))[0]
    np.testing.assert_array_equal(matrix, expected)
    # ... which is the paper's formula: sin on even, cos on odd dimensions.
    position = np.arange(100)[:, None]
    angle = position / 10000 ** (2 * (np.arange(512) // 2) / 512)
    formula = np.where(np.arange(512) % 2 == 0, np.sin(angle), np.cos(angle))
    np.testing.assert_allclose(matrix, formula, atol=1e-5)
    assert figure.axes[0].get_ylabel() == "position"

    path = tmp_path / "pe.svg"
    figure = plot_positions(path, length=20, d_model=32, max_wavelength=100)
    assert path.stat().st_size > 1000
    expected = SinusoidalPositionalEncoding(100)(np.zeros((20, 32), "float32"))
    np.testing.assert_array_equal(figure.axes[0].images[0].get_array(), expected)
    with pytest.raises(ValueError, match="length"):
        plot_positional_encoding(length=0)


def test_explain_encoder(model, tokenizer, tmp_path):
    path = tmp_path / "attention.png"
    figure = explain(model, tokenizer, tokenizer, "two three one", output=path)
    assert path.stat().st_size > 1000
    ids = tokenizer.encode(["two three one"])[0] + [EOS_ID]
    weights = attention_weights(model, np.array(ids))
    maps = _heat_maps(figure)
    assert len(maps) == 2  # all heads of the last layer
    for head, matrix in enumerate(maps):
        np.testing.assert_array_equal(matrix, weights[-1, head])
    pieces = [p.decode() for p in tokenizer.id_to_piece(ids).numpy()]
    assert pieces[-1] == "</s>"
    assert _tick_labels(figure.axes[0], "x") == pieces
    assert _tick_labels(figure.axes[0], "y") == pieces
    assert "layer 1" in figure._suptitle.get_text()

    figure = explain(model, tokenizer, tokenizer, "two three one", layer=0, head=1)
    (matrix,) = _heat_maps(figure)
    np.testing.assert_array_equal(matrix, weights[0, 1])
    with pytest.raises(ValueError, match="out of range"):
        explain(model, tokenizer, tokenizer, "two", layer=2)


def test_explain_cross_attention_of_the_translation(model, tokenizer, tmp_path):
    sentence = "four five"
    figure = explain(
        model, tokenizer, tokenizer, sentence, kind="cross", head=0,
        output=tmp_path / "cross.svg", generate_kwargs=GENERATE,
    )  # fmt: skip
    weights, query_ids, key_ids = attention_weights(
        model,
        np.array(tokenizer.encode([sentence])[0] + [EOS_ID]),
        kind="cross",
        return_tokens=True,
        generate_kwargs=GENERATE,
    )
    (matrix,) = _heat_maps(figure)
    np.testing.assert_array_equal(matrix, weights[-1, 0])
    rows = [p.decode() for p in tokenizer.id_to_piece(query_ids).numpy()]
    columns = [p.decode() for p in tokenizer.id_to_piece(key_ids).numpy()]
    assert _tick_labels(figure.axes[0], "y") == rows
    assert _tick_labels(figure.axes[0], "x") == columns
    translation = tokenizer.decode([query_ids.tolist()])[0]
    assert f"-> {translation!r}" in figure._suptitle.get_text()
    assert (tmp_path / "cross.svg").stat().st_size > 1000


def test_explain_model_dir(model, tokenizer, tmp_path):
    model.save(tmp_path / "model.keras")
    save_vocabularies(tmp_path / "vocabulary", tokenizer, tokenizer)  # train layout
    path = tmp_path / "decoder.png"
    figure = explain_model_dir(
        tmp_path, "seven ten", path, kind="decoder", layer=0, head=None,
        generate_kwargs=GENERATE,
    )  # fmt: skip
    assert path.stat().st_size > 1000
    ids = np.array(tokenizer.encode(["seven ten"])[0] + [EOS_ID])
    weights = attention_weights(model, ids, kind="decoder", generate_kwargs=GENERATE)
    maps = _heat_maps(figure)
    assert len(maps) == 2
    for head, matrix in enumerate(maps):
        np.testing.assert_allclose(matrix, weights[0, head], atol=1e-6)
        assert (matrix[np.triu(np.ones(matrix.shape, bool), 1)] == 0).all()
    assert _tick_labels(figure.axes[0], "y")[0] == "<s>"
    with pytest.raises(ValueError, match="not found"):
        explain_model_dir(tmp_path / "missing", "seven", path)


def test_weights_without_matplotlib():
    # Keras imports matplotlib itself when it is installed, so hide it: the
    # package and the weights must work without it, and plotting must say
    # what to install.
    script = (
        "import sys\n"
        "sys.modules['matplotlib'] = None\n"
        "import numpy as np, keras_transformer, keras_transformer.viz as viz\n"
        "model = keras_transformer.Transformer(20, num_layers=1, d_model=8,\n"
        "                                      num_heads=2, d_ff=8)\n"
        "print(viz.attention_weights(model, np.array([5, 6, 3])).shape)\n"
        "try:\n"
        "    viz.plot_positional_encoding(4, 4)\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    lines = result.stdout.strip().splitlines()
    assert lines[-2] == "(1, 2, 3, 3)"
    assert "pip install" in lines[-1] and "matplotlib" in lines[-1]
