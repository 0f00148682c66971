"""Data SPEC strings of the command line."""

from keras_transformer.data.demo import demo_pairs
from keras_transformer.data.errors import DataError
from keras_transformer.data.readers import read_parallel_files
from keras_transformer.data.readers import read_tsv
from keras_transformer.data.tfds_source import load_tfds

SPEC_FORMS = (
    "demo[:MAX_NUMBER]",
    "tsv:PATH",
    "files:SOURCE_PATH,TARGET_PATH",
    "tfds:NAME[:SRC-TGT]",
)


def parse_spec(spec, split="train", data_dir=None):
    """The corpus a SPEC names.

    Forms:

    - `demo[:MAX_NUMBER]`: the embedded English->German number corpus of
      the numbers up to `MAX_NUMBER` (default 9999; `split` picks
      train/valid/test);
    - `tsv:PATH`: `source<TAB>target` lines;
    - `files:SOURCE_PATH,TARGET_PATH`: two line-aligned files;
    - `tfds:NAME[:SRC-TGT]`: a TFDS translation dataset, e.g.
      `tfds:wmt14_translate/de-en:en-de` (English -> German); `split` picks
      train/validation/test.

    Args:
        spec: the SPEC string.
        split: `"train"`, `"valid"` or `"test"` (used by `demo` and `tfds:`).
        data_dir: TFDS data directory.

    Returns:
        A `ParallelCorpus`.

    Raises:
        DataError: unknown SPEC or bad data.
    """
    if not isinstance(spec, str) or not spec:
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
        name, _, direction = rest.partition(":")
        source_language = target_language = None
        if direction:
            source_language, _, target_language = direction.partition("-")
            if not source_language or not target_language:
                raise DataError(f"{spec}: expected tfds:NAME:SRC-TGT, e.g. :en-de")
        return load_tfds(name, split, source_language, target_language, data_dir)
    raise DataError(
        f"unknown data SPEC {spec!r}; expected one of {', '.join(SPEC_FORMS)}"
    )
