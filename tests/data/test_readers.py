import pytest

from keras_transformer.data import DataError
from keras_transformer.data import parse_spec
from keras_transformer.data import read_parallel_files
from keras_transformer.data import read_tsv


def _write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_tsv_pairs_and_dataset_agree(tmp_path):
    path = _write(tmp_path / "a.tsv", "one\teins\n\ntwo two\tzwei zwei\n")
    corpus = read_tsv(path)
    assert list(corpus) == [("one", "eins"), ("two two", "zwei zwei")]
    assert len(corpus) == 2
    from_graph = [
        (s.decode(), t.decode()) for s, t in corpus.dataset().as_numpy_iterator()
    ]
    assert from_graph == list(corpus)


@pytest.mark.parametrize(
    "content, message",
    [
        ("one\teins\ntwo zwei\n", "a.tsv:2: expected 'source<TAB>target', found 0 tab"),
        ("one\teins\nx\ty\tz\n", "a.tsv:2: expected 'source<TAB>target', found 2 tab"),
        ("one\teins\n\tzwei\n", "a.tsv:2: the source side is empty"),
        ("one\t \n", "a.tsv:1: the target side is empty"),
        (b"one\teins\nzw\xffei\tzwei\n", "a.tsv:2: not valid UTF-8"),
        ("", "a.tsv: the file is empty"),
        ("\n\n", "a.tsv: no sentence pairs"),
    ],
)
def test_tsv_bad_input(tmp_path, content, message):
    path = _write(tmp_path / "a.tsv", content)
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        read_tsv(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="missing.tsv: no such file"):
        read_tsv(tmp_path / "missing.tsv")


def test_two_files(tmp_path):
    source = _write(tmp_path / "src.txt", "one\ntwo\n")
    target = _write(tmp_path / "tgt.txt", "eins\nzwei\n")
    corpus = read_parallel_files(source, target)
    assert list(corpus) == [("one", "eins"), ("two", "zwei")]
    pairs = [(s.decode(), t.decode()) for s, t in corpus.dataset().as_numpy_iterator()]
    assert pairs == list(corpus)


@pytest.mark.parametrize(
    "source, target, message",
    [
        ("one\ntwo\nthree\n", "eins\nzwei\n", "tgt.txt: ends before line 3"),
        ("one\n", "eins\nzwei\n", "src.txt: ends before line 2"),
        ("one\n\n", "eins\nzwei\n", "src.txt:2: empty line"),
        (b"one\n\xc3\n", "eins\nzwei\n", "src.txt:2: not valid UTF-8"),
        ("", "eins\n", "src.txt: the file is empty"),
    ],
)
def test_two_files_bad_input(tmp_path, source, target, message):
    source_path = _write(tmp_path / "src.txt", source)
    target_path = _write(tmp_path / "tgt.txt", target)
    with pytest.raises(DataError, match=message):
        read_parallel_files(source_path, target_path)


def test_specs(tmp_path):
    path = _write(tmp_path / "a.tsv", "one\teins\n")
    assert list(parse_spec(f"tsv:{path}")) == [("one", "eins")]
    _write(tmp_path / "s.txt", "one\n")
    _write(tmp_path / "t.txt", "eins\n")
    spec = f"files:{tmp_path / 's.txt'},{tmp_path / 't.txt'}"
    assert list(parse_spec(spec)) == [("one", "eins")]
    assert len(parse_spec("demo", split="test")) == 990
    assert len(parse_spec("demo:999", split="test")) == 90


@pytest.mark.parametrize(
    "spec, message",
    [
        ("csv:x", "unknown data SPEC 'csv:x'"),
        ("", "empty data SPEC"),
        ("demo:12", "MAX_NUMBER >= 100"),
        ("files:a.txt", "expected files:SOURCE_PATH,TARGET_PATH"),
        ("tfds:wmt14_translate/de-en:en", "expected tfds:NAME:SRC-TGT"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(DataError, match=message):
        parse_spec(spec)
