"""`keras-transformer demo` end to end, on a small slice of the demo corpus."""

import dataclasses
import json

import pytest

from keras_transformer import cli
from keras_transformer.cli import demo
from keras_transformer.training import trainer


@pytest.mark.slow
def test_demo_trains_scores_exports_and_translates(tmp_path, monkeypatch, capsys):
    real_config = trainer.demo_config

    def small_config(output, max_minutes):
        # The demo's settings on numbers 0..199 and one short epoch.
        config = real_config(output=output, max_minutes=max_minutes)
        return dataclasses.replace(
            config, train="demo:199", epochs=1, steps_per_epoch=4, bleu_sentences=0
        )

    monkeypatch.setattr(trainer, "demo_config", small_config)
    output = tmp_path / "demo"
    assert cli.main(["demo", "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert "Training finished: 4 of 4 steps" in out
    assert "Held-out test numbers" in out
    assert f"Exported the translator to {output / 'export' / '1'}" in out
    translations = out.split("Translations by the exported SavedModel:\n")[1]
    assert len(translations.splitlines()) == len(demo.EXAMPLES)
    scores = json.loads((output / "test_scores.json").read_text())
    assert scores["bleu_signature"].split("|")[3] == "tok:char"
    assert (output / "test_hypotheses.txt").exists()
