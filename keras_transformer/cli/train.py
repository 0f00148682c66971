"""`keras-transformer train`: one flag per declared training setting."""

from keras_transformer.cli.common import UserError


def add_command(commands):
    """`train`: one flag per `TrainConfig` setting declared with a flag."""
    from keras_transformer.training.config import TrainConfig
    from keras_transformer.training.config import add_setting_flags

    train = commands.add_parser("train", help="Train a translator.")
    add_setting_flags(train, TrainConfig)


def run(args):
    from keras_transformer.training.config import SettingError
    from keras_transformer.training.config import TrainConfig
    from keras_transformer.training.config import flag_error_message
    from keras_transformer.training.config import settings_from_flags

    try:
        config = TrainConfig(**settings_from_flags(args, TrainConfig))
    except SettingError as error:
        raise UserError(flag_error_message(TrainConfig, error)) from None
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
