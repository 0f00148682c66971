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
arguments back into its constructor arguments (all of them, or only those
given on the command line: `keras-transformer train --config FILE` takes
the others from a YAML or JSON file, see `settings_file`). A new setting is
one field here (and its test). This module imports neither TensorFlow nor
Keras.

The model settings (`MODEL_SETTINGS`: `num_layers`, `d_model`, ...,
declared with `model=True`) are the `Transformer` constructor's arguments
(the vocabulary sizes and special ids apart); `None`, their default, stands
for the preset's value (`training.model_settings.model_arguments`).

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
MODEL_GROUP = (
    "model (Transformer constructor arguments; each defaults to the preset's "
    "value, or with --init-from to the initial model's)"
)
# `keras_transformer.layers.transformer_stack_base.POSITION_ENCODINGS`.
POSITION_ENCODINGS = ("sinusoidal", "learned", "rotary", "relative")
# The paper's warm-up (WMT, 100,000 steps), used when the run plans as many.
PAPER_WARMUP_STEPS = 4000
# Without `warmup_steps`, warm up for this fraction of the planned steps.
WARMUP_FRACTION = 0.1
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
    model=False,
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
            value (e.g. `0` on the command line meaning `None`); also
            applied to the value of a settings file.
        model: bool, whether the setting is a `Transformer` constructor
            argument (`model_settings`). Defaults to `False`.
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
        "model": model,
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


def model_settings(settings_class):
    """Names of the settings that are `Transformer` constructor arguments."""
    return tuple(
        f.name for f in declared_settings(settings_class) if f.metadata["model"]
    )


class FlagDefault:
    """A flag's default value, told apart from the same value given as a flag.

    `argument_kwargs` gives each flag with a default other than `None` a
    `FlagDefault` default, so that `settings_from_flags(...,
    explicit_only=True)` can leave out the flags the user did not give (a
    settings file's value then stands). It prints as its value (`--help`'s
    `%(default)s`).
    """

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return repr(self.value)

    def __str__(self):
        return str(self.value)


def argument_kwargs(field):
    """The `add_argument` keyword arguments of a declared field's flag.

    A required field's flag is not required by the parser: its value may
    come from a settings file (`missing_settings` names those not given).
    """
    kwargs = {
        "dest": field.name,
        "help": field.metadata["help"].replace("%", "%%"),
        **field.metadata["argparse"],
    }
    default = _field_default(field)
    if default is dataclasses.MISSING or default is None:
        kwargs["default"] = None
    else:
        kwargs["default"] = FlagDefault(default)
    if "action" not in kwargs and "type" not in kwargs:
        value_type = _value_type(field)
        if value_type is bool and default is False:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = value_type
    return kwargs


def add_setting_flags(parser, settings_class, config_flag=None):
    """Adds a flag to `parser` for each declared setting that has one.

    Flags are added in declaration order; those with a `group` are listed
    under that title in `--help`.

    Args:
        parser: an `argparse.ArgumentParser`.
        settings_class: a dataclass whose fields are declared with `setting`.
        config_flag: optional name of a flag (e.g. `"--config"`) taking a
            YAML or JSON settings file (`settings_from_args`).

    Returns:
        `parser`.
    """
    if config_flag:
        parser.add_argument(
            config_flag,
            dest="settings_file",
            metavar="FILE",
            help="YAML or JSON file of settings: keys are the setting names "
            "(as in train_config.json, e.g. d_model, or the flag's name, "
            "d-model); the flags given override it, and the preset gives "
            "the model settings it leaves out.",
        )
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


def settings_from_flags(args, settings_class, explicit_only=False):
    """`settings_class`'s constructor arguments from parsed flags.

    Args:
        args: the `argparse.Namespace` of a parser given
            `add_setting_flags(parser, settings_class)`.
        settings_class: the same dataclass.
        explicit_only: bool, leave out the flags not given on the command
            line. Defaults to `False` (their defaults are included).

    Returns:
        A dict `{field name: value}`: one entry per flag given, and with
        `explicit_only=False` one per flag with a default.
    """
    values = {}
    for field in flagged_settings(settings_class):
        value = getattr(args, field.name)
        if isinstance(value, FlagDefault):
            if not explicit_only:
                values[field.name] = value.value
            continue
        if value is None:  # not given: its default is `None`, or it has none
            if not explicit_only and _field_default(field) is None:
                values[field.name] = None
            continue
        convert = field.metadata["from_flag"]
        values[field.name] = value if convert is None else convert(value)
    return values


def missing_settings(settings_class, values):
    """The flags of the required settings that `values` lacks."""
    return [
        flag_name(f) or f.name
        for f in declared_settings(settings_class)
        if _field_default(f) is dataclasses.MISSING and f.name not in values
    ]


def _zero_is_none(value):
    return value or None


