"""keras_transformer.decoding."""
