"""Model settings as flags and in a config file; warm-up; vocabulary size.

Each model flag must reach the built `Transformer` (its parameter count and
`get_config()` match the API's model with the same argument); a `--config`
file and flags combine as documented (defaults < preset < file < flags); a
resumed run with another architecture is refused. Nothing here trains.
"""

import dataclasses
import inspect
import json
import math
import types

import keras
import pytest

from keras_transformer import cli
from keras_transformer import data
from keras_transformer import model_directory as layout
from keras_transformer.models import Transformer
from keras_transformer.training import trainer
from keras_transformer.training.config import MODEL_SETTINGS
from keras_transformer.training.config import POSITION_ENCODINGS
from keras_transformer.training.config import TrainConfig
from keras_transformer.training.config import planned_train_steps
from keras_transformer.training.config import resolve_warmup_steps
from keras_transformer.training.config import warmup_scale
from keras_transformer.training.model_settings import model_arguments
from keras_transformer.training.settings_file import SettingsFileError
from keras_transformer.training.settings_file import settings_from_args

VOCABULARY = types.SimpleNamespace(vocab_size=48)  # build_model reads its size
REQUIRED = ["--train", "demo", "--output", "unused"]

# flag arguments -> the constructor arguments they mean (each changes the
# model; those marked in WEIGHTLESS change no parameter count).
MODEL_FLAGS = [
    (["--num-layers", "1"], {"num_layers": 1}),
    (["--num-decoder-layers", "3"], {"num_decoder_layers": 3}),
    (["--d-model", "64"], {"d_model": 64}),
    (["--num-heads", "8"], {"num_heads": 8}),
    (["--d-ff", "96"], {"d_ff": 96}),
    (["--dropout", "0.25"], {"dropout": 0.25}),
    (["--attention-dropout", "0.05"], {"attention_dropout": 0.05}),
    (["--activation-dropout", "0.15"], {"activation_dropout": 0.15}),
    (["--activation", "gelu"], {"activation": "gelu"}),
    (["--normalize-first"], {"normalize_first": True}),
    (["--layer-norm-epsilon", "1e-5"], {"layer_norm_epsilon": 1e-5}),
    (["--num-key-value-heads", "1"], {"num_key_value_heads": 1}),
    (["--position-encoding", "learned"], {"position_encoding": "learned"}),
    (["--max-wavelength", "500"], {"max_wavelength": 500.0}),
    (
        ["--position-encoding", "relative", "--max-relative-position", "4"],
        {"position_encoding": "relative", "max_relative_position": 4},
    ),
    (
        ["--position-encoding", "learned", "--max-positions", "64"],
        {"position_encoding": "learned", "max_positions": 64},
    ),
    (["--no-share-embeddings"], {"share_embeddings": False}),
    (["--no-tie-output-embeddings"], {"tie_output_embeddings": False}),
]
WEIGHTLESS = {
    "num_heads", "dropout", "attention_dropout", "activation_dropout",
    "activation", "layer_norm_epsilon", "max_wavelength",
}  # fmt: skip


def _config(argv, required=REQUIRED):
    args = cli.build_parser().parse_args(["train", *required, *argv])
    return settings_from_args(args, TrainConfig)


def _built(model):
    model.build()
    return model


def _architecture(model):
    return {k: v for k, v in model.get_config().items() if k != "name"}


def _count(model):
    return int(sum(math.prod(w.shape) for w in model.weights))


def test_the_model_settings_are_the_constructor_arguments():
    parameters = set(inspect.signature(Transformer.__init__).parameters)
    # Given by the vocabularies and the package's special ids.
    not_settings = {"self", "kwargs", "vocabulary_size", "target_vocabulary_size"}
    not_settings |= {"pad_id", "bos_id", "eos_id"}
    assert set(MODEL_SETTINGS) == parameters - not_settings
    covered = {name for _, arguments in MODEL_FLAGS for name in arguments}
    assert covered == set(MODEL_SETTINGS)
    assert set(POSITION_ENCODINGS) == {"sinusoidal", "learned", "rotary", "relative"}


