"""`keras-transformer translate`: lines from stdin or arguments."""

import math
import sys

from keras_transformer.cli import common

# The translator's defaults for a model DIR (the export's for an export).
DEFAULTS = {"beam_size": 4, "length_penalty": 0.6, "max_input_tokens": 256}
# Seeds are integers in [0, 2**32 - 1], as `train --seed`.
MAX_SEED = 2**32 - 1

temperature_type = common.checked_type(
    float, lambda x: math.isfinite(x) and x > 0, "must be a positive number"
)
top_p_type = common.checked_type(
    float, lambda x: 0 < x <= 1, "must be a number in (0, 1]"
)
seed_type = common.checked_type(
    int, lambda n: 0 <= n <= MAX_SEED, f"must be an integer in [0, {MAX_SEED}]"
)
SAMPLING_FLAGS = ("temperature", "top_k", "top_p", "seed")


def add_command(commands):
    translate = commands.add_parser("translate", help="Translate sentences.")
    translate.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="An export directory (EXPORT_DIR or EXPORT_DIR/N), a CTranslate2 "
        "export (export --format ctranslate2) or a model DIR.",
    )
    translate.add_argument(
        "--batch-size",
        type=common.positive_int,
        default=32,
        help="Sentences translated together. Default: 32.",
    )
    translate.add_argument("sentences", nargs="*", help="Default: lines of stdin.")
    translate.add_argument(
        "--beam-size",
        type=common.positive_int,
        default=None,
        help="1 = greedy. Default: 4 (an export: the beam it was exported with; "
        "1 selects its greedy signature).",
    )
    translate.add_argument(
        "--length-penalty",
        type=common.length_penalty,
        default=None,
        help="GNMT alpha of beam search. Default: 0.6 (an export: its own).",
    )
    translate.add_argument(
        "--max-input-tokens",
        type=common.input_tokens,
        default=None,
        help="Source tokens kept per sentence (EOS included); longer inputs are "
        "cut, with a warning. Default: 256 (an export: its own).",
    )
    sampling = translate.add_argument_group(
        "sampling (a model DIR, or an export made with these settings)"
    )
    sampling.add_argument(
        "--sampling",
        action="store_true",
        help="Draw each translation from the model instead of beam search "
        "(e.g. for back-translation).",
    )
    sampling.add_argument(
        "--temperature",
        type=temperature_type,
        default=None,
        help="Divides the logits: <1 sharper, >1 flatter. Default: 1.",
    )
    sampling.add_argument(
        "--top-k",
        type=common.positive_int,
        default=None,
        help="Draw from the K most probable tokens only. Default: all.",
    )
    sampling.add_argument(
        "--top-p",
        type=top_p_type,
        default=None,
        help="Nucleus sampling: draw from the most probable tokens whose "
        "probabilities first sum to P. Default: 1 (all).",
    )
    sampling.add_argument(
        "--seed",
        type=seed_type,
        default=None,
        help="The same seed gives the same translations. Default: random.",
    )


def run(args):
    import tensorflow as tf

    _check_sampling_flags(args)
    sentences = args.sentences or [line.rstrip("\n") for line in sys.stdin]
    saved_model = common.find_saved_model(args.model)
    ctranslate2 = common.load_ctranslate2_dir(args.model)
    if ctranslate2 is not None:
        translate, count_tokens, limit = _ctranslate2_translator(ctranslate2, args)
    elif saved_model is not None:
        translate, count_tokens, limit = _exported_translator(saved_model, args)
    else:
        translate, count_tokens, limit = _model_dir_translator(args)
    cut = []  # (line number, tokens) of the inputs cut to `limit`
    start = 0
    for batch in common.batches(sentences, args.batch_size):
        batch_tensor = tf.constant(batch, tf.string)
        if count_tokens is not None:
            counts = count_tokens(batch_tensor).numpy()
            cut += [(start + i + 1, int(n)) for i, n in enumerate(counts) if n > limit]
        outputs = translate(batch_tensor)
        for text in outputs["translations"].numpy():
            print(text.decode("utf-8"))
        start += len(batch)
    if cut:
        print(truncation_warning(cut, limit), file=sys.stderr)


def truncation_warning(cut, limit, shown=10):
    """The one-line warning for the inputs cut to `limit` tokens.

    Args:
        cut: `(line number, tokens)` of each cut input, in order.
        limit: int, the translator's maximum input tokens (EOS included).
        shown: int, the most inputs named.

    Returns:
        str, e.g. `keras-transformer translate: warning: 2 inputs were cut to
        the translator's 16 input tokens (EOS included): line 3 (40 tokens),
        line 9 (17 tokens)`.
    """
    named = ", ".join(f"line {line} ({tokens} tokens)" for line, tokens in cut[:shown])
    more = f", and {len(cut) - shown} more" if len(cut) > shown else ""
    inputs = "input was" if len(cut) == 1 else "inputs were"
    return (
        f"keras-transformer translate: warning: {len(cut)} {inputs} cut to the "
        f"translator's {limit} input tokens (EOS included): {named}{more}"
    )


