"""The `keras-transformer` command line (also `python -m keras_transformer`).

Commands:

- `demo`: train a small English->German number translator on the embedded
  corpus, report held-out exact match and BLEU, export it, translate.
- `train`: train a translator on `tsv:PATH`, `files:SRC,TGT`, `tfds:NAME`
  or `demo` data.
- `evaluate`: sacreBLEU and chrF of a trained model on a test set.
- `export`: write the SavedModel translator for TF Serving.
- `translate`: translate lines from stdin (or arguments) with an exported
  translator or a trained-model directory.
- `explain`, `plot-positions`: attention and positional-encoding pictures.

Errors in the user's input (bad data files, missing paths, unknown specs,
out-of-range or malformed arguments, a missing optional dependency) are
reported as one line on stderr, `keras-transformer CMD: error: ...`, with
exit status 2, never a traceback. Every argument is checked before any
model, data or file is touched: by its argparse `type` (the commands other
than `train`) or by `TrainConfig` (`train`).
"""

import argparse
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class UserError(Exception):
    """An error in the command's input, reported as one line."""


class _Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line, like `UserError`'s.

    It prints `PROG: error: MESSAGE` (argparse's wording, without the usage
    lines) and exits with status 2. Sub-command parsers are of this class.
    """

    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        self.exit(2)


def _checked_type(convert, valid, rule):
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


_positive_int = _checked_type(int, lambda n: n > 0, "must be a positive integer")
_positive_minutes = _checked_type(
    float,
    lambda x: math.isfinite(x) and x > 0,
    "must be a positive number of minutes",
)
_length_penalty = _checked_type(
    float,
    lambda x: math.isfinite(x) and x >= 0,
    "must be a non-negative number (GNMT alpha; 0: no length normalization)",
)
_input_tokens = _checked_type(
    int, lambda n: n >= 2, "must be at least 2 (a token and EOS)"
)


def _figure_path(text):
    """An argparse `type`: a path ending in one of the figure formats."""
    from keras_transformer.viz.plots import FIGURE_FORMATS

    if os.path.splitext(text)[1].lower() not in FIGURE_FORMATS:
        raise argparse.ArgumentTypeError(
            f"must be a {' or '.join(FIGURE_FORMATS)} file. Received: {text}"
        )
    return text


def _add_translate_options(parser):
    parser.add_argument(
        "--beam-size", type=_positive_int, default=4, help="1 = greedy."
    )
    parser.add_argument("--length-penalty", type=_length_penalty, default=0.6)


def build_parser():
    """The `keras-transformer` argument parser, one sub-command per job."""
    parser = _Parser(
        prog="keras-transformer",
        description="Train, evaluate, export and serve Transformer translators.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_demo_command(commands)
    _add_train_command(commands)
    _add_evaluate_command(commands)
    _add_export_command(commands)
    _add_translate_command(commands)
    _add_explain_command(commands)
    _add_plot_positions_command(commands)
    return parser


def _add_demo_command(commands):
    demo = commands.add_parser(
        "demo", help="Train the embedded English->German number translator."
    )
    demo.add_argument("--output", default="runs/demo", help="Output directory.")
    demo.add_argument(
        "--max-minutes",
        type=_positive_minutes,
        default=7.0,
        help="Training time budget.",
    )


def _add_train_command(commands):
    """`train`: one flag per `TrainConfig` setting declared with a flag."""
    from keras_transformer.training.config import TrainConfig
    from keras_transformer.training.config import add_setting_flags

    train = commands.add_parser("train", help="Train a translator.")
    add_setting_flags(train, TrainConfig)


def _add_evaluate_command(commands):
    evaluate = commands.add_parser("evaluate", help="sacreBLEU/chrF on a test set.")
    evaluate.add_argument("--model", required=True, metavar="DIR")
    evaluate.add_argument("--test", required=True, metavar="SPEC")
    _add_translate_options(evaluate)


def _add_export_command(commands):
    export = commands.add_parser("export", help="Write the SavedModel translator.")
    export.add_argument("--model", required=True, metavar="DIR")
    export.add_argument("--output", required=True, metavar="EXPORT_DIR")
    export.add_argument("--version", type=_positive_int, default=1)
    export.add_argument("--max-input-tokens", type=_input_tokens, default=256)
    _add_translate_options(export)


def _add_translate_command(commands):
    translate = commands.add_parser("translate", help="Translate sentences.")
    translate.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="An export directory (EXPORT_DIR or EXPORT_DIR/N) or a model DIR.",
    )
    translate.add_argument("--batch-size", type=_positive_int, default=32)
    translate.add_argument("sentences", nargs="*", help="Default: lines of stdin.")
    _add_translate_options(translate)


def _add_explain_command(commands):
    explain = commands.add_parser("explain", help="Plot attention weights.")
    explain.add_argument("--model", required=True, metavar="DIR")
    explain.add_argument("sentence")
    explain.add_argument(
        "--output", required=True, type=_figure_path, help="A .png or .svg file."
    )
    explain.add_argument("--layer", type=int, default=-1)
    explain.add_argument("--head", type=int)
    explain.add_argument(
        "--kind", default="encoder", choices=["encoder", "decoder", "cross"]
    )


def _add_plot_positions_command(commands):
    positions = commands.add_parser(
        "plot-positions", help="Plot the sinusoidal positional encoding."
    )
    positions.add_argument("--length", type=_positive_int, default=100)
    positions.add_argument("--d-model", type=_positive_int, default=512)
    positions.add_argument(
        "--output", required=True, type=_figure_path, help="A .png or .svg file."
    )


def _find_saved_model(directory):
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


def _batches(items, size):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_export(args):
    from keras_transformer.export import Translator
    from keras_transformer.export import export_translator

    model, source_tokenizer, target_tokenizer = _load_model_dir(args.model)
    _check_beam_size(model, args.beam_size)
    translator = Translator(
        model,
        source_tokenizer,
        target_tokenizer,
        beam_size=args.beam_size,
        length_penalty=args.length_penalty,
        max_input_tokens=args.max_input_tokens,
    )
    path = export_translator(translator, args.output, version=args.version)
    print(f"Exported the translator to {path}")
    return path


def _load_model_dir(directory):
    from keras_transformer import model_directory

    try:
        return model_directory.load_model_and_vocabularies(directory)
    except (FileNotFoundError, ValueError) as error:
        raise UserError(str(error)) from None


def _check_beam_size(model, beam_size):
    """Refuses a `--beam-size` too large for `model`'s vocabulary."""
    from keras_transformer.decoding.generation import check_search_arguments

    try:
        check_search_arguments(model, 1, beam_size, 1)
    except ValueError as error:
        raise UserError(f"argument --beam-size: {error}") from None


