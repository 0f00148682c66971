"""The settings of a training run, each declared once.

`TrainConfig` is what `train_translator` runs. Each of its fields is declared
with `setting(...)`, which records in the field's metadata:

- `help`: what the setting does (the field's documentation and its
  command-line help);
- `resume`: whether a resumed run must share it with the run that wrote the
  checkpoints (`resume_keys`);
- `flag`: its `keras-transformer train` flag: `True` (the default) for
  `--field-name`, a string for another name, `False` for none; with the
  `argparse` keyword arguments given to `setting` (`choices`, `metavar`,
  `action`, `type`...), the command-line `group` and `from_flag`, a function
  applied to the parsed value.

`add_setting_flags` adds the flags of such a dataclass to an
`argparse.ArgumentParser` and `settings_from_flags` turns the parsed
arguments back into its constructor arguments. A new setting is one field
here (and its test). This module imports neither TensorFlow nor Keras.

`TrainConfig` checks every value when it is made: an invalid one raises a
`SettingError` (a `ValueError`) naming the setting, the value and the rule;
`flag_error_message` words it for the command line, naming the flag.
"""

import argparse
import dataclasses
import math
import typing

from keras_transformer.training.strategy import STRATEGY_NAMES

# The `Transformer.from_preset` presets (`keras_transformer.models.PRESETS`).
PRESET_NAMES = ("tiny", "base", "big")
# The names of `trainer.BUCKET_BOUNDARIES`, the length-bucket ladders.
BUCKET_BOUNDARY_NAMES = ("default", "fine")
MIXED_PRECISION_POLICIES = (None, "mixed_bfloat16", "mixed_float16")
DEVICES_GROUP = "devices and fault tolerance"
# The fewest pieces SentencePiece builds a vocabulary of: the 4 special
# pieces, the word-boundary piece and one character.
MIN_VOCAB_SIZE = 6
# Keras seeds `numpy.random`, whose seeds are in [0, 2**32).
MAX_SEED = 2**32 - 1


class SettingError(ValueError):
    """An invalid setting value.

    Attributes:
        name: the setting (field) name.
        value: the value given.
        rule: what the value must be, e.g. `"must be a positive integer"`.
    """

    def __init__(self, name, value, rule):
        self.name = name
        self.value = value
        self.rule = rule
        super().__init__(f"`{name}` {rule}. Received: {name}={value!r}")


def flag_error_message(settings_class, error):
    """`error` (a `SettingError`) in one line naming the setting's flag.

    Args:
        settings_class: the dataclass the setting belongs to.
        error: a `SettingError` raised by its constructor.

    Returns:
        `"argument --flag: RULE. Received: VALUE"`, or `str(error)` when the
        setting has no flag.
    """
    fields = {f.name: f for f in declared_settings(settings_class)}
    flag = flag_name(fields[error.name]) if error.name in fields else None
    if flag is None:
        return str(error)
    return f"argument {flag}: {error.rule}. Received: {error.value!r}"


def setting(
    default=dataclasses.MISSING,
    *,
    help,
    resume=False,
    flag=True,
    group=None,
    from_flag=None,
    default_factory=dataclasses.MISSING,
    **argparse_kwargs,
):
    """A dataclass field declared with its help text and command-line flag.

    Args:
        default: the field's default; none for a required setting (its flag
            is then required too).
        help: str, what the setting does.
        resume: bool, whether a resumed run must have the same value.
            Defaults to `False`.
        flag: `True` for the flag `--field-name`, a string for another
            flag name, `False` for no flag. Defaults to `True`.
        group: optional title of the `--help` group the flag is listed in.
        from_flag: optional function of the parsed value giving the field's
            value (e.g. `0` on the command line meaning `None`).
        default_factory: as in `dataclasses.field`.
        **argparse_kwargs: more `add_argument` keyword arguments
            (`choices`, `metavar`, `action`, `type`, `dest` excepted). The
            `type` defaults to the field's annotation (`X` of `X | None`);
            a `bool` field defaulting to `False` becomes a `store_true`
            switch.

    Returns:
        A `dataclasses.field`.
    """
    if "dest" in argparse_kwargs:
        raise ValueError(
            "A setting's flag stores into the field of the same name: `dest` "
            f"cannot be given. Received: dest={argparse_kwargs['dest']!r}"
        )
    metadata = {
        "help": help,
        "resume": resume,
        "flag": flag,
        "group": group,
        "from_flag": from_flag,
        "argparse": argparse_kwargs,
    }
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata=metadata
    )


