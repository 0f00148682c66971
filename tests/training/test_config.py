"""The training settings' single declaration: flags, resume keys, checks."""

import argparse
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from keras_transformer import cli
from keras_transformer import model_directory as layout
from keras_transformer.models import PRESETS
from keras_transformer.training import config as settings
from keras_transformer.training import trainer
from keras_transformer.training.config import TrainConfig

# The `keras-transformer train` flags before the declaration generated them.
TRAIN_FLAGS = {
    "--train", "--valid", "--output", "--preset", "--vocab-size",
    "--separate-vocabularies", "--epochs", "--steps-per-epoch", "--batch-size",
    "--batch-tokens", "--max-length", "--bucket-boundaries", "--warmup-steps",
    "--learning-rate-scale", "--max-minutes", "--seed", "--strategy", "--tpu",
    "--steps-per-execution", "--jit", "--no-jit", "--mixed-precision",
    "--checkpoint-every", "--keep-checkpoints", "--deterministic",
}  # fmt: skip
# Added with the model settings, the config file and fine-tuning.
NEW_FLAGS = {
    "--init-from", "--vocabulary-sentences", "--label-smoothing",
    "--bleu-sentences", "--bleu-beam-size", "--bleu-tokenize", "--devices",
    "--num-layers", "--num-decoder-layers", "--d-model", "--num-heads",
    "--d-ff", "--dropout", "--attention-dropout", "--activation-dropout",
    "--activation", "--normalize-first", "--no-normalize-first",
    "--layer-norm-epsilon", "--num-key-value-heads", "--position-encoding",
    "--max-wavelength", "--max-relative-position", "--max-positions",
    "--share-embeddings", "--no-share-embeddings", "--tie-output-embeddings",
    "--no-tie-output-embeddings",
}  # fmt: skip
# The settings that have no flag, and why.
UNFLAGGED = {
    "model_overrides",  # a dict, for the Python API (the model settings are flags)
    "verbose",  # Keras fit's verbosity; --verbose is the console switch
}
# The resume-compatibility keys before they came from the declaration.
OLD_RESUME_KEYS = {
    "train", "mixed_precision", "preset", "model_overrides", "vocab_size",
    "shared_vocabulary", "steps_per_epoch", "batch_size", "batch_tokens",
    "max_length", "bucket_boundaries", "seed",
}  # fmt: skip
NEW_RESUME_KEYS = {"init_from", *settings.MODEL_SETTINGS}


def _train_parser():
    return settings.add_setting_flags(argparse.ArgumentParser(), TrainConfig)


def _options(parser):
    return {o for a in parser._actions for o in a.option_strings} - {"-h", "--help"}


def test_every_field_is_declared_and_every_flag_is_generated():
    parser = _train_parser()
    destinations = {a.dest for a in parser._actions}
    for field in dataclasses.fields(TrainConfig):
        assert field.metadata["help"], field.name
        if settings.flag_name(field):
            assert field.name in destinations
    flagged = {f.name for f in settings.flagged_settings(TrainConfig)}
    assert destinations - {"help"} == flagged


def test_train_command_keeps_its_flags():
    train = cli.build_parser()._subparsers._group_actions[0].choices["train"]
    # --config: the settings file; --verbose: the console's switch.
    assert _options(train) - {"--config", "--verbose"} == TRAIN_FLAGS | NEW_FLAGS
    assert _options(_train_parser()) == TRAIN_FLAGS | NEW_FLAGS


def test_every_setting_has_a_flag_but_the_python_only_ones():
    flagged = {f.name for f in settings.flagged_settings(TrainConfig)}
    declared = {f.name for f in settings.declared_settings(TrainConfig)}
    assert declared - flagged == UNFLAGGED


def test_default_flags_give_the_default_config():
    args = cli.build_parser().parse_args(["train", "--train", "t", "--output", "o"])
    config = TrainConfig(**settings.settings_from_flags(args, TrainConfig))
    assert config == TrainConfig(train="t", output="o")


def test_every_flag_reaches_its_setting():
    args = _train_parser().parse_args([
        "--train", "tsv:a", "--valid", "tsv:b", "--output", "o",
        "--preset", "base", "--vocab-size", "100", "--separate-vocabularies",
        "--epochs", "3", "--steps-per-epoch", "7", "--batch-size", "8",
        "--batch-tokens", "900", "--max-length", "40",
        "--bucket-boundaries", "fine", "--warmup-steps", "5",
        "--learning-rate-scale", "0.5", "--max-minutes", "1.5", "--seed", "9",
        "--strategy", "default", "--tpu", "t1", "--steps-per-execution", "4",
        "--no-jit", "--mixed-precision", "mixed_float16",
        "--checkpoint-every", "0", "--keep-checkpoints", "2", "--deterministic",
    ])  # fmt: skip
    config = TrainConfig(**settings.settings_from_flags(args, TrainConfig))
    expected = dict(
        train="tsv:a", valid="tsv:b", output="o", preset="base", vocab_size=100,
        shared_vocabulary=False, epochs=3, steps_per_epoch=7, batch_size=8,
        batch_tokens=900, max_length=40, bucket_boundaries="fine",
        warmup_steps=5, learning_rate_scale=0.5, max_minutes=1.5, seed=9,
        strategy="default", tpu="t1", steps_per_execution=4, jit_compile=False,
        mixed_precision="mixed_float16", checkpoint_every=None,
        keep_checkpoints=2, deterministic=True,
    )  # fmt: skip
    assert {k: getattr(config, k) for k in expected} == expected
    jit = _train_parser().parse_args(["--train", "t", "--output", "o", "--jit"])
    assert settings.settings_from_flags(jit, TrainConfig)["jit_compile"] is True