def _device_list(value):
    """`"GPU:0,GPU:1"` as `["GPU:0", "GPU:1"]`; a list as it is."""
    if isinstance(value, str):
        return [d.strip() for d in value.split(",") if d.strip()]
    return value


def _model_setting(help, default="the preset's", **argparse_kwargs):
    """A `Transformer` constructor argument: `None` (the preset's) by default.

    `default` says in the help what `None` stands for.
    """
    return setting(
        None,
        help=f"{help} Default: {default}.",
        resume=True,
        group=MODEL_GROUP,
        model=True,
        **argparse_kwargs,
    )


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
    "bleu_beam_size",
    "steps_per_execution",
    "keep_checkpoints",
)
_OPTIONAL_COUNTS = (
    "steps_per_epoch",
    "batch_size",
    "batch_tokens",
    "checkpoint_every",
    "warmup_steps",
    # Model settings (`None`: the preset's).
    "num_layers",
    "num_decoder_layers",
    "d_model",
    "num_heads",
    "d_ff",
    "num_key_value_heads",
    "max_relative_position",
    "max_positions",
)


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
    for name in ("dropout", "attention_dropout", "activation_dropout"):
        _check(
            config,
            name,
            lambda value: value is None or _is_finite(value) and 0 <= value < 1,
            "must be a number in [0, 1)",
        )
    for name in ("layer_norm_epsilon", "max_wavelength"):
        _check(
            config,
            name,
            lambda value: value is None or positive(value),
            "must be a positive number",
        )


