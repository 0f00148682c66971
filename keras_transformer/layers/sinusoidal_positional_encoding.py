"""The paper's fixed sinusoidal positional encoding."""

import keras
import numpy as np
from keras import ops

from keras_transformer.utils import check_positive_int

# Each frequency is split into three float32 parts of at most 8 significant
# bits, so `position * part` is exact for positions below 2**16.
_SPLIT_BITS = 8
_NUM_PARTS = 3


def _split_frequencies(frequencies):
    """float64 `(d,)` -> float32 `(parts, d)` whose float64 sum is `frequencies`."""
    parts = []
    residual = np.asarray(frequencies, dtype=np.float64)
    for index in range(_NUM_PARTS):
        if index == _NUM_PARTS - 1:
            part = residual.astype(np.float32)
        else:
            mantissa, exponent = np.frexp(residual)
            mantissa = np.trunc(mantissa * 2**_SPLIT_BITS) / 2**_SPLIT_BITS
            part = np.ldexp(mantissa, exponent).astype(np.float32)
        parts.append(part)
        residual = residual - part.astype(np.float64)
    return np.stack(parts)


@keras.saving.register_keras_serializable(package="keras_transformer")
class SinusoidalPositionalEncoding(keras.layers.Layer):
    """Sinusoidal positional encoding (Vaswani et al., 2017, section 3.5).

    `PE(pos, 2i) = sin(pos / max_wavelength^(2i / d))` and
    `PE(pos, 2i + 1) = cos(pos / max_wavelength^(2i / d))`: sine on even and
    cosine on odd dimensions, interleaved as in the paper.

    The encoding is computed on the fly in float32 for whatever length the
    input has, so it works for sequences longer than any seen in training,
    and it is returned in float32 under every dtype policy (low-precision
    positions are a known source of error). The angle `pos * frequency` is
    evaluated as a sum of exactly representable float32 products and
    combined with the angle-addition identities, so the result matches the
    formula evaluated in float64 to about 1e-6 for positions below 65536.

    Args:
        max_wavelength: float, the paper's 10000.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: float tensor `(batch_size, sequence_length, d_model)` (or
            `(sequence_length, d_model)`); only its shape is used.
        start_index: int or scalar int tensor, the position of the first
            element (for decoding one position at a time). Defaults to 0.

    Returns:
        float32 tensor of the shape of `inputs`: the encoding (add it to the
        embeddings yourself).

    Example:

    >>> import numpy as np
    >>> pe = SinusoidalPositionalEncoding()(np.zeros((1, 4, 6), "float32"))
    >>> np.round(np.asarray(pe[0, 0]), 3).tolist()
    [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
    """

    def __init__(self, max_wavelength=10000, **kwargs):
        if not isinstance(max_wavelength, int | float) or max_wavelength <= 1:
            raise ValueError(
                "`max_wavelength` must be a number > 1. "
                f"Received: max_wavelength={max_wavelength}"
            )
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.supports_masking = True
        self.built = True

    def frequencies(self, d_model):
        """float64 numpy `(d_model,)`: `1 / max_wavelength^(2i / d_model)`."""
        check_positive_int("d_model", d_model)
        pair_index = np.arange(d_model) // 2
        return self.max_wavelength ** (-2.0 * pair_index / d_model)

    def call(self, inputs, start_index=0):
        shape = ops.shape(inputs)
        length, d_model = shape[-2], inputs.shape[-1]
        if d_model is None:
            raise ValueError("The last dimension (d_model) of `inputs` must be known.")
        parts = ops.convert_to_tensor(
            _split_frequencies(self.frequencies(d_model)), "float32"
        )  # (3, d)
        positions = ops.cast(
            ops.arange(length, dtype="int32") + ops.cast(start_index, "int32"),
            "float32",
        )  # (T,)
        angles = positions[None, :, None] * parts[:, None, :]  # (3, T, d), exact
        sines, cosines = ops.sin(angles), ops.cos(angles)
        # sin/cos of the summed angle via the angle-addition identities.
        sin_sum, cos_sum = sines[-1], cosines[-1]
        for part in range(_NUM_PARTS - 2, -1, -1):
            sin_sum, cos_sum = (
                sines[part] * cos_sum + cosines[part] * sin_sum,
                cosines[part] * cos_sum - sines[part] * sin_sum,
            )
        even = ops.arange(d_model) % 2 == 0
        encoding = ops.where(even[None, :], sin_sum, cos_sum)  # (T, d)
        return ops.broadcast_to(encoding, shape)

    def compute_output_spec(self, inputs, start_index=0):
        return keras.KerasTensor(inputs.shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update({"max_wavelength": self.max_wavelength})
        return config
