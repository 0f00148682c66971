"""`keras-transformer evaluate`: sacreBLEU and chrF on a test set."""

from keras_transformer.cli import common


def add_command(commands):
    evaluate = commands.add_parser("evaluate", help="sacreBLEU/chrF on a test set.")
    evaluate.add_argument("--model", required=True, metavar="DIR")
    evaluate.add_argument("--test", required=True, metavar="SPEC")
    common.add_translate_options(evaluate)


def run(args):
    from keras_transformer.evaluation import evaluate_translator
    from keras_transformer.evaluation import format_scores

    model, source_tokenizer, target_tokenizer = common.load_model_dir(args.model)
    common.check_beam_size(model, args.beam_size)
    scores = evaluate_translator(
        model,
        source_tokenizer,
        target_tokenizer,
        common.read_pairs(args.test),
        beam_size=args.beam_size,
        length_penalty=args.length_penalty,
    )
    print(format_scores(scores))
    return scores
