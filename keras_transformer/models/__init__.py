"""Models built from keras_transformer layers."""

from keras_transformer.models.transformer import PRESETS
from keras_transformer.models.transformer import Transformer
