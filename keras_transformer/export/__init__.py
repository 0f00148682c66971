"""Serving: the SavedModel translator for TF Serving, and CTranslate2 exports.

Names are imported on first use: `CTranslate2Translator` needs only
`ctranslate2` and `sentencepiece`, and the command line (which defers the
package's imports) translates with a CTranslate2 export without loading
TensorFlow.
"""

from keras_transformer.lazy_imports import lazy_exports

# public name: the module defining it
_EXPORTS = {
    "export_translator": "saved_model",
    "next_version": "saved_model",
    "version_directories": "saved_model",
    "write_warmup_requests": "saved_model",
    "Translator": "translator",
    "to_ctranslate2": "ctranslate2",
    "CTranslate2Translator": "ctranslate2",
    "is_ctranslate2_dir": "ctranslate2",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
