"""keras-transformer: the Transformer of "Attention Is All You Need" in Keras 3."""

from keras_transformer import layers

# `training` registers the schedule, loss and metrics, so that a compiled
# `.keras` file written by the library or its command line loads after
# `import keras_transformer`.
from keras_transformer import training
from keras_transformer.models.transformer import Transformer

__version__ = "0.1.0"

__all__ = ["Transformer", "layers"]