def run_translate(args):
    import tensorflow as tf

    sentences = args.sentences or [line.rstrip("\n") for line in sys.stdin]
    saved_model = _find_saved_model(args.model)
    if saved_model is not None:
        import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

        loaded = tf.saved_model.load(saved_model)
        name = "translate_greedy" if args.beam_size == 1 else "serving_default"
        function = loaded.signatures[name]
        translate = lambda batch: function(sentences=tf.constant(batch))
    else:
        from keras_transformer.export import Translator

        model, source_tokenizer, target_tokenizer = _load_model_dir(args.model)
        _check_beam_size(model, args.beam_size)
        translator = Translator(
            model,
            source_tokenizer,
            target_tokenizer,
            beam_size=args.beam_size,
            length_penalty=args.length_penalty,
        )
        translate = translator.translate
    for batch in _batches(sentences, args.batch_size):
        outputs = translate(tf.constant(batch, tf.string))
        for text in outputs["translations"].numpy():
            print(text.decode("utf-8"))


def run_evaluate(args):
    from keras_transformer.evaluation import evaluate_translator
    from keras_transformer.evaluation import format_scores

    model, source_tokenizer, target_tokenizer = _load_model_dir(args.model)
    _check_beam_size(model, args.beam_size)
    scores = evaluate_translator(
        model,
        source_tokenizer,
        target_tokenizer,
        _read_pairs(args.test),
        beam_size=args.beam_size,
        length_penalty=args.length_penalty,
    )
    print(format_scores(scores))
    return scores


