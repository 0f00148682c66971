"""Data SPEC strings of the command line."""

import re

from keras_transformer.data.demo import demo_pairs
from keras_transformer.data.errors import DataError
from keras_transformer.data.readers import read_parallel_files
from keras_transformer.data.readers import read_tsv
from keras_transformer.data.tfds_source import load_tfds

SPEC_FORMS = (
    "demo[:MAX_NUMBER]",
    "tsv:PATH",
    "files:SOURCE_PATH,TARGET_PATH",
    "tfds:NAME[:VERSION][:SRC-TGT]",
)

_VERSION = re.compile(r"^(\d+|\*)(\.(\d+|\*)){0,2}$")


def parse_spec(spec, split="train", data_dir=None):
    """The corpus a data SPEC names (the `--train`/`--valid`/`--test` flags).

    Forms:

    - `demo[:MAX_NUMBER]`: the embedded English -> German number-words
      corpus of the numbers `0..MAX_NUMBER` (default 9999); `split` picks
      its train/valid/test numbers.
    - `tsv:PATH`: `source<TAB>target` lines (`read_tsv`).
    - `files:SOURCE_PATH,TARGET_PATH`: two line-aligned files
      (`read_parallel_files`).
    - `tfds:NAME[:VERSION][:SRC-TGT]`: a TFDS translation dataset
      (`load_tfds`), e.g. `tfds:wmt14_translate/de-en:en-de` for English ->
      German (`en->de` also works; without it, the dataset's own direction);
      `split` picks train/validation/test.

    Files are checked now, so bad data fails before training starts.

    Args:
        spec: the SPEC string.
        split: `"train"`, `"valid"` or `"test"` (used by `demo` and `tfds:`;
            `tsv:`/`files:` name their split by their path).
        data_dir: TFDS data directory.

    Returns:
        A `ParallelCorpus`.

    Raises:
        DataError: an unknown SPEC or bad data, in one line.

    Example:

    >>> corpus = parse_spec("demo", split="test")
    >>> len(corpus)
    990
    >>> # Downloads and prepares WMT 2014 on first use:
    >>> parse_spec("tfds:wmt14_translate/de-en:en-de",
    ...            split="valid").name  # doctest: +SKIP
    'tfds:wmt14_translate/de-en:en-de:validation'
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"empty data SPEC; expected one of {', '.join(SPEC_FORMS)}")
    kind, _, rest = spec.partition(":")
    if kind == "demo":
        if not rest:
            return demo_pairs(split)
        if not rest.isdigit() or int(rest) < 100:
            raise DataError(f"{spec}: expected demo:MAX_NUMBER with MAX_NUMBER >= 100")
        return demo_pairs(split, max_number=int(rest))
    if kind == "tsv" and rest:
        return read_tsv(rest)
    if kind == "files" and rest:
        paths = rest.split(",")
        if len(paths) != 2 or not all(paths):
            raise DataError(f"{spec}: expected files:SOURCE_PATH,TARGET_PATH")
        return read_parallel_files(*paths)
    if kind == "tfds" and rest:
        name, source_language, target_language = _tfds_spec(spec, rest)
        return load_tfds(name, split, source_language, target_language, data_dir)
    raise DataError(
        f"unknown data SPEC {spec!r}; expected one of {', '.join(SPEC_FORMS)}"
    )


def _tfds_spec(spec, rest):
    """`NAME[:VERSION][:SRC-TGT]` -> `(name, source, target)`."""
    parts = rest.split(":")
    name, parts = parts[0], parts[1:]
    if parts and _VERSION.match(parts[0]):
        name, parts = f"{name}:{parts[0]}", parts[1:]
    if not name or len(parts) > 1:
        raise DataError(f"{spec}: expected tfds:NAME[:VERSION][:SRC-TGT]")
    if not parts:
        return name, None, None
    direction = parts[0]
    languages = direction.split("->") if "->" in direction else direction.split("-")
    if len(languages) != 2 or not all(languages):
        raise DataError(
            f"{spec}: expected tfds:NAME:SRC-TGT with two language codes, "
            "e.g. tfds:wmt14_translate/de-en:en-de"
        )
    return name, languages[0], languages[1]
