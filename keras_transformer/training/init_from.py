"""Fine-tuning: a run that starts from a trained model directory.

`TrainConfig(init_from=MODEL_DIR, ...)` (`keras-transformer train
--init-from MODEL_DIR`) trains a model with the architecture, vocabularies
and weights of `MODEL_DIR/model.keras` (domain adaptation, continued
training), with a new optimizer and learning-rate schedule. The model
settings may change only what holds no weight: the dropout rates.
"""

import json
import os
import zipfile

from keras_transformer import model_directory as layout
from keras_transformer.training.config import MODEL_SETTINGS
from keras_transformer.training.model_settings import argument_changes
from keras_transformer.training.model_settings import requested_arguments

# Model settings a fine-tuning run may change: they hold no weight.
DROPOUT_SETTINGS = ("dropout", "attention_dropout", "activation_dropout")


class InitFromError(ValueError):
    """An `init_from` directory that cannot be fine-tuned as asked."""


def _model_file(model_dir):
    model_file = layout.path(model_dir, layout.MODEL_FILE)
    if not os.path.isfile(model_file):
        raise InitFromError(
            f"--init-from {model_dir}: {model_file} is missing (a directory "
            "written by `keras-transformer train` is needed)"
        )
    return model_file


def saved_model_config(model_dir):
    """The `Transformer` config (`get_config()`) saved in `DIR/model.keras`.

    Reads the archive's `config.json` only: no weights are loaded.

    Raises:
        InitFromError: when the file is missing, unreadable, or holds
            another model than a `Transformer`.
    """
    model_file = _model_file(model_dir)
    try:
        with zipfile.ZipFile(model_file) as archive:
            saved = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise InitFromError(
            f"--init-from {model_dir}: cannot read {model_file} ({error})"
        ) from None
    if saved.get("class_name") != "Transformer":
        raise InitFromError(
            f"--init-from {model_dir}: {model_file} holds a "
            f"{saved.get('class_name')!r}, not a Transformer"
        )
    return saved["config"]


def initial_model_arguments(config):
    """The constructor arguments of a fine-tuning run (`config.init_from`).

    The initial model's arguments, with the dropout rates `config` sets.

    Args:
        config: a `TrainConfig` with `init_from`.

    Returns:
        A dict with a key per model setting (vocabulary sizes apart).

    Raises:
        InitFromError: when `init_from` is the output directory or no model
            directory, or `config` sets a model setting (other than a
            dropout rate) to another value than the initial model's.
    """
    if os.path.abspath(config.init_from) == os.path.abspath(config.output):
        raise InitFromError(
            f"--init-from {config.init_from} is the --output directory; to "
            "continue that run, rerun its command without --init-from (it "
            "resumes), or fine-tune into a new --output directory"
        )
    saved = saved_model_config(config.init_from)
    arguments = {name: saved[name] for name in MODEL_SETTINGS if name in saved}
    requested = requested_arguments(config)
    fixed = {k: v for k, v in requested.items() if k not in DROPOUT_SETTINGS}
    conflicts = argument_changes({k: arguments.get(k) for k in fixed}, fixed)
    if conflicts:
        raise InitFromError(
            f"--init-from {config.init_from}: its model's architecture is "
            f"fixed, but the settings change it ({', '.join(conflicts)}); "
            "leave these settings out (only the dropout rates may change)"
        )
    arguments.update({k: v for k, v in requested.items() if k in DROPOUT_SETTINGS})
    return arguments


def check_vocabulary_sizes(config, source_size, target_size):
    """Refuses vocabularies of other sizes than the initial model's."""
    saved = saved_model_config(config.init_from)
    expected = (
        saved["vocabulary_size"],
        saved.get("target_vocabulary_size") or saved["vocabulary_size"],
    )
    if (source_size, target_size) != expected:
        raise InitFromError(
            f"--init-from {config.init_from}: its vocabularies have "
            f"{source_size} and {target_size} pieces, but its model "
            f"{expected[0]} and {expected[1]}"
        )


def vocabulary_dir(config):
    """`init_from`'s vocabulary directory, checked to exist."""
    directory = layout.path(config.init_from, layout.VOCABULARY_DIR)
    if not os.path.isfile(os.path.join(directory, "vocabularies.json")):
        raise InitFromError(
            f"--init-from {config.init_from}: no vocabulary "
            f"({directory}/vocabularies.json is missing)"
        )
    return directory


def load_initial_weights(model, config):
    """Builds `model` and loads the weights of `config.init_from`'s model.

    Call it before `compile` (the file's optimizer state is not loaded: the
    run has its own).
    """
    model.build()
    model.load_weights(_model_file(config.init_from))


def init_from_record(config):
    """What `metrics.json` records of the start: `{}` without `init_from`.

    Returns:
        `{"init_from": {"model_dir": ..., "steps": ...}}`, `steps` being the
        initial model's train steps (from its `metrics.json`; `None` when
        it has none).
    """
    if not config.init_from:
        return {}
    steps = None
    metrics_path = layout.path(config.init_from, layout.METRICS_FILE)
    if os.path.isfile(metrics_path):
        try:
            steps = layout.read_json(metrics_path).get("steps")
        except ValueError:
            steps = None
    return {
        "init_from": {
            "model_dir": os.path.abspath(config.init_from),
            "steps": steps,
        }
    }
