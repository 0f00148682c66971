"""`keras-transformer export`: the SavedModel translator for TF Serving."""

from keras_transformer.cli import common


def add_command(commands):
    export = commands.add_parser("export", help="Write the SavedModel translator.")
    export.add_argument("--model", required=True, metavar="DIR")
    export.add_argument("--output", required=True, metavar="EXPORT_DIR")
    export.add_argument("--version", type=common.positive_int, default=1)
    export.add_argument("--max-input-tokens", type=common.input_tokens, default=256)
    common.add_translate_options(export)


def run(args):
    from keras_transformer.export import Translator
    from keras_transformer.export import export_translator

    model, source_tokenizer, target_tokenizer = common.load_model_dir(args.model)
    common.check_beam_size(model, args.beam_size)
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