@pytest.mark.parametrize(
    "argv, arguments", MODEL_FLAGS, ids=[a[0].strip("-") for a, _ in MODEL_FLAGS]
)
def test_every_model_flag_reaches_the_built_model(argv, arguments):
    config = _config(argv)
    model = _built(trainer.build_model(config, VOCABULARY, VOCABULARY))
    expected = _built(Transformer.from_preset("tiny", vocabulary_size=48, **arguments))
    default = _built(Transformer.from_preset("tiny", vocabulary_size=48))
    assert _count(model) == _count(expected) == model.count_params()
    if not set(arguments) <= WEIGHTLESS:
        assert _count(model) != _count(default)
    saved = model.get_config()
    for name, value in arguments.items():
        assert saved[name] == value, name
        assert saved[name] != default.get_config()[name], name
    assert keras.activations.serialize(model.activation) == saved["activation"]


def test_no_model_flag_builds_the_preset():
    for preset in ("tiny", "base"):
        config = _config(["--preset", preset])
        model = trainer.build_model(config, VOCABULARY, VOCABULARY)
        expected = Transformer.from_preset(preset, vocabulary_size=48)
        assert _architecture(model) == _architecture(expected)


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_config_file_and_flags_combine_as_documented(tmp_path):
    yaml_file = _write(
        tmp_path / "run.yaml",
        "train: tsv:corpus.tsv\noutput: runs/mid\npreset: base\n"
        "num_layers: 3\nd-model: 256\n--num-heads: 4\nd_ff: 1024\n"
        "layer_norm_epsilon: 1e-5\nseparate_vocabularies: true\n"
        "epochs: 5\nlabel_smoothing: 0.2\ncheckpoint_every: 0\n",
    )
    config = _config(
        ["--config", yaml_file, "--d-model", "128", "--epochs", "7"], required=[]
    )
    # Flags override the file ...
    assert (config.d_model, config.epochs) == (128, 7)
    # ... the file overrides the defaults, under its own and the flags' names ...
    assert (config.train, config.output, config.preset) == (
        "tsv:corpus.tsv",
        "runs/mid",
        "base",
    )
    assert (config.num_layers, config.num_heads, config.d_ff) == (3, 4, 1024)
    assert config.layer_norm_epsilon == 1e-5  # YAML reads 1e-5 as a string
    assert config.shared_vocabulary is False
    assert config.label_smoothing == 0.2 and config.checkpoint_every is None
    # ... and the preset gives the model settings the file leaves out.
    arguments = model_arguments(config)
    assert arguments["dropout"] == 0.1 and arguments["num_layers"] == 3
    model = trainer.build_model(config, VOCABULARY, VOCABULARY)
    expected = Transformer.from_preset(
        "base",
        vocabulary_size=48,
        num_layers=3,
        d_model=128,
        num_heads=4,
        d_ff=1024,
        layer_norm_epsilon=1e-5,
    )
    assert _architecture(model) == _architecture(expected)
    # A flag given with the default value still overrides the file.
    flags = ["--config", yaml_file, "--preset", "tiny"]
    assert _config(flags, required=[]).preset == "tiny"
    # JSON, with the required settings as flags.
    json_file = _write(tmp_path / "run.json", json.dumps({"num_layers": 1}))
    config = _config(["--config", json_file])
    assert config.num_layers == 1 and config.train == "demo"


@pytest.mark.parametrize(
    "text, message",
    [
        ("num_layer: 2\n", "unknown setting 'num_layer'; did you mean 'num_layers'?"),
        (
            "num_layers: two\n",
            "setting 'num_layers' must be an integer. Received: 'two'",
        ),
        ("num_layers: true\n", "setting 'num_layers' must be an integer"),
        ("num_layers: 0\n", "setting 'num_layers' must be a positive integer"),
        ("dropout: 1.5\n", "setting 'dropout' must be a number in [0, 1)"),
        ("position_encoding: alibi\n", "setting 'position_encoding' must be one of"),
        ("normalize_first: maybe\n", "setting 'normalize_first' must be true or false"),
        ("epochs: null\n", "setting 'epochs' cannot be null"),
        ("- num_layers\n", "must be a mapping of setting names to values"),
        ("num_layers: [\n", "not valid YAML at line"),
    ],
)
def test_config_file_errors_are_one_line_naming_file_and_key(
    tmp_path, capsys, text, message
):
    path = _write(tmp_path / "bad.yaml", text)
    code = cli.main(["train", "--config", path, *REQUIRED])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"keras-transformer train: error: {path}: ")
    assert message in err


