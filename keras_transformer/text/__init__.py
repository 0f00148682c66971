"""keras_transformer.text."""
