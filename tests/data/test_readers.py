import re

import pytest

from keras_transformer.data import DataError
from keras_transformer.data import read_parallel_files
from keras_transformer.data import read_tsv


def _write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _graph_pairs(corpus):
    return [(s.decode(), t.decode()) for s, t in corpus.dataset().as_numpy_iterator()]


def _raises(message, function, *args):
    """Calls `function` and checks the one-line `DataError` message."""
    with pytest.raises(DataError) as info:
        function(*args)
    text = str(info.value)
    assert "\n" not in text
    assert re.search(message, text), text
    return text


def test_tsv_reads_pairs_and_streams_the_same(tmp_path):
    path = _write(
        tmp_path / "a.tsv",
        "one\teins\n\n  two two \t zwei zwei\r\n   \nfünf\tfünf\n",
    )
    corpus = read_tsv(path)
    expected = [("one", "eins"), ("two two", "zwei zwei"), ("fünf", "fünf")]
    assert list(corpus) == list(corpus) == expected  # re-iterable
    assert len(corpus) == 3
    assert _graph_pairs(corpus) == expected
    assert corpus.name == f"tsv:{path}"


def test_tsv_byte_order_mark_and_last_line_without_newline(tmp_path):
    path = _write(tmp_path / "bom.tsv", "\ufeffone\teins\r\ntwo\tzwei")
    corpus = read_tsv(path)
    assert list(corpus) == [("one", "eins"), ("two", "zwei")]
    assert _graph_pairs(corpus) == list(corpus)


@pytest.mark.parametrize(
    "content, message",
    [
        ("one\teins\ntwo zwei\n", r"a\.tsv:2: expected 'source<TAB>target', found 0 tabs"),
        ("one\teins\nx\ty\tz\n", r"a\.tsv:2: expected 'source<TAB>target', found 2 tabs"),
        ("one\teins\ntwo\tzwei\t\n", r"a\.tsv:2: .* found 2 tabs"),
        ("one\teins\n\tzwei\n", r"a\.tsv:2: the source side is empty"),
        ("one\t \n", r"a\.tsv:1: the target side is empty"),
        (b"one\teins\n\nzw\xffei\tzwei\n", r"a\.tsv:3: not valid UTF-8 \(byte 3 "),
        ("", r"a\.tsv: the file is empty"),
        ("\n \n", r"a\.tsv: no sentence pairs"),
    ],
)  # fmt: skip
def test_tsv_bad_input(tmp_path, content, message):
    path = _write(tmp_path / "a.tsv", content)
    _raises(message, read_tsv, path)


def test_missing_path_and_directory(tmp_path):
    _raises(r"missing\.tsv: no such file", read_tsv, tmp_path / "missing.tsv")
    _raises(r"is a directory", read_tsv, tmp_path)
    _write(tmp_path / "t.txt", "eins\n")
    _raises(r"s\.txt: no such file", read_parallel_files, tmp_path / "s.txt",
            tmp_path / "t.txt")  # fmt: skip


def test_bad_line_is_reported_before_anything_is_read(tmp_path):
    # The whole file is checked when the corpus is made: a bad last line of
    # a long file fails now, not in the middle of training.
    lines = [f"sentence {i}\tSatz {i}\n" for i in range(20_000)] + ["broken\n"]
    path = _write(tmp_path / "long.tsv", "".join(lines))
    _raises(r"long\.tsv:20001: expected 'source<TAB>target', found 0 tabs",
            read_tsv, path)  # fmt: skip


def test_two_files(tmp_path):
    source = _write(tmp_path / "src.txt", "one\n\n two\r\nthree\n\n\n")
    target = _write(tmp_path / "tgt.txt", "\ufeffeins\n\nzwei \r\ndrei\n")
    corpus = read_parallel_files(source, target)
    expected = [("one", "eins"), ("two", "zwei"), ("three", "drei")]
    assert list(corpus) == expected and len(corpus) == 3
    assert _graph_pairs(corpus) == expected


@pytest.mark.parametrize(
    "source, target, message",
    [
        ("one\ntwo\nthree\n", "eins\nzwei\n",
         r"src\.txt:3: 3 lines, but \S*tgt\.txt has 2 \(the files must be line-aligned\)"),
        ("one\n", "eins\nzwei\n\n", r"tgt\.txt:2: 3 lines, but \S*src\.txt has 1"),
        ("one\n\n", "eins\nzwei\n", r"src\.txt:2: blank line, but line 2 of \S*tgt\.txt"),
        ("one\ntwo\n", "eins\n \n", r"tgt\.txt:2: blank line, but line 2 of \S*src\.txt"),
        (b"one\n\xc3\n", "eins\nzwei\n", r"src\.txt:2: not valid UTF-8 \(byte 1 "),
        ("one\n", b"eins\xe2\x82\n", r"tgt\.txt:1: not valid UTF-8 \(byte 5 "),
        ("", "eins\n", r"src\.txt: the file is empty"),
        ("one\n", "", r"tgt\.txt: the file is empty"),
        ("\n", "\n", r"src\.txt: no sentence pairs"),
    ],
)  # fmt: skip
def test_two_files_bad_input(tmp_path, source, target, message):
    source_path = _write(tmp_path / "src.txt", source)
    target_path = _write(tmp_path / "tgt.txt", target)
    _raises(message, read_parallel_files, source_path, target_path)
