"""BLEU of a WMT run on newstest2014, as sacreBLEU and as the paper reported it.

    python examples/wmt/evaluate.py --model-dir runs/wmt-base

Decoding is the paper's (section 6.1): beam search with beam 4, length
penalty alpha = 0.6, at most input length + 50 output tokens (the library's
`Translator`). The test set is the tfds `test` split of
`wmt14_translate/de-en` (newstest2014) in the run's direction. Two scores are
printed, clearly labelled:

1. sacreBLEU on detokenized text (`tok:13a`), with its signature: the
   standard, comparable with other systems that report sacreBLEU.
2. Tokenized BLEU with compound splitting, the convention of
   tensor2tensor's `get_ende_bleu.sh` used for the paper-era English-German
   numbers: both sides tokenized (here with sacreBLEU's 13a tokenizer, or
   `--tok-bleu-tokenizer intl`, where t2t used the Moses tokenizer), every
   hyphenated compound `a-b` split as `a ##AT##-##AT## b`, then BLEU on those
   tokens (`tokenize="none"`, no smoothing, like `multi-bleu.perl`). Compare
   the paper's 27.3 (base) and 28.4 (big) with this one, never with 1.

Writes DIR/eval/<split>-<direction>-<checkpoint>.txt (one translation per
line) and .json (the scores).
"""

import argparse
import math
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sacrebleu  # noqa: E402
import tensorflow as tf  # noqa: E402
import wmt_common as common  # noqa: E402
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a  # noqa: E402
from sacrebleu.tokenizers.tokenizer_intl import TokenizerV14International  # noqa: E402

from keras_transformer.evaluation import score_translations  # noqa: E402
from keras_transformer.evaluation import translate_all  # noqa: E402
from keras_transformer.export import Translator  # noqa: E402

SPLIT_NAMES = {"test": "newstest2014", "valid": "newstest2013"}
TOKENIZERS = {"13a": Tokenizer13a, "intl": TokenizerV14International}
# t2t get_ende_bleu.sh: perl -ple 's{(\S)-(\S)}{$1 ##AT##-##AT## $2}g'
_COMPOUND = re.compile(r"(\S)-(\S)")


def split_compounds(line):
    """`rich-text` -> `rich ##AT##-##AT## text`, as t2t's `get_ende_bleu.sh`."""
    return _COMPOUND.sub(r"\1 ##AT##-##AT## \2", line)


def tokenized_bleu(hypotheses, references, tokenizer="13a"):
    """Tokenized, compound-split corpus BLEU (the paper-era convention).

    Returns:
        dict with `bleu`, `signature` and a `note` describing the procedure.
    """
    tokenize = TOKENIZERS[tokenizer]()

    def prepare(line):
        return split_compounds(tokenize(line.strip()))

    bleu = sacrebleu.metrics.BLEU(tokenize="none", smooth_method="none", force=True)
    score = bleu.corpus_score(
        [prepare(h) for h in hypotheses], [[prepare(r) for r in references]]
    )
    return {
        "bleu": score.score,
        "signature": str(bleu.get_signature()),
        "note": f"pre-tokenized with sacreBLEU {tokenizer}, compounds split "
        "a-b -> a ##AT##-##AT## b (t2t get_ende_bleu.sh), BLEU on tokens",
    }


def build_parser():
    parser = argparse.ArgumentParser(
        description="sacreBLEU and paper-style BLEU on newstest2014."
    )
    parser.add_argument("--model-dir", required=True)
    parser.add_argument(
        "--checkpoint",
        default="averaged",
        help="averaged (DIR/averaged.weights.h5, default), latest, or the "
        "path of a .weights.h5 file.",
    )
    parser.add_argument("--split", default="test", choices=sorted(SPLIT_NAMES))
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--length-penalty", type=float, default=0.6)
    parser.add_argument(
        "--max-extra-length",
        type=int,
        default=50,
        help="Output length limit: input length + this (paper: 50).",
    )
    parser.add_argument(
        "--max-input-tokens",
        type=int,
        default=1024,
        help="Longer test sentences are truncated (none of newstest2014 is).",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--max-sentences", type=int, help="Only the first N sentences (checks)."
    )
    parser.add_argument(
        "--tok-bleu-tokenizer",
        default="13a",
        choices=sorted(TOKENIZERS),
        help="Tokenizer of the paper-style tokenized BLEU.",
    )
    parser.add_argument(
        "--data-dir", help="TFDS data directory (as given to train.py)."
    )
    parser.add_argument("--no-download", action="store_true")
    common.add_mock_flag(parser)
    return parser


