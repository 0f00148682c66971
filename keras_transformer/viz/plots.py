"""Heat maps of attention weights and of the sinusoidal positional encoding.

matplotlib is imported inside the functions, so `import keras_transformer.viz`
works without it. Figures are `matplotlib.figure.Figure` objects on an Agg
canvas (not pyplot figures): nothing is shown, no global backend is switched,
and nothing accumulates in pyplot's figure list.
"""

import math
import os

import numpy as np

from keras_transformer.layers.sinusoidal_positional_encoding import (
    SinusoidalPositionalEncoding,
)

FIGURE_FORMATS = (".png", ".svg")

# Inches per token of a heat map, and the smallest side of one heat map.
_INCHES_PER_TOKEN = 0.28
_MIN_PANEL_INCHES = 2.6
_MAX_COLUMNS = 4


def _new_figure(figsize):
    """A `Figure` attached to the Agg canvas, with constrained layout."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "Plotting needs matplotlib: pip install 'keras-transformer[viz]' "
            "(or pip install matplotlib)."
        ) from error
    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def token_labels(tokens, length=None, name="tokens"):
    """Turns tokens into a list of `str` labels.

    Args:
        tokens: `None` (labels are the positions), a list of `str`/`bytes`/
            ints, a numpy array, or a `tf.Tensor` of strings (e.g. the output
            of `SubwordTokenizer.id_to_piece`).
        length: optional int, the number of labels required.
        name: str, the argument name used in error messages.

    Returns:
        A list of `str`.
    """
    if tokens is None:
        if length is None:
            raise ValueError(f"`{name}` is None and no length was given.")
        return [str(index) for index in range(length)]
    if hasattr(tokens, "numpy"):
        tokens = tokens.numpy()
    tokens = np.asarray(tokens, dtype=object).reshape(-1).tolist()
    labels = [
        token.decode("utf-8", errors="replace")
        if isinstance(token, bytes)
        else str(token)
        for token in tokens
    ]
    if length is not None and len(labels) != length:
        raise ValueError(
            f"`{name}` has {len(labels)} tokens, but the weights have {length} "
            "positions on that axis."
        )
    return labels


def _select_heads(num_heads, heads):
    """`heads` (None, int or list of ints) -> list of non-negative indices."""
    if heads is None:
        return list(range(num_heads))
    selected = [heads] if isinstance(heads, int | np.integer) else list(heads)
    if not selected:
        raise ValueError("`heads` is empty; pass None for all heads.")
    resolved = []
    for head in selected:
        if isinstance(head, bool) or not isinstance(head, int | np.integer):
            raise ValueError(f"`heads` must be ints. Received: {heads!r}")
        if not -num_heads <= head < num_heads:
            raise ValueError(
                f"Head {head} is out of range: the weights have {num_heads} "
                f"head(s) (valid: 0..{num_heads - 1}, or negative from the end)."
            )
        resolved.append(int(head) % num_heads)
    return resolved


def plot_attention(weights, query_tokens=None, key_tokens=None, heads=None, title=None):
    """Heat maps of attention weights, one subplot per head, in one figure.

    Row `i`, column `j` of head `h` is how much query position `i` attends
    to key position `j` (rows sum to 1, masked keys are 0). Colors span
    `[0, 1]` in every subplot, so heads are comparable.

    Args:
        weights: array `(heads, query_length, key_length)` (one layer, e.g.
            `attention_weights(...)[layer]`) or `(query_length, key_length)`.
        query_tokens: labels of the rows (y axis): `str`s, `bytes` or a
            string tensor from `SubwordTokenizer.id_to_piece`. Defaults to
            the positions.
        key_tokens: labels of the columns (x axis), likewise.
        heads: `None` (all heads), an int, or a list of ints (negative
            indices count from the end).
        title: optional figure title.

    Returns:
        A `matplotlib.figure.Figure`. `figure.axes` starts with the heat maps
        in the order of `heads`; each holds its matrix as `ax.images[0]`.

    Example:

    >>> import numpy as np
    >>> figure = plot_attention(np.full((2, 3, 3), 1 / 3), ["a", "b", "c"],
    ...                         ["a", "b", "c"], title="uniform")
    >>> len(figure.axes[0].images), figure.axes[1].get_title()
    (1, 'head 1')
    """
    weights = np.asarray(weights, dtype=np.float32)
    if weights.ndim == 2:
        weights = weights[None]
        head_titles = [None]
        selected = [0]
        if heads not in (None, 0, -1, [0]):
            raise ValueError(
                f"2-D weights have a single head; received heads={heads!r}."
            )
    elif weights.ndim == 3:
        selected = _select_heads(weights.shape[0], heads)
        head_titles = [f"head {head}" for head in selected]
    else:
        raise ValueError(
            "`weights` must have shape (heads, query_length, key_length) or "
            f"(query_length, key_length). Received shape: {weights.shape}"
        )
    _, query_length, key_length = weights.shape
    query_labels = token_labels(query_tokens, query_length, "query_tokens")
    key_labels = token_labels(key_tokens, key_length, "key_tokens")

    panel_width = max(_MIN_PANEL_INCHES, _INCHES_PER_TOKEN * key_length + 1.2)
    panel_height = max(_MIN_PANEL_INCHES, _INCHES_PER_TOKEN * query_length + 1.0)
    # At most 4 columns, and no wider than about 16 inches.
    columns = max(1, min(len(selected), _MAX_COLUMNS, int(16 // panel_width)))
    rows = math.ceil(len(selected) / columns)
    figure = _new_figure((panel_width * columns + 1.0, panel_height * rows + 0.6))
    axes = figure.subplots(rows, columns, squeeze=False).reshape(-1)
    image = None
    for ax, head, head_title in zip(axes, selected, head_titles):
        image = ax.imshow(
            weights[head],
            cmap="viridis",
            vmin=0.0,
            vmax=1.0,
            aspect="auto",
            interpolation="nearest",
        )
        ax.set_xticks(range(key_length))
        ax.set_xticklabels(key_labels, rotation=90, fontsize=8)
        ax.set_yticks(range(query_length))
        ax.set_yticklabels(query_labels, fontsize=8)
        if head_title:
            ax.set_title(head_title)
    for ax in axes[len(selected) :]:
        ax.remove()
    figure.supxlabel("key (attended to)")
    figure.supylabel("query")
    figure.colorbar(image, ax=list(axes[: len(selected)]), shrink=0.8)
    if title:
        figure.suptitle(title)
    return figure


def positional_encoding(length=100, d_model=512, max_wavelength=10000):
    """The `(length, d_model)` float32 encoding, computed by the layer itself."""
    layer = SinusoidalPositionalEncoding(max_wavelength=max_wavelength)
    return np.asarray(layer(np.zeros((length, d_model), dtype=np.float32)))


def plot_positional_encoding(length=100, d_model=512, max_wavelength=10000, title=None):
    """The positional encoding as a positions x dimensions heat map.

    Like The Illustrated Transformer's figure: one row per position, one
    column per dimension (sine on even, cosine on odd dimensions), values in
    `[-1, 1]`. The matrix comes from `SinusoidalPositionalEncoding`, so it is
    exactly what the model adds to its embeddings.

    Args:
        length: int, number of positions (rows).
        d_model: int, model size (columns).
        max_wavelength: float, the layer's `max_wavelength` (10000 in the
            paper).
        title: optional title; a default one names the sizes.

    Returns:
        A `matplotlib.figure.Figure`; its matrix is `figure.axes[0].images[0]`.

    Example:

    >>> figure = plot_positional_encoding(length=20, d_model=16)
    >>> figure.axes[0].images[0].get_array().shape
    (20, 16)
    """
    for name, value in (("length", length), ("d_model", d_model)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{name}` must be a positive integer. Received: {name}={value}"
            )
    encoding = positional_encoding(length, d_model, max_wavelength)
    figure = _new_figure((min(12.0, 3.0 + d_model / 64), min(9.0, 2.5 + length / 25)))
    ax = figure.add_subplot()
    image = ax.imshow(
        encoding,
        cmap="RdBu",
        vmin=-1.0,
        vmax=1.0,
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_xlabel("dimension (even: sin, odd: cos)")
    ax.set_ylabel("position")
    figure.colorbar(image, ax=ax)
    ax.set_title(
        title
        or f"Sinusoidal positional encoding: {length} positions x {d_model} dimensions"
    )
    return figure


def save_figure(figure, path, dpi=150):
    """Writes `figure` as PNG or SVG, chosen by the file extension.

    Args:
        figure: a `matplotlib.figure.Figure`.
        path: str or path-like ending in `.png` or `.svg`; parent directories
            are created.
        dpi: int, resolution of PNG files.

    Returns:
        The path written, a `str`.
    """
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lower()
    if extension not in FIGURE_FORMATS:
        raise ValueError(
            f"Unsupported figure format {extension or '(none)'!r} for {path}; "
            f"use one of {', '.join(FIGURE_FORMATS)}."
        )
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    # No date/software metadata: the same figure gives the same file.
    metadata = {"Date": None} if extension == ".svg" else {"Software": None}
    figure.savefig(
        path, format=extension[1:], dpi=dpi, bbox_inches="tight", metadata=metadata
    )
    return path


def plot_positions(output, length=100, d_model=512, max_wavelength=10000):
    """`keras-transformer plot-positions`: plots the encoding into `output`.

    Args:
        output: `.png` or `.svg` path.
        length: int, positions. d_model: int, dimensions.
        max_wavelength: float.

    Returns:
        The `matplotlib.figure.Figure` that was saved.
    """
    figure = plot_positional_encoding(length, d_model, max_wavelength)
    save_figure(figure, output)
    return figure