def _check_types(config):
    """Raises `SettingError` for a string or switch setting of another type."""
    for name in ("activation", "bleu_tokenize", "init_from"):
        _check(
            config,
            name,
            lambda value: value is None or isinstance(value, str) and value,
            "must be a non-empty string",
        )
    for name in ("normalize_first", "share_embeddings", "tie_output_embeddings"):
        _check(
            config,
            name,
            lambda value: value is None or isinstance(value, bool),
            "must be true, false or None",
        )
    _check(
        config,
        "devices",
        lambda value: (
            value is None
            or isinstance(value, list | tuple)
            and all(isinstance(d, str) and d for d in value)
        ),
        "must be a list of device names",
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
            positive finite number, `label_smoothing` or a dropout rate is
            not in `[0, 1)`, a model size is not a positive int, or a
            setting with choices is not one of them. Whether the model
            settings fit together (`d_model` divisible by `num_heads`...)
            is checked when the run starts (`trainer.run_model_arguments`).
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
    init_from: str | None = setting(
        None,
        help="Fine-tune: start from the weights, vocabulary and architecture "
        "of this trained model directory, with a new optimizer and "
        "learning-rate schedule (the preset, --vocab-size and "
        "--separate-vocabularies are then unused; model settings may only "
        "change the dropout rates).",
        resume=True,
        metavar="MODEL_DIR",
    )
    preset: str = setting(
        "tiny", help="The model's size preset.", resume=True, choices=PRESET_NAMES
    )
    model_overrides: dict = setting(
        default_factory=dict,
        help="Constructor arguments overriding the preset's (Python API; the "
        "model settings override these in turn).",
        resume=True,
        flag=False,
    )
    num_layers: int | None = _model_setting("Encoder blocks (N).")
    num_decoder_layers: int | None = _model_setting(
        "Decoder blocks.", default="num_layers"
    )
    d_model: int | None = _model_setting("Model width.")
    num_heads: int | None = _model_setting("Attention heads (h).")
    d_ff: int | None = _model_setting("Feed-forward inner size.")
    dropout: float | None = _model_setting("Residual and embedding dropout rate.")
    attention_dropout: float | None = _model_setting(
        "Dropout rate on attention weights."
    )
    activation_dropout: float | None = _model_setting(
        "Dropout rate inside the feed-forward networks."
    )
    activation: str | None = _model_setting(
        "Feed-forward activation (a Keras activation name: relu, gelu...)."
    )
    normalize_first: bool | None = _model_setting(
        "Pre-LN blocks and final LayerNorms (--no-normalize-first: post-LN, "
        "the paper's).",
        action=argparse.BooleanOptionalAction,
    )
    layer_norm_epsilon: float | None = _model_setting("LayerNorm epsilon.")
    num_key_value_heads: int | None = _model_setting(
        "Key/value heads: 1 is multi-query, between 1 and num_heads grouped-"
        "query attention.",
        default="num_heads",
    )
    position_encoding: str | None = _model_setting(
        "Position encoding.", choices=POSITION_ENCODINGS
    )
    max_wavelength: float | None = _model_setting(
        "Base of the sinusoidal and rotary encodings."
    )
    max_relative_position: int | None = _model_setting(
        "Clipping distance of relative positions."
    )
    max_positions: int | None = _model_setting(
        "Table size of learned positions (the longest sentence, in tokens)."
    )
    share_embeddings: bool | None = _model_setting(
        "One embedding matrix for source and target.",
        default="yes when the vocabulary is shared",
        action=argparse.BooleanOptionalAction,
    )
    tie_output_embeddings: bool | None = _model_setting(
        "The target embedding is also the output projection.",
        action=argparse.BooleanOptionalAction,
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
        200_000, help="Sentences per side the vocabulary is trained on."
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
    warmup_steps: int | None = setting(
        None,
        help="Warm-up steps of the paper's learning-rate schedule (default: "
        f"the paper's {PAPER_WARMUP_STEPS}, or a tenth of the planned steps "
        "(epochs x batches per epoch) when that is fewer; the schedule is "
        "then scaled by sqrt(warm-up / 4000) so that its peak stays the "
        "paper's).",
    )
    learning_rate_scale: float = setting(
        1.0, help="Factor on the paper's learning-rate schedule."
    )
    label_smoothing: float = setting(0.1, help="Label smoothing of the loss.")
    max_minutes: float | None = setting(
        None,
        help="Wall-clock budget in minutes; training stops cleanly after it.",
    )
    bleu_sentences: int = setting(
        200,
        help="Validation sentences decoded for BLEU after each epoch (0: no BLEU).",
    )
    bleu_beam_size: int = setting(1, help="Beam size of the BLEU decoding (1: greedy).")
    bleu_tokenize: str = setting(
        "13a", help="sacreBLEU's BLEU tokenizer (13a, char, intl, none...)."
    )
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
        None,
        help="The devices of the mirrored strategy, comma-separated (e.g. "
        "GPU:0,GPU:1; default: all GPUs).",
        type=str,
        metavar="DEVICES",
        from_flag=_device_list,
        group=DEVICES_GROUP,
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
        _check_types(self)
        for name, choices in (
            ("preset", PRESET_NAMES),
            ("position_encoding", (None, *POSITION_ENCODINGS)),
            ("bucket_boundaries", BUCKET_BOUNDARY_NAMES),
            ("strategy", STRATEGY_NAMES),
            ("mixed_precision", MIXED_PRECISION_POLICIES),
        ):
            _check_choice(name, getattr(self, name), choices)


RESUME_KEYS = resume_keys(TrainConfig)
MODEL_SETTINGS = model_settings(TrainConfig)


def planned_train_steps(config, batches_per_epoch):
    """The train steps a run plans: `epochs x batches per epoch`.

    Args:
        config: a `TrainConfig`.
        batches_per_epoch: int, the full batches of one pass over the data
            (`data.count_batches(...)["batches"]`); unused with
            `config.steps_per_epoch`.

    Returns:
        An int (0 when an epoch has no batch).
    """
    return config.epochs * (config.steps_per_epoch or batches_per_epoch)


def resolve_warmup_steps(config, planned_steps):
    """The warm-up steps of a run that plans `planned_steps` train steps.

    `config.warmup_steps` when set; otherwise the paper's
    `PAPER_WARMUP_STEPS` (4000, for WMT's 100,000 steps), or a tenth of
    `planned_steps` when that is fewer (at least 1), so that a short run
    leaves warm-up. `warmup_scale` gives the factor that keeps the
    schedule's peak at the paper's.

    Args:
        config: a `TrainConfig`.
        planned_steps: int, the run's train steps (epochs x batches per
            epoch), or `None` when unknown (then the paper's 4000).

    Returns:
        A positive int.

    Example:

    >>> config = TrainConfig(train="demo", output="runs/x")
    >>> resolve_warmup_steps(config, 300), resolve_warmup_steps(config, 10**6)
    (30, 4000)
    """
    if config.warmup_steps is not None:
        return config.warmup_steps
    if planned_steps is None:
        return PAPER_WARMUP_STEPS
    if not _is_int(planned_steps) or planned_steps < 1:
        raise ValueError(
            "`planned_steps` must be a positive integer. Received: "
            f"planned_steps={planned_steps!r}"
        )
    return min(PAPER_WARMUP_STEPS, max(1, int(planned_steps * WARMUP_FRACTION)))


def warmup_scale(config, warmup_steps):
    """The factor on the learning-rate schedule for `warmup_steps`.

    `config.learning_rate_scale`, times `sqrt(warmup_steps / 4000)` when the
    warm-up was not set (`resolve_warmup_steps` shortened it): the peak of
    `lrate = scale * (d_model * warmup_steps)^-0.5` is then the paper's,
    reached sooner, and the rate decays as `step^-0.5` from there.
    """
    if config.warmup_steps is not None:
        return config.learning_rate_scale
    return config.learning_rate_scale * math.sqrt(warmup_steps / PAPER_WARMUP_STEPS)
