"""keras_transformer.models."""
