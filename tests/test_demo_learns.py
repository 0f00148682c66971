"""The embedded default corpus is learnable: a small model, a few minutes."""

import time

from keras_transformer import data
from keras_transformer.evaluation import evaluate_translator
from keras_transformer.model_directory import load_model_and_vocabularies
from keras_transformer.training.trainer import demo_config
from keras_transformer.training.trainer import train_translator


def test_small_model_learns_held_out_numbers(tmp_path):
    # Numbers 0..999: 865 training pairs; 90 held-out test numbers (100..999
    # never seen in training). Measured: exact match 1.00, ~100 s on 2 cores.
    config = demo_config(output=str(tmp_path / "demo"), max_minutes=6)
    config.train = "demo:999"
    config.epochs = 12
    config.steps_per_epoch = 25
    config.bleu_sentences = 0
    config.verbose = 0
    started = time.time()
    metrics = train_translator(config)
    model, source_tokenizer, target_tokenizer = load_model_and_vocabularies(
        config.output
    )
    test_pairs = list(data.parse_spec("demo:999", split="test"))
    scores = evaluate_translator(
        model, source_tokenizer, target_tokenizer, test_pairs, beam_size=1,
        bleu_tokenize="char",
    )  # fmt: skip
    print(f"exact match {scores['exact_match']:.3f}, "
          f"{time.time() - started:.0f} s, {metrics['steps']} steps")  # fmt: skip
    assert len(test_pairs) == 90
    assert scores["exact_match"] >= 0.9
