"""`keras-transformer export`: the SavedModel translator for TF Serving, or a
CTranslate2 model directory."""

import os

from keras_transformer.cli import common

FORMATS = ("saved_model", "ctranslate2")
# The weight types offered on the command line (the library takes all of
# CTranslate2's, see `keras_transformer.export.ctranslate2.QUANTIZATIONS`).
QUANTIZATIONS = ("int8", "int8_float32", "float16", "float32")


def add_command(commands):
    export = commands.add_parser(
        "export",
        help="Write the SavedModel translator (TF Serving) or a CTranslate2 model.",
    )
    export.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="A trained-model directory (written by train or average).",
    )
    export.add_argument(
        "--output",
        required=True,
        metavar="OUT",
        help="saved_model: the base path TF Serving watches (versions are "
        "written below it); ctranslate2: a new (or empty) directory.",
    )
    export.add_argument(
        "--format",
        choices=FORMATS,
        default="saved_model",
        help="Default: saved_model.",
    )
    export.add_argument(
        "--version",
        type=common.positive_int,
        default=None,
        help="saved_model only: the version sub-directory, which must not "
        "exist. Default: the next version number (1, 2, ...).",
    )
    export.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        default=None,
        help="ctranslate2 only: the type of the saved weights. Default: "
        "float32, as trained.",
    )
    export.add_argument(
        "--max-input-tokens",
        type=common.input_tokens,
        default=256,
        help="saved_model only: source tokens kept per sentence. Default: 256.",
    )
    export.add_argument(
        "--xla-warmup",
        action="store_true",
        help="saved_model only: TF Serving's warm-up file also compiles every "
        "bucket of the XLA signatures (for a server started with "
        "--xla_cpu_compilation_enabled=true on CPUs; one without it would "
        "fail to load the model).",
    )
    common.add_translate_options(export)


def _check_format_options(args):
    """Refuses the options that do not apply to the chosen format."""
    fmt = getattr(args, "format", "saved_model")
    if fmt != "ctranslate2" and getattr(args, "quantization", None) is not None:
        raise common.UserError(
            "argument --quantization: applies to --format ctranslate2 only"
        )
    if fmt == "ctranslate2" and getattr(args, "version", None) is not None:
        raise common.UserError("argument --version: applies to --format saved_model")
    if fmt == "ctranslate2" and getattr(args, "xla_warmup", False):
        raise common.UserError("argument --xla-warmup: applies to --format saved_model")
    return fmt


def run(args):
    fmt = _check_format_options(args)
    if fmt == "ctranslate2":
        return _run_ctranslate2(args)
    return _run_saved_model(args)


def _run_saved_model(args):
    from keras_transformer.export import Translator
    from keras_transformer.export import export_translator
    from keras_transformer.export import next_version

    version = getattr(args, "version", None)
    if version is not None:
        existing = os.path.join(args.output, str(version))
        if os.path.exists(existing):
            raise common.UserError(
                f"version {version} already exists: {existing} (omit --version "
                f"to write the next one, {next_version(args.output)})"
            )
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
    try:
        path = export_translator(
            translator,
            args.output,
            version=version,
            xla_warmup=getattr(args, "xla_warmup", False),
        )
    except FileExistsError as error:
        raise common.UserError(str(error)) from None
    print(f"Exported the translator to {path}")
    return path


def _run_ctranslate2(args):
    from keras_transformer.export.ctranslate2 import import_ctranslate2

    try:
        import_ctranslate2()
    except ImportError as error:
        raise common.UserError(str(error)) from None
    output = os.fspath(args.output)
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise common.UserError(
            f"{output} exists and is not empty; CTranslate2 exports go to a "
            "new directory (nothing is overwritten)"
        )
    from keras_transformer.export import to_ctranslate2

    model, source_tokenizer, target_tokenizer = common.load_model_dir(args.model)
    try:
        path = to_ctranslate2(
            model,
            source_tokenizer,
            target_tokenizer,
            output,
            quantization=getattr(args, "quantization", None),
        )
    except (ValueError, FileExistsError) as error:
        raise common.UserError(str(error)) from None
    quantization = getattr(args, "quantization", None) or "float32"
    print(f"Exported a CTranslate2 model ({quantization} weights) to {path}")
    return path
