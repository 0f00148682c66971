"""The `Transformer` a run's settings describe.

A `TrainConfig` gives the model's constructor arguments in three layers: the
preset's values (`keras_transformer.models.PRESETS`), then
`model_overrides` (a dict, for the Python API), then each model setting
(`num_layers`, `d_model`, ... : `config.MODEL_SETTINGS`) that is not `None`.
With `init_from`, the initial model's arguments replace all three
(`keras_transformer.training.init_from`).
"""

import functools
import inspect

from keras_transformer.models import PRESETS
from keras_transformer.models.transformer import Transformer
from keras_transformer.training.config import MODEL_SETTINGS


@functools.cache
def constructor_defaults():
    """`{model setting: Transformer's default}` for every model setting."""
    parameters = inspect.signature(Transformer.__init__).parameters
    return {name: parameters[name].default for name in MODEL_SETTINGS}


def _get(settings, name, default=None):
    """`settings[name]` (a `train_config.json` dict) or `settings.name`."""
    if isinstance(settings, dict):
        return settings.get(name, default)
    return getattr(settings, name, default)


def requested_arguments(settings):
    """The constructor arguments `settings` sets itself (no preset's).

    Args:
        settings: a `TrainConfig`, or the dict of a `train_config.json`
            (keys it lacks, as in files written before the model settings
            existed, count as `None`).

    Returns:
        A dict: `model_overrides`, then the model settings that are not
        `None`.
    """
    arguments = dict(_get(settings, "model_overrides") or {})
    for name in MODEL_SETTINGS:
        value = _get(settings, name)
        if value is not None:
            arguments[name] = value
    return arguments


def model_arguments(settings):
    """The `Transformer` constructor arguments of `settings`, vocabulary apart.

    Every model setting gets a value: `Transformer`'s default, overridden by
    the preset's, `model_overrides` and the model settings, in this order.

    Args:
        settings: a `TrainConfig`, or the dict of a `train_config.json`.

    Returns:
        A dict with a key per name of `config.MODEL_SETTINGS` (and any other
        `model_overrides` key).

    Example:

    >>> from keras_transformer.training.config import TrainConfig
    >>> config = TrainConfig(train="demo", output="o", preset="tiny", d_ff=64)
    >>> arguments = model_arguments(config)
    >>> arguments["d_model"], arguments["d_ff"], arguments["activation"]
    (128, 64, 'relu')
    """
    preset = _get(settings, "preset", "tiny")
    return {
        **constructor_defaults(),
        **PRESETS[preset],
        **requested_arguments(settings),
    }


def argument_changes(old, new):
    """`"name: OLD -> NEW"` for each argument whose value differs, in order."""
    names = list(old) + [name for name in new if name not in old]
    return [
        f"{name}: {old.get(name)!r} -> {new.get(name)!r}"
        for name in names
        if old.get(name) != new.get(name)
    ]


def check_model_arguments(arguments, vocabulary_size):
    """Raises `ValueError` (the constructor's) when `arguments` cannot build.

    Builds no weights: constructing a `Transformer` checks its arguments
    (sizes, head counts, choices) and creates its layers unbuilt.
    """
    Transformer(vocabulary_size=vocabulary_size, **arguments)
