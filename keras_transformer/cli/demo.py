"""`keras-transformer demo`: the main job on the embedded corpus."""

import os
import time

from keras_transformer.cli import common
from keras_transformer.cli import export
from keras_transformer.cli import train
from keras_transformer.cli import translate

EXAMPLES = [
    "four thousand, two hundred and fifteen",
    "ninety-nine",
    "seven hundred and seventy-seven",
]


def add_command(commands):
    demo = commands.add_parser(
        "demo", help="Train the embedded English->German number translator."
    )
    demo.add_argument("--output", default="runs/demo", help="Output directory.")
    demo.add_argument(
        "--max-minutes",
        type=common.positive_minutes,
        default=7.0,
        help="Training time budget.",
    )


def run(args):
    """Trains, scores on the held-out test split, exports and translates."""
    from keras_transformer.evaluation import evaluate_translator
    from keras_transformer.evaluation import format_scores
    from keras_transformer.training.trainer import demo_config

    started = time.time()
    config = demo_config(output=args.output, max_minutes=args.max_minutes)
    result = train.train(config)
    model, source_tokenizer, target_tokenizer = common.load_model_dir(args.output)
    scores = evaluate_translator(
        model,
        source_tokenizer,
        target_tokenizer,
        common.read_pairs(config.train),
        beam_size=4,
        bleu_tokenize="char",
    )
    scores["wall_seconds"] = round(time.time() - started, 1)
    print(format_scores(scores, title="Held-out test numbers"))
    _write_scores(args.output, config, scores)
    export_dir = os.path.join(args.output, "export")
    export_flags = ["--max-input-tokens", "64", "--beam-size", "4"]
    export_args = _command_args(
        "export", "--model", args.output, "--output", export_dir, *export_flags
    )
    path = export.run(export_args)
    translate_args = _command_args("translate", "--model", path, *EXAMPLES)
    print("Translations by the exported SavedModel:")
    translate.run(translate_args)
    return {"train": result, "test": scores}


def _command_args(*argv):
    """The parsed arguments of another command, with all its defaults."""
    from keras_transformer.cli import build_parser

    return build_parser().parse_args(list(argv))


def _write_scores(output, config, scores):
    """Keeps the held-out scores and translations beside the model."""
    from keras_transformer.evaluation import write_lines
    from keras_transformer.evaluation import write_scores_json

    scores_path = os.path.join(output, "test_scores.json")
    settings = {
        "model": os.path.abspath(output),
        "test": f"{config.train} (test split)",
        "beam_size": 4,
        "length_penalty": 0.6,
    }
    write_scores_json(scores_path, scores, settings)
    write_lines(os.path.join(output, "test_hypotheses.txt"), scores["hypotheses"])
    print(f"Wrote the scores to {scores_path}")
