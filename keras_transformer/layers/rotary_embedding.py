"""Rotary position embedding (RoPE) of attention queries and keys."""

from keras import ops


def apply_rotary_embedding(x, sinusoids):
    """Rotates each pair of dimensions of `x` by the angle of its position.

    With `angle(p, i) = p * max_wavelength^(-2i / head_dim)` for position `p`,
    the pair `(x_2i, x_2i+1)` becomes
    `(x_2i cos - x_2i+1 sin, x_2i sin + x_2i+1 cos)` of that angle. Rotating
    both queries and keys this way makes their dot products depend on the
    distance between positions only, not on the positions themselves.

    The angles are not computed here: `sinusoids` is the sinusoidal
    positional encoding of the positions of `x`, which holds `sin(angle)` at
    even and `cos(angle)` at odd dimensions (exactly what
    `SinusoidalPositionalEncoding` returns, in float32). The rotation is
    computed in float32.

    Args:
        x: float tensor `(batch_size, length, num_heads, head_dim)`, with an
            even `head_dim`.
        sinusoids: float tensor `(length, head_dim)`: `sin` of the angle of
            pair `i` at dimension `2i`, its `cos` at dimension `2i + 1`.

    Returns:
        A tensor of the shape and dtype of `x`.

    Example:

    >>> import numpy as np
    >>> from keras_transformer.layers import SinusoidalPositionalEncoding
    >>> x = np.ones((1, 3, 2, 4), "float32")
    >>> table = SinusoidalPositionalEncoding()(np.zeros((3, 4), "float32"))
    >>> tuple(apply_rotary_embedding(x, table).shape)
    (1, 3, 2, 4)

    References:
        - [Su et al., 2021](https://arxiv.org/abs/2104.09864) (RoFormer), 3.4.
    """
    head_dim = x.shape[-1]
    if head_dim is not None and head_dim % 2:
        raise ValueError(
            "Rotary embeddings rotate pairs of dimensions: the last dimension "
            f"of `x` must be even. Received: x.shape={tuple(x.shape)}"
        )
    dtype = x.dtype
    sinusoids = ops.cast(sinusoids, "float32")
    sin = sinusoids[None, :, None, 0::2]  # (1, T, 1, d / 2)
    cos = sinusoids[None, :, None, 1::2]
    x = ops.cast(x, "float32")
    even, odd = x[..., 0::2], x[..., 1::2]  # (B, T, heads, d / 2)
    rotated = ops.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
    return ops.cast(ops.reshape(rotated, ops.shape(x)), dtype)
