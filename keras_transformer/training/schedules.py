"""The paper's learning-rate schedule and optimizer."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_transformer")
class TransformerSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`lrate = scale * d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)`.

    Linear warm-up for `warmup_steps` steps, then decay with the inverse square
    root of the step number (paper section 5.3, equation 3). The peak, at
    `step == warmup_steps`, is `scale * (d_model * warmup_steps)^-0.5`.

    `step` is 1-based: the schedule is called with the optimizer's
    `iterations` (0 before the first update) and uses `step = iterations + 1`,
    so the first update uses the paper's step 1 and no call gives an infinite
    or NaN rate (`schedule(0)` is the rate of step 1).

    Args:
        d_model: int, the model width.
        warmup_steps: int, steps of linear warm-up. Defaults to `4000` (the
            paper).
        scale: float, multiplies the rate. Defaults to `1.0` (the paper).

    Call arguments:
        iterations: int scalar (tensor), the optimizer's 0-based update count.

    Returns:
        A float32 scalar learning rate.

    Example:

    >>> schedule = TransformerSchedule(d_model=512, warmup_steps=4000)
    >>> round(float(schedule(3999)), 6)  # step 4000, the peak
    0.000699
    >>> optimizer = keras.optimizers.Adam(learning_rate=schedule)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762), 5.3.
    """

    def __init__(self, d_model, warmup_steps=4000, scale=1.0):
        for name, value in (
            ("d_model", d_model),
            ("warmup_steps", warmup_steps),
            ("scale", scale),
        ):
            if isinstance(value, bool) or not value > 0:
                raise ValueError(
                    f"`{name}` must be a positive number. Received: {name}={value}"
                )
        self.d_model = d_model
        self.warmup_steps = warmup_steps
        self.scale = scale

    def __call__(self, iterations):
        step = ops.cast(iterations, "float32") + 1.0
        return (
            self.scale
            * float(self.d_model) ** -0.5
            * ops.minimum(ops.rsqrt(step), step * float(self.warmup_steps) ** -1.5)
        )

    def get_config(self):
        return {
            "d_model": self.d_model,
            "warmup_steps": self.warmup_steps,
            "scale": self.scale,
        }


def transformer_optimizer(d_model, warmup_steps=4000, scale=1.0, **kwargs):
    """The paper's optimizer: Adam(0.9, 0.98, 1e-9) on `TransformerSchedule`.

    Args:
        d_model: int, the model width.
        warmup_steps: int, warm-up steps of the schedule. Defaults to `4000`.
        scale: float, multiplies the learning rate. Defaults to `1.0`.
        **kwargs: other `keras.optimizers.Adam` arguments (e.g. `clipnorm`,
            `gradient_accumulation_steps`); `learning_rate`, `beta_1`,
            `beta_2` and `epsilon` are fixed here.

    Returns:
        A `keras.optimizers.Adam` with `learning_rate=TransformerSchedule(...)`,
        `beta_1=0.9`, `beta_2=0.98` and `epsilon=1e-9`.

    Example:

    >>> optimizer = transformer_optimizer(d_model=512)
    >>> optimizer.beta_2
    0.98

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762), 5.3.
    """
    fixed = {"learning_rate", "beta_1", "beta_2", "epsilon"} & set(kwargs)
    if fixed:
        raise ValueError(
            f"`transformer_optimizer` sets {sorted(fixed)} itself; build "
            "`keras.optimizers.Adam` directly to change them. Received: "
            f"{ {key: kwargs[key] for key in sorted(fixed)} }"
        )
    return keras.optimizers.Adam(
        learning_rate=TransformerSchedule(d_model, warmup_steps, scale),
        beta_1=0.9,
        beta_2=0.98,
        epsilon=1e-9,
        **kwargs,
    )
