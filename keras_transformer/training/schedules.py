"""The paper's learning-rate schedule and optimizer."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_transformer")
class TransformerSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`lrate = scale * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)`.

    Linear warm-up for `warmup_steps`, then decay with the inverse square
    root of the step (paper section 5.3). `step` is 1-based: the optimizer's
    `iterations` (0 before the first update) plus one, so the first update
    uses `step = 1` and no step gives an infinite rate.

    Args:
        d_model: int, the model size.
        warmup_steps: int, 4000 in the paper.
        scale: float, multiplies the rate (1.0 = the paper).

    Example:

    >>> schedule = TransformerSchedule(d_model=512, warmup_steps=4000)
    >>> round(float(schedule(3999)), 6)  # step 4000, the peak
    0.000699

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762), 5.3.
    """

    def __init__(self, d_model, warmup_steps=4000, scale=1.0):
        if d_model <= 0 or warmup_steps <= 0 or scale <= 0:
            raise ValueError(
                "`d_model`, `warmup_steps` and `scale` must be positive. Received: "
                f"d_model={d_model}, warmup_steps={warmup_steps}, scale={scale}"
            )
        self.d_model = d_model
        self.warmup_steps = warmup_steps
        self.scale = scale

    def __call__(self, iterations):
        step = ops.cast(iterations, "float32") + 1.0
        return (
            self.scale
            * self.d_model**-0.5
            * ops.minimum(ops.rsqrt(step), step * self.warmup_steps**-1.5)
        )

    def get_config(self):
        return {
            "d_model": self.d_model,
            "warmup_steps": self.warmup_steps,
            "scale": self.scale,
        }


def transformer_optimizer(d_model, warmup_steps=4000, scale=1.0, **kwargs):
    """`Adam(beta_1=0.9, beta_2=0.98, epsilon=1e-9)` with `TransformerSchedule`.

    Args:
        d_model: int. warmup_steps: int. scale: float.
        **kwargs: other `keras.optimizers.Adam` arguments (e.g. `clipnorm`).

    Returns:
        A `keras.optimizers.Adam`.
    """
    return keras.optimizers.Adam(
        learning_rate=TransformerSchedule(d_model, warmup_steps, scale),
        beta_1=0.9,
        beta_2=0.98,
        epsilon=1e-9,
        **kwargs,
    )
