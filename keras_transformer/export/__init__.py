"""The SavedModel translator (strings in, strings out) for TF Serving."""

from keras_transformer.export.saved_model import export_translator
from keras_transformer.export.saved_model import write_warmup_requests
from keras_transformer.export.translator import Translator
