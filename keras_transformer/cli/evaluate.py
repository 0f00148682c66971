"""`keras-transformer evaluate`: sacreBLEU and chrF on a test set.

The scores are printed, and written with `--output-json FILE` (exact match,
BLEU and chrF with their sacreBLEU signatures, and the settings); the
translations are written one per line with `--hypotheses FILE`.
"""

import os

from keras_transformer.cli import common


def add_command(commands):
    evaluate = commands.add_parser("evaluate", help="sacreBLEU/chrF on a test set.")
    evaluate.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="A model directory (written by train or average) or a CTranslate2 "
        "export (export --format ctranslate2).",
    )
    evaluate.add_argument(
        "--test",
        required=True,
        metavar="SPEC",
        help="The test pairs: tsv:PATH, files:SRC,TGT, tfds:NAME or demo.",
    )
    common.add_translate_options(evaluate)
    evaluate.add_argument(
        "--output-json",
        type=common.output_file,
        metavar="FILE",
        help="Also write the scores, their sacreBLEU signatures and the "
        "settings to FILE (JSON).",
    )
    evaluate.add_argument(
        "--hypotheses",
        type=common.output_file,
        metavar="FILE",
        help="Also write the translations to FILE, one per line, in test order.",
    )


def run(args):
    from keras_transformer.evaluation import evaluate_translator
    from keras_transformer.evaluation import format_scores
    from keras_transformer.evaluation import write_lines
    from keras_transformer.evaluation import write_scores_json

    pairs = common.read_pairs(args.test)
    scores = _ctranslate2_scores(args, pairs)
    if scores is None:
        model, source_tokenizer, target_tokenizer = common.load_model_dir(args.model)
        common.check_beam_size(model, args.beam_size)
        scores = evaluate_translator(
            model,
            source_tokenizer,
            target_tokenizer,
            pairs,
            beam_size=args.beam_size,
            length_penalty=args.length_penalty,
        )
    print(format_scores(scores))
    if args.output_json:
        settings = {
            "model": os.path.abspath(args.model),
            "test": args.test,
            "beam_size": args.beam_size,
            "length_penalty": args.length_penalty,
        }
        write_scores_json(args.output_json, scores, settings)
        print(f"Wrote the scores to {args.output_json}")
    if args.hypotheses:
        write_lines(args.hypotheses, scores["hypotheses"])
        print(f"Wrote {len(scores['hypotheses'])} translations to {args.hypotheses}")
    return scores


def _ctranslate2_scores(args, pairs):
    """The scores of a CTranslate2 export (`export --format ctranslate2`), or
    `None` when `--model` is not one."""
    from keras_transformer.evaluation import evaluate_translations

    translator = common.load_ctranslate2_dir(args.model)
    if translator is None:
        return None
    return evaluate_translations(
        lambda sources: translator.translate(
            sources, beam_size=args.beam_size, length_penalty=args.length_penalty
        ),
        pairs,
    )