def test_missing_or_unreadable_settings(tmp_path, capsys):
    assert cli.main(["train", "--output", "o"]) == 2
    assert capsys.readouterr().err == (
        "keras-transformer train: error: the following arguments are "
        "required: --train\n"
    )
    assert cli.main(["train", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: cannot read the settings file" in capsys.readouterr().err
    # A bad flag is still named as a flag, over a valid file.
    path = _write(tmp_path / "ok.yaml", "num_layers: 2\n")
    assert cli.main(["train", "--config", path, *REQUIRED, "--num-layers", "0"]) == 2
    assert capsys.readouterr().err.startswith(
        "keras-transformer train: error: argument --num-layers: must be a "
        "positive integer"
    )
    with pytest.raises(SettingsFileError, match="given twice"):
        path = _write(tmp_path / "twice.yaml", "d_model: 8\nd-model: 8\n")
        _config(["--config", path])


def test_an_impossible_architecture_is_one_line_before_any_file(tmp_path, capsys):
    output = tmp_path / "out"
    argv = ["train", "--train", "demo", "--output", str(output)]
    assert cli.main([*argv, "--d-model", "100", "--num-heads", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-transformer train: error: model settings: ")
    assert "d_model" in err and err.count("\n") == 1
    shared = ["--share-embeddings", "--separate-vocabularies"]
    assert cli.main([*argv, *shared]) == 2
    err = capsys.readouterr().err
    assert "--share-embeddings needs one vocabulary" in err
    assert err.count("\n") == 1
    assert not output.exists()


def _saved_run(tmp_path, config):
    layout.write_json(
        layout.path(config.output, layout.CONFIG_FILE), dataclasses.asdict(config)
    )


def test_a_resumed_run_with_another_architecture_is_refused(tmp_path):
    config = TrainConfig(train="demo", output=str(tmp_path), num_layers=2)
    _saved_run(tmp_path, config)
    trainer._check_resumable(config)
    # The same model in other words: the preset's own value, or an override.
    trainer._check_resumable(dataclasses.replace(config, num_layers=None))
    trainer._check_resumable(
        dataclasses.replace(config, num_layers=None, model_overrides={"num_layers": 2})
    )
    changed = dataclasses.replace(config, num_layers=3, activation="gelu", seed=7)
    with pytest.raises(trainer.SetupError) as error:
        trainer._check_resumable(changed)
    message = str(error.value)
    assert "seed: 1234 -> 7" in message
    assert "num_layers: 2 -> 3" in message and "activation: 'relu' -> 'gelu'" in message
    assert "d_model" not in message
    with pytest.raises(trainer.SetupError, match=r"d_model: 128 -> 512"):
        trainer._check_resumable(dataclasses.replace(config, preset="base"))


def test_an_old_train_config_without_model_settings_resumes(tmp_path):
    current = trainer.demo_config(output=str(tmp_path))
    old = dataclasses.asdict(current)
    for name in (*MODEL_SETTINGS, "init_from"):
        del old[name]
    # Before the model settings, the demo set its model with overrides.
    old["model_overrides"] = {
        "num_layers": 2,
        "d_model": 128,
        "num_heads": 4,
        "d_ff": 256,
    }
    layout.write_json(layout.path(current.output, layout.CONFIG_FILE), old)
    trainer._check_resumable(current)
    with pytest.raises(trainer.SetupError, match=r"d_ff: 256 -> 512"):
        trainer._check_resumable(dataclasses.replace(current, d_ff=None))


def test_warmup_scales_to_the_planned_steps():
    config = TrainConfig(train="demo", output="o")
    assert planned_train_steps(config, 30) == 300
    assert planned_train_steps(dataclasses.replace(config, steps_per_epoch=7), 30) == 70
    assert [resolve_warmup_steps(config, n) for n in (3, 300, 40_000, 10**6)] == [
        1, 30, 4000, 4000,
    ]  # fmt: skip
    assert resolve_warmup_steps(config, None) == 4000
    assert resolve_warmup_steps(dataclasses.replace(config, warmup_steps=50), 300) == 50
    with pytest.raises(ValueError, match="planned_steps"):
        resolve_warmup_steps(config, 0)
    # The schedule's peak stays the paper's (d_model^-0.5 * 4000^-0.5).
    for planned in (300, 10**6):
        model = trainer.build_model(
            config, VOCABULARY, VOCABULARY, planned_steps=planned
        )
        schedule = model.optimizer._learning_rate
        warmup = resolve_warmup_steps(config, planned)
        assert schedule.warmup_steps == warmup
        peak = float(schedule(warmup - 1))
        assert peak == pytest.approx((128 * 4000) ** -0.5, rel=1e-5)
        assert float(schedule(warmup)) < peak and float(schedule(warmup - 2)) < peak
    # A warm-up given is used as given, with the scale given.
    given = dataclasses.replace(config, warmup_steps=50, learning_rate_scale=0.5)
    assert warmup_scale(given, 50) == 0.5
    model = trainer.build_model(given, VOCABULARY, VOCABULARY, planned_steps=300)
    assert model.optimizer._learning_rate.warmup_steps == 50
    assert model.optimizer._learning_rate.scale == 0.5


def test_build_model_says_the_warmup_it_used(capsys):
    config = TrainConfig(train="demo", output="o")
    trainer.build_model(config, VOCABULARY, VOCABULARY, planned_steps=300)
    assert capsys.readouterr().out == (
        "Warm-up: 30 steps, a tenth of the run's planned steps (the paper's "
        "4000 when the run plans 40000 or more; --warmup-steps sets it).\n"
    )
    trainer.build_model(config, VOCABULARY, VOCABULARY, planned_steps=10**6)
    assert capsys.readouterr().out == ""


def test_a_resumed_run_keeps_the_warmup_it_started_with(tmp_path):
    config = TrainConfig(train="demo", output=str(tmp_path), epochs=2)
    trainer._write_config(config, {"batches": 150})  # 300 planned: 30
    # Resumed with more epochs (600 planned): the warm-up stays 30.
    more = dataclasses.replace(config, epochs=4)
    trainer._write_config(more, {"batches": 150})
    model = trainer.build_model(more, VOCABULARY, VOCABULARY, planned_steps=600)
    assert model.optimizer._learning_rate.warmup_steps == 30
    # A new run in another directory plans afresh.
    fresh = dataclasses.replace(more, output=str(tmp_path / "new"))
    model = trainer.build_model(fresh, VOCABULARY, VOCABULARY, planned_steps=600)
    assert model.optimizer._learning_rate.warmup_steps == 60


def test_an_impossible_vocabulary_size_says_what_was_used(tmp_path, capsys):
    pairs = data.parse_spec("demo", split="train")
    config = TrainConfig(train="demo", output=str(tmp_path), vocab_size=32_000)
    (source, target), new = trainer._vocabularies(config, pairs)
    assert new and source is target and source.vocab_size < 32_000
    assert capsys.readouterr().out == (
        f"Vocabulary: {source.vocab_size} pieces (--vocab-size 32000 asked; "
        "the training data allows no more).\n"
    )
    separate = dataclasses.replace(config, shared_vocabulary=False)
    (source, target), _ = trainer._vocabularies(separate, pairs)
    assert capsys.readouterr().out == (
        f"Vocabulary: source {source.vocab_size}, target {target.vocab_size} "
        "pieces (--vocab-size 32000 asked; the training data allows no more).\n"
    )
    enough = dataclasses.replace(config, vocab_size=40)
    trainer._vocabularies(enough, pairs)
    assert capsys.readouterr().out == ""
