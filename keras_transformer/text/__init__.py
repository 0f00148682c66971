"""Subword vocabularies and in-graph tokenization.

- `train_sentencepiece`: train a SentencePiece model in memory.
- `SubwordTokenizer`: tokenize/detokenize inside the TensorFlow graph
  (`tf.function`, `tf.data`, SavedModel / TF Serving).
- `build_vocabularies`, `save_vocabularies`, `load_vocabularies`: shared or
  separate source/target vocabularies on disk.

All vocabularies use the ids of `keras_transformer.special_tokens`.
"""

from keras_transformer.text.sentencepiece_trainer import MODEL_TYPES
from keras_transformer.text.sentencepiece_trainer import train_sentencepiece
from keras_transformer.text.subword_tokenizer import SubwordTokenizer
from keras_transformer.text.subword_tokenizer import sanitize_utf8
from keras_transformer.text.vocabularies import MANIFEST_FILE
from keras_transformer.text.vocabularies import build_vocabularies
from keras_transformer.text.vocabularies import load_vocabularies
from keras_transformer.text.vocabularies import save_vocabularies

__all__ = [
    "MANIFEST_FILE",
    "MODEL_TYPES",
    "SubwordTokenizer",
    "build_vocabularies",
    "load_vocabularies",
    "sanitize_utf8",
    "save_vocabularies",
    "train_sentencepiece",
]
