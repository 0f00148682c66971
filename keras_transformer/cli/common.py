"""What the command modules share: the one-line error, argument types and
loaders that turn library errors into `UserError`s.

Nothing here imports TensorFlow at module level, so `keras-transformer
--help` answers without loading it.
"""

import argparse
import math
import os
import sys


class UserError(Exception):
    """An error in the command's input, reported as one line."""


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line, like `UserError`'s.

    It prints `PROG: error: MESSAGE` (argparse's wording, without the usage
    lines) and exits with status 2. Sub-command parsers are of this class.
    """

    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        self.exit(2)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to each option's help that has a default and
    does not already say it (switches and unset defaults are left alone).
    A `training.config.FlagDefault` counts as its value."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        default = getattr(action.default, "value", action.default)
        if (
            action.option_strings
            and default not in (None, argparse.SUPPRESS)
            and not isinstance(default, bool)
            and "default" not in help_text.lower()
        ):
            help_text += " (default: %(default)s)"
        return help_text


def checked_type(convert, valid, rule):
    """An argparse `type`: `convert(text)`, refused unless `valid(value)`."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid {convert.__name__} value: {text!r}"
            ) from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"{rule}. Received: {text}")
        return value

    return parse


positive_int = checked_type(int, lambda n: n > 0, "must be a positive integer")
positive_minutes = checked_type(
    float,
    lambda x: math.isfinite(x) and x > 0,
    "must be a positive number of minutes",
)
length_penalty = checked_type(
    float,
    lambda x: math.isfinite(x) and x >= 0,
    "must be a non-negative number (GNMT alpha; 0: no length normalization)",
)
input_tokens = checked_type(
    int, lambda n: n >= 2, "must be at least 2 (a token and EOS)"
)


def figure_path(text):
    """An argparse `type`: a path ending in one of the figure formats."""
    from keras_transformer.viz.plots import FIGURE_FORMATS

    if os.path.splitext(text)[1].lower() not in FIGURE_FORMATS:
        raise argparse.ArgumentTypeError(
            f"must be a {' or '.join(FIGURE_FORMATS)} file. Received: {text}"
        )
    return text


def add_translate_options(parser):
    """`--beam-size` and `--length-penalty`, shared by the decoding commands."""
    parser.add_argument("--beam-size", type=positive_int, default=4, help="1 = greedy.")
    parser.add_argument(
        "--length-penalty",
        type=length_penalty,
        default=0.6,
        help="GNMT length penalty alpha of beam search (0: none).",
    )


def find_saved_model(directory):
    """`directory` itself, or its highest numbered version, if a SavedModel."""
    if os.path.exists(os.path.join(directory, "saved_model.pb")):
        return directory
    if not os.path.isdir(directory):
        return None
    versions = [v for v in os.listdir(directory) if v.isdigit()]
    for version in sorted(versions, key=int, reverse=True):
        candidate = os.path.join(directory, version)
        if os.path.exists(os.path.join(candidate, "saved_model.pb")):
            return candidate
    return None


def batches(items, size):
    """`items` in consecutive slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def load_model_dir(directory):
    """`(model, source_tokenizer, target_tokenizer)` of a trained-model DIR.

    The Keras objects are registered first: the command line defers the
    package's imports (see `keras_transformer.register_keras_objects`).
    """
    import keras_transformer
    from keras_transformer import model_directory

    keras_transformer.register_keras_objects()

    try:
        return model_directory.load_model_and_vocabularies(directory)
    except (FileNotFoundError, ValueError) as error:
        raise UserError(str(error)) from None


def check_beam_size(model, beam_size):
    """Refuses a `--beam-size` too large for `model`'s vocabulary."""
    from keras_transformer.decoding.generation import check_search_arguments

    try:
        check_search_arguments(model, 1, beam_size, 1)
    except ValueError as error:
        raise UserError(f"argument --beam-size: {error}") from None


def read_pairs(spec, split="test"):
    """The `(source, target)` pairs of a data SPEC, as a list."""
    from keras_transformer import data

    try:
        return list(data.parse_spec(spec, split=split))
    except data.DataError as error:
        raise UserError(str(error)) from None


def require_matplotlib():
    """Raises a `UserError` naming the extra to install without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError(
            'plotting needs matplotlib: pip install "keras-transformer[viz]"'
        ) from None


def output_file(text):
    """An argparse `type`: a file path that can be written (its folder exists)."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"is a directory, not a file: {text}")
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"no such directory: {folder}")
    return text


def load_ctranslate2_dir(directory):
    """A `CTranslate2Translator` of an exported CTranslate2 directory, or
    `None` when `directory` is not one. A missing `ctranslate2` is a
    `UserError` naming the extra to install."""
    from keras_transformer.export.ctranslate2 import CTranslate2Translator
    from keras_transformer.export.ctranslate2 import is_ctranslate2_dir

    if not is_ctranslate2_dir(directory):
        return None
    try:
        return CTranslate2Translator(directory)
    except ImportError as error:
        raise UserError(str(error)) from None
