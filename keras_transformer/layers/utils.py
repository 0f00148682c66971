"""Small helpers shared by the layers."""

import keras


def clone_initializer(initializer):
    """A fresh copy of `initializer`, so sub-layers don't share seeds/state."""
    initializer = keras.initializers.get(initializer)
    return initializer.__class__.from_config(initializer.get_config())


def check_positive_int(name, value):
    """Raises `ValueError` unless `value` is a positive Python int."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value}"
        )


def check_rate(name, value):
    """Raises `ValueError` unless `0 <= value < 1`."""
    if not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"`{name}` must be a float in [0, 1). Received: {name}={value}"
        )


def check_heads(d_model, num_heads, key_dim=None):
    """Raises unless `d_model` splits evenly over `num_heads` (when it must)."""
    if key_dim is None and d_model % num_heads:
        raise ValueError(
            f"d_model={d_model} is not divisible by num_heads={num_heads}."
        )
