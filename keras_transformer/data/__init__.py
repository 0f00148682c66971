"""Parallel-text sources and tf.data pipelines for training translators.

- Sources (`ParallelCorpus`): `demo_pairs` (embedded English->German
  numbers), `read_tsv`, `read_parallel_files`, `load_tfds`, and
  `parse_spec` for the command line's SPEC strings.
- `make_dataset`: tokenized, length-bucketed, padded batches with static
  shapes, teacher forcing (`target_in = BOS + y`, `target_out = y + EOS`).
- `DataError`: every bad-input error, one line, with file and line number.
"""

from keras_transformer.data.corpus import InMemoryCorpus
from keras_transformer.data.corpus import ParallelCorpus
from keras_transformer.data.corpus import as_corpus
from keras_transformer.data.demo import demo_numbers
from keras_transformer.data.demo import demo_pair
from keras_transformer.data.demo import demo_pairs
from keras_transformer.data.errors import DataError
from keras_transformer.data.pipeline import bucket_lengths
from keras_transformer.data.pipeline import make_dataset
from keras_transformer.data.pipeline import padding_fraction
from keras_transformer.data.readers import read_parallel_files
from keras_transformer.data.readers import read_tsv
from keras_transformer.data.specs import parse_spec
from keras_transformer.data.tfds_source import load_tfds
