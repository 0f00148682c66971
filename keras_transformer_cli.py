"""The `keras-transformer` console script.

It lives outside the `keras_transformer` package so that it can tell the
package, before importing it, to defer its TensorFlow imports: `--help`
and argument errors then answer at once, and each command imports what it
uses.
"""

import os


def main(argv=None):
    """Runs `keras_transformer.cli.main(argv)`; returns its exit status."""
    os.environ["KERAS_TRANSFORMER_DEFER_IMPORTS"] = "1"
    try:
        from keras_transformer.cli import main as cli_main
    finally:
        del os.environ["KERAS_TRANSFORMER_DEFER_IMPORTS"]
    return cli_main(argv)
