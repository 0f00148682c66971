"""keras-transformer: the Transformer of "Attention Is All You Need" in Keras 3.

`import keras_transformer` registers every Keras object the package defines
(layers, the model, and the training loss, metrics and schedule), so that
every `.keras` file the library or its command line writes loads with
`keras.saving.load_model` afterwards.

The command line (`keras-transformer`, `python -m keras_transformer`)
defers those imports: its argument parsing, `--help` and argument errors
answer without loading TensorFlow, and each command imports what it uses.
"""

import os
import sys

from keras_transformer.lazy_imports import lazy_exports

__version__ = "0.1.0"

__all__ = ["Transformer", "layers"]

# Set (to "1") by the console script while it imports the command line.
DEFER_IMPORTS_VARIABLE = "KERAS_TRANSFORMER_DEFER_IMPORTS"


__getattr__, __dir__ = lazy_exports(
    __name__, {"Transformer": "models.transformer"}, globals()
)


def _imports_deferred():
    # `python -m keras_transformer` imports this package while sys.argv[0]
    # is still "-m" (see the documentation of `runpy`).
    return os.environ.get(DEFER_IMPORTS_VARIABLE) == "1" or sys.argv[:1] == ["-m"]


def register_keras_objects():
    """Imports every module that registers Keras objects: the layers, the
    model, and the training loss, metrics and schedule (what a compiled
    `.keras` file refers to). `import keras_transformer` calls it, unless the
    command line deferred it (the command line calls it before loading a
    model).
    """
    from keras_transformer import layers  # noqa: F401
    from keras_transformer.models import transformer  # noqa: F401
    from keras_transformer.training import losses  # noqa: F401
    from keras_transformer.training import metrics  # noqa: F401
    from keras_transformer.training import schedules  # noqa: F401


if not _imports_deferred():
    register_keras_objects()
    from keras_transformer import layers
    from keras_transformer.models.transformer import Transformer