def declared_settings(settings_class):
    """The fields of `settings_class` declared with `setting`."""
    return [f for f in dataclasses.fields(settings_class) if "help" in f.metadata]


def resume_keys(settings_class):
    """Names of the settings a resumed run must share, in declaration order."""
    return tuple(
        f.name for f in declared_settings(settings_class) if f.metadata["resume"]
    )


def flag_name(field):
    """The command-line flag of a declared field, or `None` without one."""
    flag = field.metadata["flag"]
    if flag is False:
        return None
    if flag is True:
        return "--" + field.name.replace("_", "-")
    return flag


def flagged_settings(settings_class):
    """The declared fields of `settings_class` that have a flag."""
    return [f for f in declared_settings(settings_class) if flag_name(f)]


def _value_type(field):
    """The type of a field annotated `X` or `X | None`."""
    types = [t for t in typing.get_args(field.type) if t is not type(None)]
    value_type = types[0] if len(types) == 1 else field.type
    if not isinstance(value_type, type):
        raise ValueError(
            f"The flag of setting `{field.name}` needs an explicit `type` (or "
            f"`action`): its annotation is not `X` or `X | None`. Received: "
            f"{field.type!r}"
        )
    return value_type


def _field_default(field):
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def argument_kwargs(field):
    """The `add_argument` keyword arguments of a declared field's flag."""
    kwargs = {
        "dest": field.name,
        "help": field.metadata["help"].replace("%", "%%"),
        **field.metadata["argparse"],
    }
    default = _field_default(field)
    if default is dataclasses.MISSING:
        kwargs["required"] = True
    elif "action" not in kwargs or kwargs["action"] is argparse.BooleanOptionalAction:
        kwargs["default"] = default
    if "action" not in kwargs and "type" not in kwargs:
        value_type = _value_type(field)
        if value_type is bool and default is False:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = value_type
    return kwargs


def add_setting_flags(parser, settings_class):
    """Adds a flag to `parser` for each declared setting that has one.

    Flags are added in declaration order; those with a `group` are listed
    under that title in `--help`.

    Args:
        parser: an `argparse.ArgumentParser`.
        settings_class: a dataclass whose fields are declared with `setting`.

    Returns:
        `parser`.
    """
    groups = {}
    for field in flagged_settings(settings_class):
        target = parser
        title = field.metadata["group"]
        if title is not None:
            if title not in groups:
                groups[title] = parser.add_argument_group(title)
            target = groups[title]
        target.add_argument(flag_name(field), **argument_kwargs(field))
    return parser


def settings_from_flags(args, settings_class):
    """`settings_class`'s constructor arguments from parsed flags.

    Args:
        args: the `argparse.Namespace` of a parser given
            `add_setting_flags(parser, settings_class)`.
        settings_class: the same dataclass.

    Returns:
        A dict `{field name: value}` with one entry per flag.
    """
    values = {}
    for field in flagged_settings(settings_class):
        value = getattr(args, field.name)
        convert = field.metadata["from_flag"]
        values[field.name] = value if convert is None else convert(value)
    return values


def _zero_is_none(value):
    return value or None


def _check_choice(name, value, choices):
    if value not in choices:
        raise SettingError(name, value, f"must be one of {tuple(choices)}")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value):
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _check(config, name, valid, rule):
    """Raises `SettingError` unless `valid(value)` for the setting `name`."""
    value = getattr(config, name)
    if not valid(value):
        raise SettingError(name, value, rule)


_POSITIVE_INT = "must be a positive integer"
# Settings that are counts: positive ints (or `None`, for the optional ones).
_COUNTS = (
    "vocabulary_sentences",
    "epochs",
    "warmup_steps",
    "bleu_beam_size",
    "steps_per_execution",
    "keep_checkpoints",
)
_OPTIONAL_COUNTS = ("steps_per_epoch", "batch_size", "batch_tokens", "checkpoint_every")


