"""Dropout whose random masks are cheap to draw under XLA."""

import keras

from keras_transformer.utils import cpu_tuned_paths
from keras_transformer.utils import in_xla_context


@keras.saving.register_keras_serializable(package="keras_transformer")
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout` with a faster random generator under XLA.

    Same arguments, config, seed generator and semantics as
    `keras.layers.Dropout` (each unit is zeroed with probability `rate`, the
    rest are scaled by `1 / (1 - rate)`); only the algorithm that draws the
    mask differs, and only in one place: when TensorFlow compiles the call
    with XLA (`jit_compile=True`, e.g. `model.compile(jit_compile=True)`) on
    a CPU, the mask is drawn with ThreeFry instead of TensorFlow's default
    Philox.
    XLA's CPU expansion of Philox needs wide integer multiplies that do not
    vectorize, while ThreeFry uses only adds, rotations and xors (it is
    JAX's default generator); the speed-up this gives is recorded in
    `benchmarks/README.md`. It is a CPU choice (see
    `keras_transformer.utils.cpu_tuned_paths`): on a GPU or TPU, eagerly, in
    non-XLA graphs (whose CPU kernels only implement Philox), for `rate` 0
    or 1 and on other backends the call is `keras.layers.Dropout`'s.

    The two generators give different (equally random) masks for the same
    seed, so an XLA-compiled and a non-compiled run of the same seeded model
    drop different units; each run is still reproducible.

    Args:
        rate: float in `[0, 1]`, the fraction of units to drop.
        noise_shape: optional shape of the mask, broadcast over the input
            (`None` entries take the input's size).
        seed: optional int, the seed of the layer's seed generator.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: a tensor of any shape.
        training: bool, whether to drop (`False`: the input is returned).

    Returns:
        A tensor of the input's shape and dtype.

    Example:

    >>> layer = Dropout(0.5, seed=0)
    >>> x = keras.ops.ones((2, 4))
    >>> bool(keras.ops.all(layer(x) == x))
    True
    >>> y = layer(x, training=True)
    >>> sorted(set(keras.ops.convert_to_numpy(y).ravel().tolist())) in (
    ...     [0.0, 2.0], [0.0], [2.0])
    True

    References:
        - Srivastava et al., 2014. [Dropout: A Simple Way to Prevent Neural
          Networks from Overfitting](https://jmlr.org/papers/v15/srivastava14a.html).
        - Salmon et al., 2011. [Parallel Random Numbers: As Easy as 1, 2,
          3](https://doi.org/10.1145/2063384.2063405) (Philox and ThreeFry).
    """

    def call(self, inputs, training=False):
        if (
            training
            and 0 < self.rate < 1
            and keras.backend.backend() == "tensorflow"
            and in_xla_context()
            and cpu_tuned_paths()
        ):
            return _threefry_dropout(
                inputs, self.rate, self.noise_shape, self.seed_generator.next()
            )
        return super().call(inputs, training=training)


def _threefry_dropout(inputs, rate, noise_shape, seed):
    """TensorFlow's stateless dropout with the ThreeFry generator (XLA only).

    `seed` is a seed generator's int64 state; XLA wants int32 seeds, folded
    the way Keras's TensorFlow backend folds them.
    """
    import tensorflow as tf

    seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
    if noise_shape is not None:
        dynamic = tf.shape(inputs)
        noise_shape = [
            dynamic[axis] if size is None else size
            for axis, size in enumerate(noise_shape)
        ]
    return tf.nn.experimental.stateless_dropout(
        inputs, rate=rate, seed=seed, rng_alg="threefry", noise_shape=noise_shape
    )
