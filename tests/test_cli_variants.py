"""A variant trained from the command line round-trips through export."""

import json

import pytest
from num2words import num2words

from keras_transformer import cli
from keras_transformer import model_directory

VARIANT = {
    "--position-encoding": "relative",
    "--max-relative-position": "8",
    "--num-key-value-heads": "1",
    "--num-layers": "1",
    "--d-model": "32",
    "--num-heads": "2",
    "--d-ff": "64",
}


@pytest.mark.slow
def test_a_cli_trained_variant_exports_and_translates_the_same(tmp_path, capsys):
    train = tmp_path / "train.tsv"
    lines = [f"{num2words(n)}\t{num2words(n, lang='de')}" for n in range(0, 300, 3)]
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    model_dir = tmp_path / "model"
    flags = [item for pair in VARIANT.items() for item in pair]
    assert cli.main([
        "train", "--train", f"tsv:{train}", "--output", str(model_dir),
        "--normalize-first", "--epochs", "1", "--steps-per-epoch", "3",
        "--vocab-size", "60", "--batch-size", "16", *flags,
    ]) == 0  # fmt: skip
    model, _, _ = model_directory.load_model_and_vocabularies(model_dir)
    config = model.get_config()
    assert config["position_encoding"] == "relative"
    assert (config["num_key_value_heads"], config["normalize_first"]) == (1, True)
    assert (config["d_model"], config["num_layers"]) == (32, 1)
    saved = json.loads((model_dir / "train_config.json").read_text())
    assert saved["position_encoding"] == "relative" and saved["d_model"] == 32

    sentences = ["one", "two hundred and five", "ninety-nine"]
    capsys.readouterr()
    assert cli.main(["translate", "--model", str(model_dir), "--beam-size", "2",
                     *sentences]) == 0  # fmt: skip
    from_model_dir = capsys.readouterr().out
    export_dir = tmp_path / "export"
    assert cli.main(["export", "--model", str(model_dir), "--output",
                     str(export_dir), "--beam-size", "2"]) == 0  # fmt: skip
    capsys.readouterr()
    assert cli.main(["translate", "--model", str(export_dir), *sentences]) == 0
    assert capsys.readouterr().out == from_model_dir
    assert len(from_model_dir.splitlines()) == 3