def _check_counts(config):
    """Raises `SettingError` for an invalid count or integer of `config`."""
    positive = lambda value: _is_int(value) and value > 0
    for name in _COUNTS:
        _check(config, name, positive, _POSITIVE_INT)
    for name in _OPTIONAL_COUNTS:
        _check(config, name, lambda v: v is None or positive(v), _POSITIVE_INT)
    if config.batch_size is None and config.batch_tokens is None:
        raise SettingError(
            "batch_size", None, "must be given when `batch_tokens` is not"
        )
    _check(
        config,
        "vocab_size",
        lambda value: _is_int(value) and value >= MIN_VOCAB_SIZE,
        f"must be an integer of at least {MIN_VOCAB_SIZE} (SentencePiece's 4 "
        "special pieces, its word-boundary piece and one character; each "
        "further character of the corpus needs one more)",
    )
    _check(
        config,
        "max_length",
        lambda value: _is_int(value) and value >= 2,
        "must be at least 2 (a token and EOS)",
    )
    _check(
        config,
        "bleu_sentences",
        lambda value: _is_int(value) and value >= 0,
        "must be a non-negative integer (0: no BLEU)",
    )
    _check(
        config,
        "seed",
        lambda value: _is_int(value) and 0 <= value <= MAX_SEED,
        f"must be an integer in [0, {MAX_SEED}]",
    )


