"""Test-wide settings: quiet TensorFlow, fixed seeds, float32 policy per test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _reset_keras_state():
    keras.utils.set_random_seed(1234)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory):
    """A model directory trained by `keras-transformer train` for 6 steps.

    Shared by the tests that need a real model directory (vocabularies,
    `model.keras`, `train_config.json`) but not a good translator. Treat it
    as read-only; copy it to change it. Its data: `train.tsv`, `valid.tsv`
    in the parent folder (English -> German number words).
    """
    from num2words import num2words

    from keras_transformer import cli

    root = tmp_path_factory.mktemp("small_model")
    for name, numbers in (("train", range(0, 400, 2)), ("valid", range(1, 60, 4))):
        lines = [f"{num2words(n)}\t{num2words(n, lang='de')}" for n in numbers]
        (root / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    model_dir = root / "model"
    code = cli.main([
        "train", "--train", f"tsv:{root / 'train.tsv'}",
        "--valid", f"tsv:{root / 'valid.tsv'}", "--epochs", "2",
        "--steps-per-epoch", "3", "--vocab-size", "80", "--batch-size", "16",
        "--warmup-steps", "10", "--output", str(model_dir),
    ])  # fmt: skip
    if code != 0:
        raise RuntimeError(f"training the shared small model failed: {code}")
    keras.config.set_dtype_policy("float32")
    return model_dir


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory):
    """A model directory trained by `train_translator` on `demo:999`.

    The demo's settings (`demo_config`), 12 epochs of 25 steps: it gets
    (nearly) every held-out test number right (`tests/test_demo_learns.py`
    checks that). Shared by the tests that need a model that translates;
    its per-epoch weights (`checkpoints/epoch-005.weights.h5`, ...) give
    less trained ones. Treat it as read-only.
    """
    from keras_transformer.training.trainer import demo_config
    from keras_transformer.training.trainer import train_translator

    directory = tmp_path_factory.mktemp("demo_model") / "model"
    config = demo_config(output=str(directory), max_minutes=6)
    config.train = "demo:999"
    config.epochs = 12
    config.steps_per_epoch = 25
    config.bleu_sentences = 0
    config.verbose = 0
    train_translator(config)
    keras.config.set_dtype_policy("float32")
    return directory