def translate_sorted(translator, sources, batch_size):
    """`translate_all` on the sources sorted by length (less padding)."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    translations = translate_all(translator, [sources[i] for i in order], batch_size)
    result = [""] * len(sources)
    for i, translation in zip(order, translations):
        result[i] = translation
    return result


def main(argv=None, log=print):
    """Returns the scores dict (also written to DIR/eval/...json)."""
    args = build_parser().parse_args(argv)
    config = common.require_config(args.model_dir)
    args.direction = config["direction"]
    model, tokenizer, weights = common.load_trained(args.model_dir, args.checkpoint)
    sources, references = _test_pairs(args)
    translator = Translator(
        model,
        tokenizer,
        tokenizer,
        beam_size=args.beam_size,
        length_penalty=args.length_penalty,
        max_input_tokens=args.max_input_tokens,
        max_extra_length=args.max_extra_length,
    )
    log(
        f"Translating {len(sources)} sentences of {SPLIT_NAMES[args.split]} "
        f"({args.direction}) with {weights}: beam {args.beam_size}, alpha "
        f"{args.length_penalty}, max length input + {args.max_extra_length}."
    )
    hypotheses = translate_sorted(translator, sources, args.batch_size)
    scores = score(args, hypotheses, references, weights)
    log(format_scores(scores))
    stem = _write_results(args, weights, hypotheses, scores)
    scores["translations_file"] = stem + ".txt"
    scores["scores_file"] = stem + ".json"
    log(f"Wrote {stem}.txt and {stem}.json.")
    return scores


def _test_pairs(args):
    """`(sources, references)` of `--split`, the first `--max-sentences`."""
    with common.mock_data(args.mock_examples):
        pairs = list(common.load_pairs(args, args.split))
    if args.max_sentences:
        pairs = pairs[: args.max_sentences]
    return [source for source, _ in pairs], [target for _, target in pairs]


def score(args, hypotheses, references, weights):
    """The scores dict: sacreBLEU, chrF and tokenized BLEU, with settings.

    Raises:
        RuntimeError: when a score is not a finite number.
    """
    detokenized = score_translations(hypotheses, references, "13a")
    tokenized = tokenized_bleu(hypotheses, references, args.tok_bleu_tokenizer)
    scores = {
        "test_set": SPLIT_NAMES[args.split],
        "direction": args.direction,
        "sentences": len(hypotheses),
        "weights": weights,
        "beam_size": args.beam_size,
        "length_penalty": args.length_penalty,
        "sacrebleu": detokenized["bleu"],
        "sacrebleu_signature": detokenized["bleu_signature"],
        "chrf": detokenized["chrf"],
        "chrf_signature": detokenized["chrf_signature"],
        "tokenized_bleu": tokenized["bleu"],
        "tokenized_bleu_signature": tokenized["signature"],
        "tokenized_bleu_note": tokenized["note"],
    }
    for key in ("sacrebleu", "chrf", "tokenized_bleu"):
        if not math.isfinite(scores[key]):
            raise RuntimeError(f"{key} is {scores[key]}")
    return scores


def format_scores(scores):
    """The scores of `score`, labelled, as printed."""
    return (
        f"{scores['test_set']} {scores['direction']}, {scores['sentences']} "
        "sentences:\n"
        f"  sacreBLEU, detokenized (standard)      {scores['sacrebleu']:6.2f}  "
        f"{scores['sacrebleu_signature']}\n"
        f"  chrF                                   {scores['chrf']:6.2f}  "
        f"{scores['chrf_signature']}\n"
        f"  tokenized BLEU, compound-split         {scores['tokenized_bleu']:6.2f}  "
        f"({scores['tokenized_bleu_note']}; the paper's convention: compare the "
        "paper's 27.3/28.4 with this one, not with sacreBLEU)"
    )


def _write_results(args, weights, hypotheses, scores):
    """Writes DIR/eval/<split>-<direction>-<checkpoint>.txt and .json.

    Returns:
        The path of both files without their extension.
    """
    name = os.path.basename(weights).replace(common.CHECKPOINT_SUFFIX, "")
    stem = common.join(
        args.model_dir, common.EVAL_DIR, f"{args.split}-{args.direction}-{name}"
    )
    tf.io.gfile.makedirs(os.path.dirname(stem))
    with tf.io.gfile.GFile(stem + ".txt", "w") as f:
        f.write("".join(h.replace("\n", " ") + "\n" for h in hypotheses))
    common.write_json(stem + ".json", scores)
    return stem


if __name__ == "__main__":
    sys.exit(common.run_cli(main, prog="evaluate.py"))