def _check_numbers(config):
    """Raises `SettingError` for an invalid real number of `config`."""
    positive = lambda value: _is_finite(value) and value > 0
    _check(config, "learning_rate_scale", positive, "must be a positive number")
    _check(
        config,
        "max_minutes",
        lambda value: value is None or positive(value),
        "must be a positive number of minutes",
    )
    _check(
        config,
        "label_smoothing",
        lambda value: _is_finite(value) and 0 <= value < 1,
        "must be a number in [0, 1)",
    )


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run (`keras-transformer train` flags).

    Each field's `help` says what it does; `keras-transformer train --help`
    lists the fields that have a flag. Fields declared with `resume=True`
    (`resume_keys(TrainConfig)`) must be the same when a run resumes from
    the checkpoints of an earlier one.

    Raises:
        SettingError: (a `ValueError`) when a count is not a positive int
            (neither `batch_size` nor `batch_tokens` given, `vocab_size`
            below `MIN_VOCAB_SIZE`, `max_length` below 2), `seed` is not in
            `[0, MAX_SEED]`, `learning_rate_scale` or `max_minutes` is not a
            positive finite number, `label_smoothing` is not in `[0, 1)`, or
            a setting with choices is not one of them.
    """

    train: str = setting(
        help="SPEC of the training data: tsv:PATH, files:SRC,TGT, tfds:NAME or demo.",
        resume=True,
        metavar="SPEC",
    )
    output: str = setting(
        help="The model directory to write (rerun with the same one to resume).",
        metavar="DIR",
    )
    valid: str | None = setting(
        None,
        help="SPEC of the validation data (with demo training data, the "
        "demo's validation split when not given).",
        metavar="SPEC",
    )
    preset: str = setting(
        "tiny", help="The model's size preset.", resume=True, choices=PRESET_NAMES
    )
    model_overrides: dict = setting(
        default_factory=dict,
        help="Constructor arguments overriding the preset's.",
        resume=True,
        flag=False,
    )
    vocab_size: int = setting(
        8000, help="Maximum SentencePiece vocabulary size.", resume=True
    )
    shared_vocabulary: bool = setting(
        True,
        help="Share one vocabulary between the two languages (the flag "
        "--separate-vocabularies trains one per language).",
        resume=True,
        flag="--separate-vocabularies",
        action="store_false",
    )
    vocabulary_sentences: int = setting(
        200_000, help="Sentences per side the vocabulary is trained on.", flag=False
    )
    epochs: int = setting(10, help="Number of epochs.")
    steps_per_epoch: int | None = setting(
        None,
        help="Batches per epoch of one endless stream (default: an epoch is "
        "one pass over the data).",
        resume=True,
    )
    batch_size: int | None = setting(
        64, help="Sentences per batch (unless batch_tokens is set).", resume=True
    )
    batch_tokens: int | None = setting(
        None, help="Tokens per batch, instead of batch_size sentences.", resume=True
    )
    max_length: int = setting(
        128, help="Longest source or target sentence kept, in tokens.", resume=True
    )
    bucket_boundaries: str = setting(
        "default",
        help="Length buckets' padded lengths: default (two per octave) or "
        "fine (four per octave: about half the padding, but twice the batch "
        "shapes, each one more compilation under XLA: best without XLA; see "
        "benchmarks/README.md).",
        resume=True,
        choices=BUCKET_BOUNDARY_NAMES,
    )
    warmup_steps: int = setting(
        4000, help="Warm-up steps of the paper's learning-rate schedule."
    )
    learning_rate_scale: float = setting(
        1.0, help="Factor on the paper's learning-rate schedule."
    )
    label_smoothing: float = setting(
        0.1, help="Label smoothing of the loss.", flag=False
    )
    max_minutes: float | None = setting(
        None,
        help="Wall-clock budget in minutes; training stops cleanly after it.",
    )
    bleu_sentences: int = setting(
        200,
        help="Validation sentences decoded for BLEU after each epoch.",
        flag=False,
    )
    bleu_beam_size: int = setting(
        1, help="Beam size of the BLEU decoding (1: greedy).", flag=False
    )
    bleu_tokenize: str = setting("13a", help="sacreBLEU's BLEU tokenizer.", flag=False)
    seed: int = setting(
        1234,
        help="Random seed of the weights, dropout, data order and vocabulary.",
        resume=True,
    )
    jit_compile: bool | None = setting(
        None,
        help="XLA-compile the train step (default: yes, except under "
        "mixed_bfloat16 without a GPU or TPU and under a multi-replica "
        "strategy on CPUs; always off with deterministic).",
        flag="--jit",
        action=argparse.BooleanOptionalAction,
        group=DEVICES_GROUP,
    )
    strategy: str = setting(
        "auto",
        help="tf.distribute strategy (auto: TPU if present, else all GPUs, "
        "else one device).",
        choices=STRATEGY_NAMES,
        group=DEVICES_GROUP,
    )
    tpu: str | None = setting(
        None,
        help="TPU name or grpc:// address.",
        metavar="NAME_OR_ADDRESS",
        group=DEVICES_GROUP,
    )
    devices: list | None = setting(
        None, help="The devices of the mirrored strategy.", flag=False
    )
    steps_per_execution: int = setting(
        1,
        help="Train steps per compiled call (TPUs: 50-200).",
        group=DEVICES_GROUP,
    )
    mixed_precision: str | None = setting(
        None,
        help="Mixed-precision dtype policy.",
        resume=True,
        choices=MIXED_PRECISION_POLICIES[1:],
        group=DEVICES_GROUP,
    )
    checkpoint_every: int | None = setting(
        1000,
        help="Save weights, optimizer and data position every N batches and "
        "at epoch ends (0 or None: at epoch ends only), keeping the last "
        "keep_checkpoints; rerun the same command to resume at the exact "
        "step.",
        metavar="N",
        from_flag=_zero_is_none,
        group=DEVICES_GROUP,
    )
    keep_checkpoints: int = setting(
        3, help="Checkpoints kept.", metavar="K", group=DEVICES_GROUP
    )
    deterministic: bool = setting(
        False,
        help="Deterministic TF ops (reproducible runs; turns XLA off).",
        group=DEVICES_GROUP,
    )
    verbose: int | str = setting(
        "auto", help="The verbosity of Keras's fit.", flag=False
    )

    def __post_init__(self):
        _check_counts(self)
        _check_numbers(self)
        for name, choices in (
            ("preset", PRESET_NAMES),
            ("bucket_boundaries", BUCKET_BOUNDARY_NAMES),
            ("strategy", STRATEGY_NAMES),
            ("mixed_precision", MIXED_PRECISION_POLICIES),
        ):
            _check_choice(name, getattr(self, name), choices)


RESUME_KEYS = resume_keys(TrainConfig)
