"""Translation datasets from TensorFlow Datasets (e.g. WMT 2014)."""

import tensorflow as tf

from keras_transformer.data.corpus import DatasetCorpus
from keras_transformer.data.errors import DataError

# Our split names -> TFDS split names; other TFDS split strings (e.g.
# "train[:1%]") pass through.
SPLIT_NAMES = {"train": "train", "valid": "validation", "test": "test"}


def load_tfds(
    name,
    split="train",
    source_language=None,
    target_language=None,
    data_dir=None,
    download=True,
):
    """A TFDS translation dataset as `(source, target)` string pairs.

    Translation datasets such as `wmt14_translate/de-en` store each example
    as a dict of strings keyed by language code (`{"de": ..., "en": ...}`).
    This is `tfds.load(name, split=split)` with the two languages picked
    out in the chosen direction. The direction defaults to the dataset's
    `supervised_keys` (`de` -> `en` for `wmt14_translate/de-en`); pass
    `source_language="en", target_language="de"` for English -> German
    (giving one language picks the other one of the pair).

    Args:
        name: TFDS name, e.g. `"wmt14_translate/de-en"` (a version may
            follow: `"wmt14_translate/de-en:1.0.0"`).
        split: `"train"`, `"valid"` (TFDS's `"validation"`), `"test"` or any
            TFDS split string such as `"train[:1%]"`.
        source_language: language code of the source side.
        target_language: language code of the target side.
        data_dir: TFDS data directory (default `~/tensorflow_datasets`).
        download: whether TFDS may download and prepare the data.

    Returns:
        A `DatasetCorpus` streaming scalar `tf.string` pairs; its `name` is
        `tfds:NAME:SRC-TGT:SPLIT`.

    Raises:
        DataError: an unknown dataset, split or language, or data that
            cannot be downloaded or read.

    Example:

    >>> # Downloads and prepares WMT 2014 on first use:
    >>> corpus = load_tfds("wmt14_translate/de-en", "train",
    ...                    source_language="en",
    ...                    target_language="de")  # doctest: +SKIP
    >>> corpus.name  # doctest: +SKIP
    'tfds:wmt14_translate/de-en:en-de:train'
    """
    import tensorflow_datasets as tfds

    tfds_split = SPLIT_NAMES.get(split, split)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if download:
            builder.download_and_prepare()
        dataset = builder.as_dataset(split=tfds_split)
    except Exception as error:  # TFDS raises many types; report one line.
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise DataError(
            f"tfds:{name}: cannot load split {tfds_split!r}: "
            f"{type(error).__name__}: {message}"
        ) from None
    features = builder.info.features
    languages = [
        key for key in features.keys() if isinstance(features[key], tfds.features.Text)
    ]
    supervised = builder.info.supervised_keys
    if not (isinstance(supervised, tuple | list) and len(supervised) == 2):
        supervised = tuple(languages[:2])
    if len(languages) < 2:
        raise DataError(
            f"tfds:{name}: not a translation dataset (string features: "
            f"{languages}; expected one per language)"
        )
    if source_language is None and target_language is None:
        source_language, target_language = supervised
    elif target_language is None:
        target_language = _other(supervised, source_language, languages)
    elif source_language is None:
        source_language = _other(supervised, target_language, languages)
    for language in (source_language, target_language):
        if language not in languages:
            raise DataError(
                f"tfds:{name}: no language {language!r}; it has {languages}"
            )
    if source_language == target_language:
        raise DataError(f"tfds:{name}: source and target are both {source_language!r}")
    pairs = dataset.map(
        lambda example: (example[source_language], example[target_language]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return DatasetCorpus(
        pairs, name=f"tfds:{name}:{source_language}-{target_language}:{tfds_split}"
    )


def _other(supervised, language, languages):
    """The language paired with `language`: the other supervised key."""
    others = [code for code in supervised if code != language] or [
        code for code in languages if code != language
    ]
    return others[0] if others else language
