"""keras_transformer.export."""
