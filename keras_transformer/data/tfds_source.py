"""Translation datasets from TensorFlow Datasets (e.g. WMT 2014)."""

import tensorflow as tf

from keras_transformer.data.corpus import DatasetCorpus
from keras_transformer.data.errors import DataError

# Our split names -> TFDS split names.
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
    as a dict keyed by language code. The direction defaults to the
    dataset's `supervised_keys` (`de` -> `en` for `wmt14_translate/de-en`);
    pass `source_language="en", target_language="de"` for English->German.

    Args:
        name: TFDS name, e.g. `"wmt14_translate/de-en"`.
        split: `"train"`, `"valid"`, `"test"` or any TFDS split string.
        source_language: language code of the source side.
        target_language: language code of the target side.
        data_dir: TFDS data directory.
        download: whether TFDS may download and prepare the data.

    Returns:
        A `DatasetCorpus` streaming `tf.string` pairs.
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
    languages = list(builder.info.features.keys())
    supervised = builder.info.supervised_keys or tuple(languages[:2])
    source_language = source_language or supervised[0]
    target_language = target_language or (
        supervised[1] if source_language == supervised[0] else supervised[0]
    )
    for language in (source_language, target_language):
        if language not in languages:
            raise DataError(
                f"tfds:{name}: no language {language!r}; it has {languages}"
            )
    pairs = dataset.map(
        lambda example: (example[source_language], example[target_language]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return DatasetCorpus(
        pairs, name=f"tfds:{name}:{source_language}-{target_language}:{tfds_split}"
    )
