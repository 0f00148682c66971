"""The embedded default corpus is learnable: a small model, a few minutes."""

import json

from keras_transformer import data
from keras_transformer.evaluation import evaluate_translator
from keras_transformer.model_directory import load_model_and_vocabularies


def test_small_model_learns_held_out_numbers(demo_model_dir):
    # `demo_model_dir` (tests/conftest.py): numbers 0..999, 865 training
    # pairs, 12 epochs of 25 steps; 90 held-out test numbers (100..999 never
    # seen in training). Measured: exact match 1.00.
    metrics = json.loads((demo_model_dir / "metrics.json").read_text())
    model, source_tokenizer, target_tokenizer = load_model_and_vocabularies(
        demo_model_dir
    )
    test_pairs = list(data.parse_spec("demo:999", split="test"))
    scores = evaluate_translator(
        model, source_tokenizer, target_tokenizer, test_pairs, beam_size=1,
        bleu_tokenize="char",
    )  # fmt: skip
    print(f"exact match {scores['exact_match']:.3f}, "
          f"{metrics['steps']} steps in {metrics['wall_seconds']:.0f} s")  # fmt: skip
    assert len(test_pairs) == 90
    assert scores["exact_match"] >= 0.9
