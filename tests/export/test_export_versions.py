"""`export` never overwrites a version: the next number, or a refusal."""

import os

import pytest
import tensorflow as tf

from keras_transformer import cli
from keras_transformer.export import export_translator
from keras_transformer.export import next_version
from keras_transformer.export import version_directories


class _EchoTranslator(tf.Module):
    """A stand-in with the `Translator`'s signatures, quick to save."""

    def __init__(self, tag):
        super().__init__()
        self.tag = tf.constant(tag)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    def translate(self, sentences):
        translations = tf.strings.join(
            [sentences, tf.fill(tf.shape(sentences), self.tag)]
        )
        return {"translations": translations, "scores": tf.zeros(tf.shape(sentences))}

    def signatures(self):
        function = self.translate.get_concrete_function()
        return {"serving_default": function, "translate_greedy": function}


def _served_tag(path):
    loaded = tf.saved_model.load(path)
    outputs = loaded.signatures["serving_default"](sentences=tf.constant(["x"]))
    return outputs["translations"].numpy()[0].decode()


def test_versions_count_up_and_are_never_overwritten(tmp_path):
    export_dir = tmp_path / "export"
    assert next_version(export_dir) == 1
    first = export_translator(_EchoTranslator("-a"), export_dir)
    second = export_translator(_EchoTranslator("-b"), export_dir)
    assert [os.path.basename(first), os.path.basename(second)] == ["1", "2"]

    with pytest.raises(FileExistsError, match=r"Version 2 already exists.*next one, 3"):
        export_translator(_EchoTranslator("-c"), export_dir, version=2)
    assert _served_tag(second) == "x-b"  # untouched

    # An explicit new version; numbering continues from the highest one, and
    # names that are not numbers (or not directories) do not count.
    (export_dir / "notes").mkdir()
    (export_dir / "7").write_text("a file, not a version")
    assert (
        os.path.basename(export_translator(_EchoTranslator("-d"), export_dir, 5)) == "5"
    )
    assert os.path.basename(export_translator(_EchoTranslator("-e"), export_dir)) == "6"
    assert version_directories(export_dir) == [1, 2, 5, 6]
    assert _served_tag(export_dir / "6") == "x-e"
    # Written under a temporary name, then renamed: nothing is left behind.
    assert sorted(os.listdir(export_dir)) == ["1", "2", "5", "6", "7", "notes"]


@pytest.mark.parametrize("version", [0, -1, True, "3", 1.0])
def test_bad_version(version, tmp_path):
    with pytest.raises(ValueError, match="positive integer"):
        export_translator(_EchoTranslator("-a"), tmp_path, version=version)
    assert os.listdir(tmp_path) == []


def test_cli_refuses_an_existing_version(small_model_dir, tmp_path, capsys):
    export_dir = tmp_path / "export"
    (export_dir / "1").mkdir(parents=True)
    (export_dir / "1" / "saved_model.pb").write_bytes(b"already served")
    code = cli.main(["export", "--model", str(small_model_dir), "--output",
                     str(export_dir), "--version", "1"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert "version 1 already exists" in err and "next one, 2" in err
    assert (export_dir / "1" / "saved_model.pb").read_bytes() == b"already served"

    # Without --version: the next number.
    code = cli.main(["export", "--model", str(small_model_dir), "--output",
                     str(export_dir), "--beam-size", "2"])  # fmt: skip
    assert code == 0
    assert f"{export_dir / '2'}" in capsys.readouterr().out
    assert version_directories(export_dir) == [1, 2]
    assert (export_dir / "1" / "saved_model.pb").read_bytes() == b"already served"
