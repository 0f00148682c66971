"""`keras-transformer score`: each pair's log-probability under the model.

Forced decoding (teacher forcing) of the reference, as fairseq's
`--score-reference` and OpenNMT's `score` do: to filter a noisy corpus, to
rerank candidates, to compare models on the same pairs. One output line per
pair, in the order of the SPEC, tab-separated:

```
LOG_PROB<TAB>NORMALIZED<TAB>TOKENS<TAB>SOURCE<TAB>TARGET
```

`LOG_PROB` is `log p(target | source)` (natural log, summed over the
target's subword tokens and EOS), `NORMALIZED` is `LOG_PROB / TOKENS` and
`TOKENS` the number of tokens scored. Tabs and line breaks inside a
sentence are written as spaces. A summary (pairs, tokens, perplexity) goes
to stderr.
"""

import math
import sys

from keras_transformer.cli import common


def add_command(commands):
    score = commands.add_parser(
        "score",
        help="Log-probability of each pair under the model (forced decoding).",
        description="Write each pair's log-probability under the model (forced "
        "decoding of the target): LOG_PROB<TAB>NORMALIZED<TAB>TOKENS<TAB>"
        "SOURCE<TAB>TARGET, one line per pair, in order. NORMALIZED is "
        "LOG_PROB divided by TOKENS (target subword tokens + EOS).",
    )
    score.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="A trained-model directory (from `keras-transformer train`).",
    )
    score.add_argument(
        "--test",
        required=True,
        metavar="SPEC",
        help="The pairs to score: tsv:PATH, files:SRC,TGT, tfds:NAME or demo.",
    )
    score.add_argument(
        "--output",
        type=common.output_file,
        metavar="FILE",
        help="Where to write the scores. Default: stdout.",
    )
    score.add_argument(
        "--batch-size",
        type=common.positive_int,
        default=64,
        metavar="N",
        help="Pairs per model call. Default: 64.",
    )


def run(args):
    from keras_transformer.evaluation import score_pairs
    from keras_transformer.evaluation import write_lines

    pairs = common.read_pairs(args.test)
    model, source_tokenizer, target_tokenizer = common.load_model_dir(args.model)
    try:
        scores = score_pairs(
            model,
            source_tokenizer,
            target_tokenizer,
            pairs,
            batch_size=args.batch_size,
        )
    except ValueError as error:
        raise common.UserError(str(error)) from None
    lines = [
        f"{log_prob:.6f}\t{normalized:.6f}\t{tokens}\t{_field(source)}\t{_field(target)}"
        for log_prob, normalized, tokens, (source, target) in zip(
            scores["log_prob"], scores["normalized"], scores["tokens"], pairs
        )
    ]
    if args.output:
        write_lines(args.output, lines)
    else:
        for line in lines:
            print(line)
    print(_summary(scores, args.output), file=sys.stderr)
    return scores


def _summary(scores, output):
    total = int(scores["tokens"].sum())
    mean = -scores["log_prob"].sum() / total if total else math.nan
    perplexity = math.exp(min(mean, 700.0))  # nan stays nan
    where = f"; wrote {output}" if output else ""
    return (
        f"Scored {len(scores['tokens'])} pairs, {total} target tokens: "
        f"perplexity {perplexity:.3f}{where}"
    )


def _field(text):
    """A sentence as one TSV field: tabs and line breaks become spaces."""
    return " ".join(text.replace("\t", " ").splitlines())
