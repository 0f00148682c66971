"""The `keras-transformer` command line (also `python -m keras_transformer`).

Commands (one module each in this package):

- `demo`: train a small English->German number translator on the embedded
  corpus, report held-out exact match and BLEU, export it, translate.
- `train`: train a translator on `tsv:PATH`, `files:SRC,TGT`, `tfds:NAME`
  or `demo` data.
- `evaluate`: sacreBLEU and chrF of a trained model on a test set.
- `score`: each pair's log-probability under the model (forced decoding).
- `average`: the average of the last N checkpoints of a training run.
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
import sys

from keras_transformer.cli import average
from keras_transformer.cli import common
from keras_transformer.cli import console
from keras_transformer.cli import demo
from keras_transformer.cli import evaluate
from keras_transformer.cli import export
from keras_transformer.cli import plots
from keras_transformer.cli import score
from keras_transformer.cli import train
from keras_transformer.cli import translate
from keras_transformer.cli.common import Parser
from keras_transformer.cli.common import UserError

# name: (adds its parser, runs it)
_COMMAND_TABLE = {
    "demo": (demo.add_command, demo.run),
    "train": (train.add_command, train.run),
    "evaluate": (evaluate.add_command, evaluate.run),
    "score": (score.add_command, score.run),
    "average": (average.add_command, average.run),
    "export": (export.add_command, export.run),
    "translate": (translate.add_command, translate.run),
    "explain": (plots.add_explain_command, plots.run_explain),
    "plot-positions": (plots.add_plot_positions_command, plots.run_plot_positions),
}
COMMANDS = {name: runner for name, (_, runner) in _COMMAND_TABLE.items()}


def build_parser():
    """The `keras-transformer` argument parser, one sub-command per job."""
    parser = Parser(
        prog="keras-transformer",
        description="Train, evaluate, export and serve Transformer translators.",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Show TensorFlow's log lines and Python warnings (hidden by "
        f"default; also {console.VERBOSE_VARIABLE}=1).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for add_command, _ in _COMMAND_TABLE.values():
        add_command(commands)
    for command in commands.choices.values():
        command.formatter_class = common.DefaultsHelpFormatter
        command.add_argument(
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="As `keras-transformer --verbose`.",
        )
    return parser


def main(argv=None):
    """Runs one command; returns its exit status (2: a one-line user error)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0), or a one-line parser error (2)
        return stop.code
    verbose = console.verbose_requested(args.verbose)
    console.configure(verbose)
    try:
        with console.quiet_stderr(enabled=not verbose):
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