def _read_pairs(spec, split="test"):
    from keras_transformer import data

    try:
        return list(data.parse_spec(spec, split=split))
    except data.DataError as error:
        raise UserError(str(error)) from None


def run_train(args):
    from keras_transformer.training.config import SettingError
    from keras_transformer.training.config import TrainConfig
    from keras_transformer.training.config import flag_error_message
    from keras_transformer.training.config import settings_from_flags

    try:
        config = TrainConfig(**settings_from_flags(args, TrainConfig))
    except SettingError as error:
        raise UserError(flag_error_message(TrainConfig, error)) from None
    return _train(config)


def _train(config):
    from keras_transformer import data
    from keras_transformer.training.trainer import SetupError
    from keras_transformer.training.trainer import train_translator

    try:
        return train_translator(config)
    except (data.DataError, FileNotFoundError, SetupError) as error:
        raise UserError(str(error)) from None


def run_demo(args):
    from keras_transformer.evaluation import evaluate_translator
    from keras_transformer.evaluation import format_scores
    from keras_transformer.training.trainer import demo_config

    started = time.time()
    config = demo_config(output=args.output, max_minutes=args.max_minutes)
    result = _train(config)
    model, source_tokenizer, target_tokenizer = _load_model_dir(args.output)
    scores = evaluate_translator(
        model,
        source_tokenizer,
        target_tokenizer,
        _read_pairs(config.train),
        beam_size=4,
        bleu_tokenize="char",
    )
    scores["wall_seconds"] = round(time.time() - started, 1)
    print(format_scores(scores, title="Held-out test numbers"))
    export_args = argparse.Namespace(
        model=args.output,
        output=os.path.join(args.output, "export"),
        version=1,
        max_input_tokens=64,
        beam_size=4,
        length_penalty=0.6,
    )
    path = run_export(export_args)
    examples = [
        "four thousand, two hundred and fifteen",
        "ninety-nine",
        "seven hundred and seventy-seven",
    ]
    translate_args = argparse.Namespace(
        model=path, sentences=examples, beam_size=4, batch_size=32, length_penalty=0.6
    )
    print("Translations by the exported SavedModel:")
    run_translate(translate_args)
    return {"train": result, "test": scores}


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError(
            'plotting needs matplotlib: pip install "keras-transformer[viz]"'
        ) from None


def run_explain(args):
    from keras_transformer import viz

    _require_matplotlib()
    model, source_tokenizer, target_tokenizer = _load_model_dir(args.model)
    try:
        viz.explain(
            model,
            source_tokenizer,
            target_tokenizer,
            args.sentence,
            kind=args.kind,
            layer=args.layer,
            head=args.head,
            output=args.output,
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    print(f"Wrote {args.output}")


def run_plot_positions(args):
    from keras_transformer import viz

    _require_matplotlib()
    try:
        viz.plot_positions(args.output, length=args.length, d_model=args.d_model)
    except ValueError as error:
        raise UserError(str(error)) from None
    print(f"Wrote {args.output}")


COMMANDS = {
    "demo": run_demo,
    "train": run_train,
    "evaluate": run_evaluate,
    "export": run_export,
    "translate": run_translate,
    "explain": run_explain,
    "plot-positions": run_plot_positions,
}


def main(argv=None):
    """Runs one command; returns its exit status (2: a one-line user error)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0), or a one-line parser error (2)
        return stop.code
    try:
        COMMANDS[args.command](args)
    except UserError as error:
        print(f"keras-transformer {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
