import pytest

from keras_transformer.data import DataError
from keras_transformer.data import demo_pairs
from keras_transformer.data import parse_spec


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_file_specs(tmp_path):
    path = _write(tmp_path / "a.tsv", "one\teins\n")
    assert list(parse_spec(f"tsv:{path}")) == [("one", "eins")]
    _write(tmp_path / "s.txt", "one\n")
    _write(tmp_path / "t.txt", "eins\n")
    spec = f"files:{tmp_path / 's.txt'},{tmp_path / 't.txt'}"
    assert list(parse_spec(spec, split="valid")) == [("one", "eins")]


def test_demo_specs():
    assert list(parse_spec("demo", split="test")) == list(demo_pairs("test"))
    assert len(parse_spec("demo")) == 8515
    assert len(parse_spec("demo:999", split="test")) == 90


@pytest.mark.parametrize(
    "spec, message",
    [
        ("csv:x", "unknown data SPEC 'csv:x'; expected one of demo"),
        ("tsv:", "unknown data SPEC"),
        ("", "empty data SPEC"),
        ("demo:12", "MAX_NUMBER >= 100"),
        ("demo:ten", "MAX_NUMBER >= 100"),
        ("files:a.txt", "expected files:SOURCE_PATH,TARGET_PATH"),
        ("files:a.txt,", "expected files:SOURCE_PATH,TARGET_PATH"),
        ("tfds:wmt14_translate/de-en:en", "expected tfds:NAME:SRC-TGT"),
        ("tfds:wmt14_translate/de-en:en-de:x", r"expected tfds:NAME\[:VERSION\]"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(DataError, match=message):
        parse_spec(spec)


def test_file_errors_pass_through(tmp_path):
    with pytest.raises(DataError, match=r"nope\.tsv: no such file"):
        parse_spec(f"tsv:{tmp_path / 'nope.tsv'}")
