"""Parallel-text sources and tf.data pipelines for training translators.

- Sources (each a re-iterable `ParallelCorpus` of `(source, target)`
  strings, with `.dataset()` for `tf.data`): `demo_pairs` (the embedded
  English -> German number words), `read_tsv`, `read_parallel_files`,
  `load_tfds`, and `parse_spec` for the command line's SPEC strings.
- `make_dataset`: tokenized in the graph, length-filtered, length-bucketed
  batches padded to a few static shapes (`bucket_shapes`), with teacher
  forcing (`target_in = BOS + y`, `target_out = y + EOS`);
  `padding_fraction` measures them; `count_batches` counts an epoch's
  full batches and the pairs it leaves out, without building the dataset.
- `DataError`: every bad-input error, one line, with file and line number.

Example:

>>> import pathlib
>>> from keras_transformer import data, text
>>> _ = pathlib.Path("train.tsv").write_text("one\\teins\\ntwo\\tzwei\\n")
>>> corpus = data.parse_spec("tsv:train.tsv")  # the file is checked now
>>> tokenizer = text.SubwordTokenizer(
...     text.train_sentencepiece(["one eins two zwei three drei"] * 50, 30))
>>> dataset = data.make_dataset(corpus, tokenizer.tokenize, tokenizer.tokenize,
...                             batch_tokens=25_000, drop_remainder=False)
>>> inputs, target_out = next(iter(dataset))
>>> sorted(inputs), inputs["source"].shape[0]
(['source', 'target'], 2)
"""

from keras_transformer.data.corpus import DatasetCorpus
from keras_transformer.data.corpus import InMemoryCorpus
from keras_transformer.data.corpus import ParallelCorpus
from keras_transformer.data.corpus import as_corpus
from keras_transformer.data.demo import DEFAULT_MAX_NUMBER
from keras_transformer.data.demo import demo_numbers
from keras_transformer.data.demo import demo_pair
from keras_transformer.data.demo import demo_pairs
from keras_transformer.data.errors import DataError
from keras_transformer.data.pipeline import DEFAULT_BOUNDARIES
from keras_transformer.data.pipeline import FINE_BOUNDARIES
from keras_transformer.data.pipeline import bucket_lengths
from keras_transformer.data.pipeline import bucket_shapes
from keras_transformer.data.pipeline import count_batches
from keras_transformer.data.pipeline import make_dataset
from keras_transformer.data.pipeline import padding_fraction
from keras_transformer.data.readers import ParallelFilesCorpus
from keras_transformer.data.readers import TsvCorpus
from keras_transformer.data.readers import read_parallel_files
from keras_transformer.data.readers import read_tsv
from keras_transformer.data.specs import SPEC_FORMS
from keras_transformer.data.specs import parse_spec
from keras_transformer.data.tfds_source import load_tfds

__all__ = [
    "DEFAULT_BOUNDARIES",
    "DEFAULT_MAX_NUMBER",
    "FINE_BOUNDARIES",
    "SPEC_FORMS",
    "DataError",
    "DatasetCorpus",
    "InMemoryCorpus",
    "ParallelCorpus",
    "ParallelFilesCorpus",
    "TsvCorpus",
    "as_corpus",
    "bucket_lengths",
    "bucket_shapes",
    "count_batches",
    "demo_numbers",
    "demo_pair",
    "demo_pairs",
    "load_tfds",
    "make_dataset",
    "padding_fraction",
    "parse_spec",
    "read_parallel_files",
    "read_tsv",
]
