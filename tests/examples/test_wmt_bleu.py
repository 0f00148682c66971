"""examples/wmt/evaluate.py: the paper-style tokenized, compound-split BLEU."""

import sys

import pytest
import sacrebleu

from tests.examples import EXAMPLES_DIR
from tests.examples import load_example

sys.path.insert(0, str(EXAMPLES_DIR / "wmt"))
evaluate = load_example("wmt/evaluate")


@pytest.mark.parametrize(
    "line, expected",
    [
        ("rich-text format", "rich ##AT##-##AT## text format"),
        ("Max-Planck-Institut", "Max ##AT##-##AT## Planck ##AT##-##AT## Institut"),
        ("a-b-c-d", "a ##AT##-##AT## b-c ##AT##-##AT## d"),  # perl's s///g too
        ("a - b", "a - b"),
        ("-x x- --", "-x x- --"),
        ("EU-Kommission und US-Regierung", "EU ##AT##-##AT## Kommission und "
         "US ##AT##-##AT## Regierung"),
    ],
)  # fmt: skip
def test_split_compounds_matches_get_ende_bleu(line, expected):
    # perl -ple 's{(\S)-(\S)}{$1 ##AT##-##AT## $2}g': non-overlapping matches.
    assert evaluate.split_compounds(line) == expected


def test_tokenized_bleu():
    references = ["Die EU-Kommission hat das am Montag bestätigt.", "Guten Morgen!"]
    perfect = evaluate.tokenized_bleu(references, references)
    assert perfect["bleu"] == pytest.approx(100.0)
    assert "tok:none" in perfect["signature"] and "##AT##" in perfect["note"]
    hypotheses = ["Die EU-Kommission hat es am Montag bestätigt.", "Guten Morgen !"]
    split = evaluate.tokenized_bleu(hypotheses, references)["bleu"]
    intl = evaluate.tokenized_bleu(hypotheses, references, tokenizer="intl")["bleu"]
    detokenized = sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert 0 < split < 100 and 0 < intl < 100
    # Splitting the compound adds matching n-grams: higher than sacreBLEU here.
    assert split > detokenized


def test_translate_sorted_keeps_the_order():
    class Reverse:
        def translate(self, batch):
            import tensorflow as tf

            return {"translations": tf.strings.reduce_join(
                tf.strings.unicode_split(batch, "UTF-8")[:, ::-1], axis=-1)}  # fmt: skip

    sources = ["ccc", "a", "bb", "dddd", ""]
    assert evaluate.translate_sorted(Reverse(), sources, batch_size=2) == [
        "ccc", "a", "bb", "dddd", ""]  # fmt: skip
