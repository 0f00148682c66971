"""`benchmarks/serving.py` runs end to end on a small trained model.

A smoke run (8 demo test sentences, one round, no idle wait) of the paths
that need no XLA compilation: `serving_default` and both CTranslate2
exports, each in its own worker process. It keeps the benchmark from
rotting; the numbers it prints are not measurements.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import sacrebleu
import sentencepiece as spm

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "serving.py"
PATHS = ("serving_default", "ctranslate2", "ctranslate2_int8")
SKIP = "translate_xla,translate,translate_fast,generate"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(small_model_dir, tmp_path_factory):
    pytest.importorskip("ctranslate2")
    folder = tmp_path_factory.mktemp("serving")
    output = folder / "serving.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(small_model_dir),
         "--sentences", "8", "--latency-sentences", "2", "--rounds", "1",
         "--idle-wait", "0", "--skip", SKIP, "--workdir", str(folder / "work"),
         "--output-json", str(output)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, (
        completed.stdout[-3000:] + completed.stderr[-3000:]
    )
    return completed.stdout, json.loads(output.read_text()), small_model_dir


def test_table_rows(run):
    stdout, _, _ = run
    rows = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| path | sentences/s")
    labels = [row.split(" | ")[0].strip("| *") for row in rows[1:]]
    assert labels == [
        "SavedModel `serving_default`",
        "CTranslate2 float32",
        "CTranslate2 int8",
    ]
    assert f"{os.cpu_count()} cores; load average" in stdout


def test_numbers(run):
    from keras_transformer.data.demo import demo_pairs

    _, record, model_dir = run
    config = json.loads((model_dir / "train_config.json").read_text())
    assert record["bleu_tokenize"] == (config.get("bleu_tokenize") or "13a")
    assert record["sentences"] == 8
    assert list(record["results"]) == list(PATHS)
    references = [target for _, target in list(demo_pairs("test"))[:8]]
    manifest = json.loads((model_dir / "vocabulary" / "vocabularies.json").read_text())
    target_file = manifest["target"]["file"]
    processor = spm.SentencePieceProcessor(
        model_file=str(model_dir / "vocabulary" / target_file)
    )
    for name, row in record["results"].items():
        assert row["status"] == "ok", (name, row)
        outputs = row["outputs"]
        assert len(outputs) == 8
        bleu = sacrebleu.metrics.BLEU(tokenize=record["bleu_tokenize"])
        assert row["bleu"] == pytest.approx(
            bleu.corpus_score(outputs, [references]).score
        )
        tokens = sum(len(processor.encode(text)) for text in outputs)
        assert row["target_tokens"] == tokens
        assert row["sentences_per_s"] > 0 and row["latency_ms"] > 0
        assert row["tokens_per_s"] == pytest.approx(row["sentences_per_s"] * tokens / 8)
        assert row["first_call_s"] == pytest.approx(
            row["load_s"] + row["first_batch_s"]
        )
        assert row["load_before"] >= 0 and row["load_after"] >= 0
        assert isinstance(row["busy"], bool) and isinstance(row["stopped_seen"], bool)
        serving = record["results"]["serving_default"]["outputs"]
        assert row["same_as_reference"] == sum(a == b for a, b in zip(outputs, serving))
    # CTranslate2 runs without TensorFlow, as the command line runs it.
    assert record["results"]["serving_default"]["tensorflow_imported"]
    assert not record["results"]["ctranslate2"]["tensorflow_imported"]