def _check_sampling_flags(args):
    """Refuses sampling flags without `--sampling`, and a beam with it."""
    if not args.sampling:
        given = [name for name in SAMPLING_FLAGS if getattr(args, name) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise common.UserError(f"argument {flag}: applies only with --sampling")
    elif args.beam_size not in (None, 1):
        raise common.UserError(
            f"argument --beam-size: {args.beam_size} cannot be used with "
            "--sampling (it draws one translation per sentence)"
        )


def _model_dir_translator(args):
    """`(translate, count_tokens, limit)` of a Translator of a model DIR.

    It translates with `Translator.translate_fast` (the search compiled with
    XLA once per batch and source length bucket; `translate`'s outputs).
    """
    from keras_transformer.export import Translator

    model, source_tokenizer, target_tokenizer = common.load_model_dir(args.model)
    options = {
        name: DEFAULTS[name] if getattr(args, name) is None else getattr(args, name)
        for name in DEFAULTS
    }
    if args.sampling:
        options["beam_size"] = 1
        options.update(
            sampling=True,
            temperature=1.0 if args.temperature is None else args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
        )
        vocabulary = model.output_vocabulary_size
        if args.top_k is not None and args.top_k > vocabulary:
            raise common.UserError(
                f"argument --top-k: must be at most the model's vocabulary size "
                f"{vocabulary}. Received: {args.top_k}"
            )
    common.check_beam_size(model, options["beam_size"])
    translator = Translator(model, source_tokenizer, target_tokenizer, **options)
    return (
        translator.translate_fast,
        translator.count_source_tokens,
        translator.max_input_tokens,
    )


def _ctranslate2_translator(translator, args):
    """`(translate, count_tokens, limit)` of a CTranslate2 export.

    Its search settings are chosen per call, as with a model DIR; sampling
    is not offered there.
    """
    import numpy as np
    import tensorflow as tf

    if args.sampling:
        raise common.UserError(
            "argument --sampling: not offered for a CTranslate2 export; "
            "translate with the model DIR"
        )
    options = {
        name: DEFAULTS[name] if getattr(args, name) is None else getattr(args, name)
        for name in DEFAULTS
    }
    limit = min(options["max_input_tokens"], translator.metadata["max_positions"])

    def texts(batch):
        return [text.decode("utf-8") for text in batch.numpy()]

    def translate(batch):
        outputs = translator.translate(texts(batch), **options)
        return {"translations": tf.constant(outputs, tf.string)}

    def count_tokens(batch):
        encode = translator.source_processor.encode
        return tf.constant(np.array([len(encode(text)) + 1 for text in texts(batch)]))

    return translate, count_tokens, limit


def _exported_translator(saved_model, args):
    """`(translate, count_tokens, limit)` of an exported translator.

    Flags that differ from what the export was made with are refused: its
    beam, length penalty, input limit and sampling settings are fixed in
    the graph. `--beam-size 1` selects its `translate_greedy` signature.
    """
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

    loaded = tf.saved_model.load(saved_model)
    settings = exported_settings(loaded)
    greedy = args.beam_size == 1 and not args.sampling
    _check_against_export(args, settings, saved_model, greedy)
    function = loaded.signatures["translate_greedy" if greedy else "serving_default"]
    count_tokens = getattr(loaded, "count_source_tokens", None)
    limit = settings.get("max_input_tokens")
    return (
        lambda batch: function(sentences=batch),
        count_tokens if limit is not None else None,
        limit,
    )


def exported_settings(loaded):
    """The settings an exported translator was made with, as Python values.

    `{}` for an export written before translators recorded them.
    """
    if not hasattr(loaded, "settings"):
        return {}
    return {name: value.numpy().item() for name, value in loaded.settings().items()}


def _check_against_export(args, settings, path, greedy):
    """Refuses each explicit flag that differs from the export's setting."""
    if not settings:
        if args.beam_size not in (None, 1) or args.sampling:
            flag = "--sampling" if args.sampling else "--beam-size"
            raise common.UserError(
                f"argument {flag}: the translator exported at {path} fixes its "
                "search at export (this export does not record it); pass "
                "--beam-size 1 for its greedy signature, or a model DIR"
            )
        return
    exported = dict(settings)
    exported["sampling"] = bool(exported["sampling"])
    exported["top_k"] = exported["top_k"] or None
    exported["top_p"] = None if exported["top_p"] >= 1.0 else exported["top_p"]
    checked = ["max_input_tokens", "sampling"]
    if args.sampling:
        checked += ["temperature", "top_k", "top_p", "seed"]
    elif not greedy:
        checked += ["beam_size", "length_penalty"]
    for name in checked:
        value = getattr(args, name)
        if value is None or (name == "sampling" and not value):
            continue
        if not _same(value, exported[name]):
            raise common.UserError(
                f"argument {_flag(name)}: the translator exported at {path} was "
                f"made with {_describe(exported)}, fixed at export; translate "
                "with the model DIR to change it"
            )


def _same(value, exported):
    if isinstance(value, float) or isinstance(exported, float):
        return exported is not None and math.isclose(value, exported, rel_tol=1e-6)
    return value == exported


def _flag(name):
    return "--" + name.replace("_", "-")


def _describe(settings):
    """The export's search, as flags: "--beam-size 4 --length-penalty 0.6"."""
    if settings["sampling"]:
        names = ["sampling", "temperature", "top_k", "top_p", "seed"]
    else:
        names = ["beam_size", "length_penalty"]
    names.append("max_input_tokens")
    parts = []
    for name in names:
        value = settings[name]
        if name == "sampling":
            parts.append("--sampling")
        elif value is not None:
            value = round(value, 6) if isinstance(value, float) else value
            parts.append(f"{_flag(name)} {value}")
    return " ".join(parts)
