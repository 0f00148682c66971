"""See inside a Transformer: attention heat maps and positional encodings.

- `attention_weights`: a model's attention weights for one sentence, per
  layer and head, read from the layers' own `return_attention_scores`.
- `plot_attention`: heat maps of one layer's heads, token labels on both axes.
- `plot_positional_encoding`: the positions x dimensions matrix of
  `SinusoidalPositionalEncoding`.
- `save_figure`: PNG or SVG by file extension.
- `explain`: tokenize a sentence, compute and plot its attention in one call;
  `explain_model_dir` and `plot_positions` back the `keras-transformer explain`
  and `plot-positions` commands.

Plotting needs matplotlib (`pip install "keras-transformer[viz]"`); it is
imported only when a figure is made, on the non-interactive Agg canvas (the
global pyplot backend is left alone).
"""

from keras_transformer.viz.attention import KINDS
from keras_transformer.viz.attention import attention_weights
from keras_transformer.viz.attention import explain
from keras_transformer.viz.attention import explain_model_dir
from keras_transformer.viz.attention import load_model_dir
from keras_transformer.viz.plots import plot_attention
from keras_transformer.viz.plots import plot_positional_encoding
from keras_transformer.viz.plots import plot_positions
from keras_transformer.viz.plots import positional_encoding
from keras_transformer.viz.plots import save_figure

__all__ = [
    "KINDS",
    "attention_weights",
    "explain",
    "explain_model_dir",
    "load_model_dir",
    "plot_attention",
    "plot_positional_encoding",
    "plot_positions",
    "positional_encoding",
    "save_figure",
]
