"""The fine-tuning optimizer: Adam with optional layer-wise learning-rate decay and weight averaging.

Layer-wise learning-rate decay (Howard & Ruder 2018, "discriminative fine-tuning"; Clark et al. 2020)
gives each backbone block ``decay ** d`` of the peak rate, ``d`` blocks below the top: the generic
low-level filters move little, the task-specific top blocks and the classifier move most. Adam is
invariant to the scale of a gradient, so this cannot be done by scaling gradients; the step itself is
scaled, per variable.

Weight averaging is Keras' exponential moving average of the weights (``use_ema``);
:func:`swap_in_average` lets validation and the kept checkpoint use the averaged weights while
training continues from the raw ones.

>>> block_multipliers(3, 0.5)
[0.25, 0.5, 1.0]
"""

from __future__ import annotations

from typing import Any

from .._tf import keras, tensorflow


def block_multipliers(n_blocks: int, decay: float) -> list[float]:
    """Return the learning-rate factor of each of ``n_blocks`` blocks, bottom to top (top = 1)."""
    return [decay ** (n_blocks - 1 - i) for i in range(n_blocks)]


def make_optimizer(learning_rate: Any, multipliers: list[tuple[Any, float]] | None = None, ema: float = 0.0):
    """Return Adam at ``learning_rate``; ``multipliers`` pairs variables with a factor on their step.

    Variables not listed (the classifier) take the full rate. ``ema`` > 0 keeps an exponential
    moving average of the weights with that momentum.
    """
    k, tf = keras(), tensorflow()
    averaging = {"use_ema": ema > 0, "ema_momentum": ema if ema > 0 else 0.99}
    pairs = [(v, float(m)) for v, m in (multipliers or []) if float(m) != 1.0]
    if not pairs:
        return k.optimizers.Adam(learning_rate, **averaging)

    class LayerwiseAdam(k.optimizers.Adam):
        """Adam whose step for each listed variable is scaled by its factor (dense gradients)."""

        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self._factor = {self._var_key(v): m for v, m in pairs}

        def update_step(self, gradient, variable):
            factor = self._factor.get(self._var_key(variable))  # decided when the step is traced
            if factor is None or isinstance(gradient, tf.IndexedSlices):
                return super().update_step(gradient, variable)
            # Keras' dense Adam step (tf_keras.optimizers.Adam.update_step) with the rate scaled.
            lr = tf.cast(self.learning_rate, variable.dtype) * factor
            step = tf.cast(self.iterations + 1, variable.dtype)
            beta_1_power = tf.pow(tf.cast(self.beta_1, variable.dtype), step)
            beta_2_power = tf.pow(tf.cast(self.beta_2, variable.dtype), step)
            index = self._index_dict[self._var_key(variable)]
            m, v = self._momentums[index], self._velocities[index]
            alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
            m.assign_add((gradient - m) * (1 - self.beta_1))
            v.assign_add((tf.square(gradient) - v) * (1 - self.beta_2))
            epsilon = self.epsilon * tf.sqrt(1 - beta_2_power) if getattr(self, "adaptive_epsilon", False) \
                else self.epsilon
            variable.assign_sub((m * alpha) / (tf.sqrt(v) + epsilon))

    return LayerwiseAdam(learning_rate, **averaging)


class swap_in_average:
    """Context: the model's trainable weights are the optimizer's moving averages inside, raw after.

    A no-op when the optimizer keeps no average (or has not taken a step yet).
    """

    def __init__(self, model: Any):
        self.model, self.raw = model, None

    def __enter__(self) -> swap_in_average:
        self.swap_in()
        return self

    def swap_in(self) -> None:
        opt = getattr(self.model, "optimizer", None)
        if self.raw is not None or not getattr(opt, "use_ema", False) or not getattr(opt, "_built", False):
            return
        variables = self.model.trainable_variables
        self.raw = [v.numpy() for v in variables]
        opt._overwrite_model_variables_with_average_value(variables)  # Keras' own swap (finalize_variable_values)

    def swap_out(self) -> None:
        if self.raw is None:
            return
        for var, value in zip(self.model.trainable_variables, self.raw):
            var.assign(value)
        self.raw = None

    def __exit__(self, *exc: Any) -> None:
        self.swap_out()
