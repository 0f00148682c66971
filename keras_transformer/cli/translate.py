"""`keras-transformer translate`: lines from stdin or arguments."""

import sys

from keras_transformer.cli import common


def add_command(commands):
    translate = commands.add_parser("translate", help="Translate sentences.")
    translate.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="An export directory (EXPORT_DIR or EXPORT_DIR/N) or a model DIR.",
    )
    translate.add_argument("--batch-size", type=common.positive_int, default=32)
    translate.add_argument("sentences", nargs="*", help="Default: lines of stdin.")
    common.add_translate_options(translate)


def run(args):
    import tensorflow as tf

    sentences = args.sentences or [line.rstrip("\n") for line in sys.stdin]
    saved_model = common.find_saved_model(args.model)
    if saved_model is not None:
        import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

        loaded = tf.saved_model.load(saved_model)
        name = "translate_greedy" if args.beam_size == 1 else "serving_default"
        function = loaded.signatures[name]
        translate = lambda batch: function(sentences=tf.constant(batch))
    else:
        from keras_transformer.export import Translator

        model, source_tokenizer, target_tokenizer = common.load_model_dir(args.model)
        common.check_beam_size(model, args.beam_size)
        translator = Translator(
            model,
            source_tokenizer,
            target_tokenizer,
            beam_size=args.beam_size,
            length_penalty=args.length_penalty,
        )
        translate = translator.translate
    for batch in common.batches(sentences, args.batch_size):
        outputs = translate(tf.constant(batch, tf.string))
        for text in outputs["translations"].numpy():
            print(text.decode("utf-8"))
