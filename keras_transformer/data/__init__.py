"""keras_transformer.data."""
