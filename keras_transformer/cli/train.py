"""`keras-transformer train`: one flag per declared training setting, and
`--config FILE` for a YAML or JSON file of them (flags override the file)."""

from keras_transformer.cli.common import UserError


def add_command(commands):
    """`train`: one flag per `TrainConfig` setting declared with a flag."""
    from keras_transformer.training.config import TrainConfig
    from keras_transformer.training.config import add_setting_flags

    train = commands.add_parser(
        "train",
        help="Train a translator.",
        description="Train a translator. Each setting is a flag, or a key of "
        "the --config file (a flag given here overrides the file); the model "
        "settings default to the --preset's values.",
    )
    add_setting_flags(train, TrainConfig, config_flag="--config")


def run(args):
    from keras_transformer.training.config import SettingError
    from keras_transformer.training.config import TrainConfig
    from keras_transformer.training.config import flag_error_message
    from keras_transformer.training.settings_file import settings_from_args

    try:
        config = settings_from_args(args, TrainConfig)
    except SettingError as error:
        raise UserError(flag_error_message(TrainConfig, error)) from None
    except ValueError as error:  # the file, a value from it, a missing flag
        raise UserError(str(error)) from None
    return train(config)


def train(config):
    """Trains as `config` says; library errors in the input become one line."""
    from keras_transformer import data
    from keras_transformer.training.trainer import SetupError
    from keras_transformer.training.trainer import train_translator

    try:
        return train_translator(config)
    except (data.DataError, FileNotFoundError, SetupError) as error:
        raise UserError(str(error)) from None
