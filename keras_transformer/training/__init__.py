"""keras_transformer.training."""