def test_bad_flag_values_are_refused_by_the_parser(capsys):
    parser = cli.build_parser()
    for flag, value in [("--preset", "huge"), ("--epochs", "x")]:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["train", "--train", "t", "--output", "o", flag, value])
        assert exit_info.value.code == 2
        assert flag in capsys.readouterr().err


def test_resume_keys_come_from_the_declaration():
    declared = tuple(
        f.name for f in dataclasses.fields(TrainConfig) if f.metadata["resume"]
    )
    assert settings.resume_keys(TrainConfig) == declared
    assert trainer.RESUME_KEYS == settings.RESUME_KEYS == declared
    assert set(declared) == OLD_RESUME_KEYS | NEW_RESUME_KEYS


def test_a_run_without_newer_keys_still_resumes(tmp_path):
    config = TrainConfig(train="demo", output=str(tmp_path), vocab_size=50)
    saved = dataclasses.asdict(config)
    del saved["bucket_boundaries"], saved["mixed_precision"]  # older runs
    layout.write_json(layout.path(config.output, layout.CONFIG_FILE), saved)
    trainer._check_resumable(config)
    saved["seed"] = 1
    layout.write_json(layout.path(config.output, layout.CONFIG_FILE), saved)
    with pytest.raises(trainer.SetupError, match=r"seed: 1 -> 1234"):
        trainer._check_resumable(config)


def test_declared_choices_match_the_library():
    assert set(settings.PRESET_NAMES) == set(PRESETS)
    assert set(settings.BUCKET_BOUNDARY_NAMES) == set(trainer.BUCKET_BOUNDARIES)


@dataclasses.dataclass
class _Settings:
    name: str = settings.setting(help="Required.", resume=True, metavar="N")
    size: int = settings.setting(3, help="A count (100% covered).", group="sizes")
    rate: float | None = settings.setting(None, help="A rate.", group="sizes")
    mode: str = settings.setting("a", help="A mode.", choices=("a", "b"))
    fast: bool = settings.setting(False, help="A switch.")
    slow: bool = settings.setting(
        True, help="Inverted.", flag="--no-slow", action="store_false"
    )
    every: int | None = settings.setting(
        10, help="0: never.", from_flag=lambda value: value or None
    )
    hidden: int = settings.setting(1, help="No flag.", flag=False, resume=True)
    plain: int = 0  # not declared: no flag, not a resume key


def test_a_new_declared_setting_becomes_a_flag():
    parser = settings.add_setting_flags(argparse.ArgumentParser(), _Settings)
    assert _options(parser) == {
        "--name", "--size", "--rate", "--mode", "--fast", "--no-slow", "--every",
    }  # fmt: skip
    assert "sizes:" in parser.format_help() and "100% covered" in parser.format_help()
    args = parser.parse_args(["--name", "x", "--rate", "0.5", "--fast", "--no-slow"])
    values = settings.settings_from_flags(args, _Settings)
    assert values == dict(
        name="x", size=3, rate=0.5, mode="a", fast=True, slow=False, every=10
    )
    args = parser.parse_args(["--name", "x", "--size", "4", "--every", "0"])
    values = settings.settings_from_flags(args, _Settings)
    assert (values["size"], values["every"]) == (4, None)
    assert settings.resume_keys(_Settings) == ("name", "hidden")
    # --name is required, here or in a settings file: the parser lets it out.
    values = settings.settings_from_flags(parser.parse_args([]), _Settings)
    assert "name" not in values
    assert settings.missing_settings(_Settings, values) == ["--name"]
    # Only the flags given, even when given their default value.
    args = parser.parse_args(["--size", "3", "--no-slow", "--every", "0"])
    given = settings.settings_from_flags(args, _Settings, explicit_only=True)
    assert given == {"size": 3, "slow": False, "every": None}
    with pytest.raises(SystemExit):
        parser.parse_args(["--name", "x", "--mode", "c"])


def test_declaration_errors():
    with pytest.raises(ValueError, match="`dest` cannot be given"):
        settings.setting(1, help="h", dest="other")

    @dataclasses.dataclass
    class Ambiguous:
        value: int | str = settings.setting(1, help="Either.")

    with pytest.raises(ValueError, match="`value` needs an explicit `type`"):
        settings.add_setting_flags(argparse.ArgumentParser(), Ambiguous)


def test_the_declaration_reads_without_tensorflow_or_keras():
    package = os.path.dirname(os.path.dirname(settings.__file__))
    code = f"""
import sys, types
for name, path in [("keras_transformer", {package!r}),
                   ("keras_transformer.training", {package!r} + "/training")]:
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
from keras_transformer.training import config
from keras_transformer.training import settings_file
import json
print(json.dumps([config.RESUME_KEYS, "tensorflow" in sys.modules,
                  "keras" in sys.modules]))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    keys, tensorflow, keras = json.loads(result.stdout)
    assert tuple(keys) == settings.RESUME_KEYS
    assert not tensorflow and not keras


def test_config_checks_still_apply():
    with pytest.raises(ValueError, match=r"`epochs` must be a positive integer"):
        TrainConfig(train="t", output="o", epochs=0)
    with pytest.raises(ValueError, match=r"`mixed_precision` must be one of"):
        TrainConfig(train="t", output="o", mixed_precision="float16")
    with pytest.raises(ValueError, match=r"`max_length` must be at least 2"):
        TrainConfig(train="t", output="o", max_length=1)
