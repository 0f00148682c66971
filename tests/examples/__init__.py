"""Tests of the example scripts under `examples/`."""

import importlib.util
import pathlib
import sys

EXAMPLES_DIR = pathlib.Path(__file__).resolve().parents[2] / "examples"


def load_example(path):
    """Imports `examples/<path>.py` once (e.g. `"custom_models/text_classifier"`).

    The module is registered in `sys.modules` (autograph reads its source
    from there) under a name derived from the path.
    """
    module_name = "keras_transformer_examples_" + path.replace("/", "_")
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            module_name, EXAMPLES_DIR / f"{path}.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    return sys.modules[module_name]
