"""Settings from a YAML or JSON file, combined with the command line's flags.

`keras-transformer train --config FILE` reads `FILE` with `read_settings`:
a mapping of setting names (the `TrainConfig` field names, as in
`train_config.json`, or the flags' names: `d_model`, `d-model` and
`--d-model` are one key) to values. `settings_from_args` combines it with
the flags: a flag given on the command line overrides the file, and the
declaration's defaults (for the model settings: the preset's values) fill in
the rest. Like `keras_transformer.training.config`, this module imports
neither TensorFlow nor Keras.
"""

import difflib
import json
import math
import typing

from keras_transformer.training.config import SettingError
from keras_transformer.training.config import declared_settings
from keras_transformer.training.config import flag_name
from keras_transformer.training.config import missing_settings
from keras_transformer.training.config import settings_from_flags


class SettingsFileError(ValueError):
    """A settings file that cannot be read, or an invalid key or value in it.

    Its message is one line that starts with the file's path and names the
    key.
    """


def _keys(settings_class):
    """`{key: (field, inverted)}`: each field's name and its flag's name.

    `inverted` is true for a `store_false` flag (`--separate-vocabularies`
    is `shared_vocabulary: false`).
    """
    keys = {}
    for field in declared_settings(settings_class):
        keys[field.name] = (field, False)
        flag = flag_name(field)
        if flag:
            name = flag.lstrip("-").replace("-", "_")
            inverted = field.metadata["argparse"].get("action") == "store_false"
            keys.setdefault(name, (field, inverted))
    return keys


def _types(field):
    """The value types a field takes (`None` apart), from its annotation."""
    types = [t for t in typing.get_args(field.type) if t is not type(None)]
    return tuple(types) if types else (field.type,)


def _optional(field):
    return (
        type(None) in typing.get_args(field.type)
        or field.default is None
        or field.metadata["from_flag"] is not None
    )


_RULES = {
    bool: "must be true or false",
    int: "must be an integer",
    float: "must be a number",
    str: "must be a string",
    list: "must be a list",
    dict: "must be a mapping",
}


def _typed(field, value):
    """`value` as the field's type, or `None` when it is not of that type."""
    for kind in _types(field):
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and not isinstance(value, bool):
            # YAML reads `1e-6` (no dot) as a string.
            try:
                number = float(value) if isinstance(value, int | float | str) else None
            except ValueError:
                number = None
            if number is not None and math.isfinite(number):
                return number
        if kind in (str, list, dict) and isinstance(value, kind):
            return value
    return None


def _value(field, value, inverted):
    """The field's value for a file's `key: value`; `(rule)` on a bad one."""
    if value is None:
        if _optional(field):
            return None
        raise ValueError("cannot be null")
    typed = _typed(field, value)
    if typed is None:
        rules = " or ".join(
            _RULES.get(t, f"must be a {t.__name__}") for t in _types(field)
        )
        raise ValueError(rules.replace(" or must be", " or"))
    choices = field.metadata["argparse"].get("choices")
    if choices is not None and typed not in choices:
        raise ValueError(f"must be one of {tuple(choices)}")
    if inverted:
        return not typed
    convert = field.metadata["from_flag"]
    return typed if convert is None else convert(typed)


def read_settings(path, settings_class):
    """The settings of a YAML or JSON file, as constructor arguments.

    Args:
        path: str, a `.json` file (read as JSON) or any other (read as
            YAML, of which JSON is a subset).
        settings_class: a dataclass whose fields are declared with
            `setting` (e.g. `TrainConfig`).

    Returns:
        A dict `{field name: value}`, one entry per key of the file.

    Raises:
        SettingsFileError: when the file cannot be read or parsed, is not a
            mapping, has an unknown key (the error suggests the nearest
            setting) or a value of the wrong type or outside its choices.
    """
    data = _load(path)
    keys = _keys(settings_class)
    values = {}
    for key, value in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name not in keys:
            close = difflib.get_close_matches(name, keys, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SettingsFileError(f"{path}: unknown setting {key!r}{hint}")
        field, inverted = keys[name]
        if field.name in values:
            raise SettingsFileError(f"{path}: setting {field.name!r} given twice")
        try:
            values[field.name] = _value(field, value, inverted)
        except ValueError as error:
            raise SettingsFileError(
                f"{path}: setting {key!r} {error}. Received: {value!r}"
            ) from None
    return values


def _load(path):
    """The mapping a settings file holds (`{}` for an empty file)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise SettingsFileError(
            f"{path}: cannot read the settings file ({reason})"
        ) from None
    try:
        if str(path).endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except ValueError as error:
        raise SettingsFileError(f"{path}: not valid JSON ({error})") from None
    except Exception as error:  # yaml.YAMLError
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise SettingsFileError(f"{path}: not valid YAML{line} ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsFileError(
            f"{path}: must be a mapping of setting names to values. Received: "
            f"a {type(data).__name__}"
        )
    return data


def settings_from_args(args, settings_class):
    """`settings_class(...)` from the flags and the `--config` file of `args`.

    Precedence: a flag given on the command line, then the file's value,
    then the field's default.

    Args:
        args: the `argparse.Namespace` of a parser given
            `add_setting_flags(parser, settings_class, config_flag=...)`.
        settings_class: the same dataclass.

    Returns:
        A `settings_class` instance.

    Raises:
        SettingsFileError: for the file or a value taken from it (naming
            the file and the key).
        SettingError: for an invalid value given as a flag
            (`flag_error_message` words it).
        ValueError: when a required setting is neither a flag nor in the
            file.
    """
    path = getattr(args, "settings_file", None)
    from_file = read_settings(path, settings_class) if path else {}
    from_flags = settings_from_flags(args, settings_class, explicit_only=True)
    values = {**from_file, **from_flags}
    missing = missing_settings(settings_class, values)
    if missing:
        where = " (or keys of the --config file)" if path else ""
        raise ValueError(
            f"the following arguments are required{where}: {', '.join(missing)}"
        )
    try:
        return settings_class(**values)
    except SettingError as error:
        if error.name in from_file and error.name not in from_flags:
            raise SettingsFileError(
                f"{path}: setting {error.name!r} {error.rule}. Received: "
                f"{error.value!r}"
            ) from None
        raise
