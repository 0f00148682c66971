"""The files `evaluate` (and `demo`) write: scores as JSON, hypotheses."""

import json

import pytest
import sacrebleu

from keras_transformer import __version__
from keras_transformer.evaluation import score_translations
from keras_transformer.evaluation import write_lines
from keras_transformer.evaluation import write_scores_json

HYPOTHESES = ["the cat sat on the mat", "a dog", "hello world"]
REFERENCES = ["the cat sat on the mat", "the dog", "hello world !"]


def test_scores_json_holds_the_scores_signatures_and_settings(tmp_path):
    scores = score_translations(HYPOTHESES, REFERENCES)
    scores["examples"] = list(zip(["s1"], REFERENCES[:1], HYPOTHESES[:1]))
    scores["hypotheses"] = HYPOTHESES
    scores["wall_seconds"] = 1.5
    path = tmp_path / "scores.json"
    write_scores_json(path, scores, {"beam_size": 4, "test": "tsv:t.tsv"})
    report = json.loads(path.read_text("utf-8"))
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    assert report == {
        "count": 3,
        "exact_match": pytest.approx(1 / 3),
        "bleu": pytest.approx(bleu.corpus_score(HYPOTHESES, [REFERENCES]).score),
        "bleu_signature": str(bleu.get_signature()),
        "chrf": pytest.approx(chrf.corpus_score(HYPOTHESES, [REFERENCES]).score),
        "chrf_signature": str(chrf.get_signature()),
        "wall_seconds": 1.5,
        "examples": [
            {"source": "s1", "reference": REFERENCES[0], "hypothesis": HYPOTHESES[0]}
        ],
        "keras_transformer_version": __version__,
        "settings": {"beam_size": 4, "test": "tsv:t.tsv"},
    }
    assert "tok:13a" in report["bleu_signature"]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_scores_json_refuses_a_dict_without_the_scores(tmp_path):
    with pytest.raises(ValueError, match=r"Missing: \['bleu_signature'"):
        write_scores_json(tmp_path / "s.json", {"count": 1, "exact_match": 1.0,
                                                "bleu": 1.0})  # fmt: skip
    assert not list(tmp_path.iterdir())


def test_write_lines_keeps_one_line_per_string(tmp_path):
    path = tmp_path / "hyp.txt"
    write_lines(path, ["ein", "", "zwei\ndrei", "vier\r\nfünf"])
    assert path.read_bytes().decode("utf-8") == "ein\n\nzwei drei\nvier fünf\n"
