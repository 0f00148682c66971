"""keras_transformer.layers."""
