"""The layout of a trained-model directory, shared by train/evaluate/export.

```
DIR/
  model.keras          the final model (Keras format, safe-mode loadable)
  vocabulary/          SentencePiece model(s) + vocabularies.json
  checkpoints/         weights checkpoints written during training
  logs/                TensorBoard logs
  metrics.json         steps, epochs_completed, train_loss, valid_loss, ...
  train_config.json    the settings the model was trained with
  export/1/            the SavedModel translator (after export)
```
"""

import json
import os

MODEL_FILE = "model.keras"
VOCABULARY_DIR = "vocabulary"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "train_config.json"
EXPORT_DIR = "export"


def path(directory, name):
    """`directory/name` as a string."""
    return os.path.join(os.fspath(directory), name)


def write_json(file_path, data):
    """Writes `data` as JSON atomically (a crash never leaves half a file)."""
    # Per process: workers of a multi-worker run may write the same file.
    tmp = f"{file_path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, file_path)


def read_json(file_path):
    with open(file_path, encoding="utf-8") as f:
        return json.load(f)


def load_model_and_vocabularies(directory):
    """Loads `DIR/model.keras` and its vocabularies.

    Returns:
        `(model, source_tokenizer, target_tokenizer)`.

    Raises:
        ValueError: if the directory is not a trained-model directory.
    """
    import keras

    from keras_transformer.text import load_vocabularies

    model_file = path(directory, MODEL_FILE)
    if not os.path.exists(model_file):
        raise ValueError(
            f"Trained model not found: {model_file} is missing (is {directory} "
            "a directory written by `keras-transformer train`?)"
        )
    model = keras.saving.load_model(model_file, compile=False)
    source_tokenizer, target_tokenizer = load_vocabularies(
        path(directory, VOCABULARY_DIR)
    )
    return model, source_tokenizer, target_tokenizer
