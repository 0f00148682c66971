"""Prepares WMT 2014 English-German: the data, the shared BPE vocabulary, a report.

    python examples/wmt/prepare.py --model-dir runs/wmt-base

1. Downloads and prepares tfds `wmt14_translate/de-en` (about 4.5M training
   pairs; newstest2013 is the validation split, newstest2014 the test split)
   into `--data-dir`, unless it is there already.
2. Trains the shared SentencePiece BPE vocabulary (`--vocab-size`, paper
   ~37,000) on a seeded uniform sample of `--vocab-sample` training
   sentences and writes it to DIR/vocabulary. `train.py` does this step
   itself when DIR has no vocabulary, so running this script is optional;
   it lets the CPU-heavy step run before a TPU or GPUs are rented.
3. Reports, for the first `--report-batches` training batches, the padding
   and the real tokens per batch of the token-budget batching
   (`--batch-tokens`, `--max-length`), as `train.py` will see them.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import wmt_common as common  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(
        description="Prepare WMT 2014 English-German and its shared vocabulary."
    )
    parser.add_argument(
        "--model-dir", required=True, help="Local directory or gs:// URL."
    )
    common.add_data_flags(parser)
    common.add_vocabulary_flags(parser)
    common.add_batching_flags(parser)
    parser.add_argument(
        "--report-batches",
        type=int,
        default=200,
        help="Training batches to measure padding on (0: no report).",
    )
    common.add_mock_flag(parser)
    return parser


def main(argv=None, log=print):
    """Returns `{"vocab_size": int, "vocabulary": path, "batches": report}`."""
    args = build_parser().parse_args(argv)
    with common.mock_data(args.mock_examples):
        tokenizer = common.vocabulary(args.model_dir, args, log)
        result = {
            "vocab_size": tokenizer.vocab_size,
            "vocabulary": common.join(args.model_dir, common.VOCABULARY_DIR),
            "batches": None,
        }
        log(f"Vocabulary: {result['vocabulary']} ({tokenizer.vocab_size} pieces).")
        if args.report_batches:
            pairs = common.load_pairs(args, "train")
            if args.mock_examples:
                common.require_a_full_batch(pairs, tokenizer, args)
            dataset = common.make_dataset(
                pairs,
                tokenizer,
                args,
                training=True,
                seed=args.seed,
            )
            report = common.batch_report(dataset, args.report_batches)
            result["batches"] = report
            log(
                "Training batches: "
                + common.format_batch_report(report, args.batch_tokens)
            )
    return result


if __name__ == "__main__":
    sys.exit(common.run_cli(main, prog="prepare.py"))
