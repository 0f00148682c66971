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

Errors in the user's input (bad data files, missing paths, unknown specs)
are reported as one line on stderr with exit status 2, never a traceback.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class UserError(Exception):
    """An error in the command's input, reported as one line."""


def _add_translate_options(parser):
    parser.add_argument("--beam-size", type=int, default=4, help="1 = greedy.")
    parser.add_argument("--length-penalty", type=float, default=0.6)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-transformer",
        description="Train, evaluate, export and serve Transformer translators.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="Train the embedded English->German number translator."
    )
    demo.add_argument("--output", default="runs/demo", help="Output directory.")
    demo.add_argument(
        "--max-minutes", type=float, default=7.0, help="Training time budget."
    )

    train = commands.add_parser("train", help="Train a translator.")
    train.add_argument("--train", required=True, metavar="SPEC")
    train.add_argument("--valid", metavar="SPEC")
    train.add_argument("--preset", default="tiny", choices=["tiny", "base", "big"])
    train.add_argument("--vocab-size", type=int, default=8000)
    train.add_argument("--separate-vocabularies", action="store_true")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--steps-per-epoch", type=int)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--batch-tokens", type=int)
    train.add_argument("--max-length", type=int, default=128)
    train.add_argument(
        "--bucket-boundaries",
        default="default",
        choices=["default", "fine"],
        help="length buckets: two per octave (default) or four (about half "
        "the padding, twice the batch shapes: best without XLA)",
    )
    train.add_argument("--warmup-steps", type=int, default=4000)
    train.add_argument("--learning-rate-scale", type=float, default=1.0)
    train.add_argument("--max-minutes", type=float)
    train.add_argument("--seed", type=int, default=1234)
    scale = train.add_argument_group("devices and fault tolerance")
    scale.add_argument(
        "--strategy",
        default="auto",
        choices=["auto", "tpu", "mirrored", "multiworker", "default"],
        help="tf.distribute strategy (auto: TPU if present, else all GPUs, "
        "else one device).",
    )
    scale.add_argument(
        "--tpu", metavar="NAME_OR_ADDRESS", help="TPU name or grpc:// address."
    )
    scale.add_argument("--steps-per-execution", type=int, default=1)
    scale.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="XLA-compile the train step (default: yes, except bf16 or "
        "several replicas on CPUs).",
    )
    scale.add_argument("--mixed-precision", choices=["mixed_bfloat16", "mixed_float16"])
    scale.add_argument(
        "--checkpoint-every",
        type=int,
        default=1000,
        metavar="N",
        help="Save weights, optimizer and data position every N batches (and "
        "at epoch ends; 0: at epoch ends only); rerun the same command to "
        "resume at the exact step.",
    )
    scale.add_argument("--keep-checkpoints", type=int, default=3, metavar="K")
    scale.add_argument(
        "--deterministic",
        action="store_true",
        help="Deterministic TF ops (reproducible runs; turns XLA off).",
    )
    train.add_argument("--output", required=True, metavar="DIR")

    evaluate = commands.add_parser("evaluate", help="sacreBLEU/chrF on a test set.")
    evaluate.add_argument("--model", required=True, metavar="DIR")
    evaluate.add_argument("--test", required=True, metavar="SPEC")
    _add_translate_options(evaluate)

    export = commands.add_parser("export", help="Write the SavedModel translator.")
    export.add_argument("--model", required=True, metavar="DIR")
    export.add_argument("--output", required=True, metavar="EXPORT_DIR")
    export.add_argument("--version", type=int, default=1)
    export.add_argument("--max-input-tokens", type=int, default=256)
    _add_translate_options(export)

    translate = commands.add_parser("translate", help="Translate sentences.")
    translate.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="An export directory (EXPORT_DIR or EXPORT_DIR/N) or a model DIR.",
    )
    translate.add_argument("--batch-size", type=int, default=32)
    translate.add_argument("sentences", nargs="*", help="Default: lines of stdin.")
    _add_translate_options(translate)

    explain = commands.add_parser("explain", help="Plot attention weights.")
    explain.add_argument("--model", required=True, metavar="DIR")
    explain.add_argument("sentence")
    explain.add_argument("--output", required=True, help="A .png or .svg file.")
    explain.add_argument("--layer", type=int, default=-1)
    explain.add_argument("--head", type=int)
    explain.add_argument(
        "--kind", default="encoder", choices=["encoder", "decoder", "cross"]
    )

    positions = commands.add_parser(
        "plot-positions", help="Plot the sinusoidal positional encoding."
    )
    positions.add_argument("--length", type=int, default=100)
    positions.add_argument("--d-model", type=int, default=512)
    positions.add_argument("--output", required=True, help="A .png or .svg file.")
    return parser


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

        translator = Translator(
            *_load_model_dir(args.model),
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
    from keras_transformer.training.trainer import TrainConfig

    make_config = lambda **kwargs: _checked(TrainConfig, **kwargs)
    config = make_config(
        train=args.train,
        valid=args.valid,
        output=args.output,
        preset=args.preset,
        vocab_size=args.vocab_size,
        shared_vocabulary=not args.separate_vocabularies,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        batch_tokens=args.batch_tokens,
        max_length=args.max_length,
        bucket_boundaries=args.bucket_boundaries,
        warmup_steps=args.warmup_steps,
        learning_rate_scale=args.learning_rate_scale,
        max_minutes=args.max_minutes,
        seed=args.seed,
        strategy=args.strategy,
        tpu=args.tpu,
        steps_per_execution=args.steps_per_execution,
        jit_compile=args.jit,
        mixed_precision=args.mixed_precision,
        checkpoint_every=args.checkpoint_every or None,
        keep_checkpoints=args.keep_checkpoints,
        deterministic=args.deterministic,
    )
    return _train(config)


def _checked(make, **kwargs):
    try:
        return make(**kwargs)
    except ValueError as error:
        raise UserError(str(error)) from None


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


def run_explain(args):
    from keras_transformer import viz

    try:
        viz.explain_model_dir(
            args.model,
            args.sentence,
            args.output,
            kind=args.kind,
            layer=args.layer,
            head=args.head,
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    print(f"Wrote {args.output}")


def run_plot_positions(args):
    from keras_transformer import viz

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
    args = build_parser().parse_args(argv)
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
