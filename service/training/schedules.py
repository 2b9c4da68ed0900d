"""Learning-rate schedules from `training.schedule` config, with optional linear warm-up.

All schedules are functions of the optimizer step. ``decay_steps`` left unset means
"the whole run" (epochs x steps per epoch), the usual choice for cosine and
polynomial decay.
"""

from __future__ import annotations

from typing import Any

_WARMUP_CLASS: Any = None


def _warmup_class():
    """Define (once) the serializable warm-up wrapper; keeps Keras out of import time."""
    global _WARMUP_CLASS
    if _WARMUP_CLASS is not None:
        return _WARMUP_CLASS
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="kts")
    class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
        """Ramp linearly from 0 to ``after(0)`` over ``warmup_steps``, then follow ``after``.

        Goyal et al., "Accurate, Large Minibatch SGD" (2017), section 2.2.
        """

        def __init__(self, after, warmup_steps: int):
            self.after = after
            self.warmup_steps = int(warmup_steps)

        def __call__(self, step):
            step = ops.cast(step, "float32")
            warm = ops.cast(self.warmup_steps, "float32")
            target = ops.cast(self._after(ops.zeros_like(step)), "float32")
            ramp = target * (step + 1.0) / warm
            return ops.where(step < warm, ramp, self._after(step - warm))

        def _after(self, step):
            return self.after(step) if callable(self.after) else ops.cast(self.after, "float32")

        def get_config(self):
            after = (
                keras.optimizers.schedules.serialize(self.after)
                if isinstance(self.after, keras.optimizers.schedules.LearningRateSchedule)
                else float(self.after)
            )
            return {"after": after, "warmup_steps": self.warmup_steps}

        @classmethod
        def from_config(cls, config):
            after = config["after"]
            if isinstance(after, dict):
                after = keras.optimizers.schedules.deserialize(after)
            return cls(after, config["warmup_steps"])

    _WARMUP_CLASS = LinearWarmup
    return LinearWarmup


def make_schedule(cfg: Any, *, base_lr: float, total_steps: int):
    """Return a float (constant) or a Keras `LearningRateSchedule` for `cfg`.

    Args:
        cfg: the `training.schedule` section (a `ScheduleConfig`).
        base_lr: the optimizer's `learning_rate` (the peak after warm-up).
        total_steps: optimizer steps in the whole run (epochs x steps per epoch).
    """
    import keras

    s = keras.optimizers.schedules
    decay_steps = max(1, int(cfg.decay_steps or max(1, total_steps - cfg.warmup_steps)))
    kind = cfg.type
    sched: Any
    if kind == "constant":
        sched = float(base_lr)
    elif kind == "piecewise":
        # `values` are multipliers of the base rate, one more than `boundaries` (in steps).
        sched = s.PiecewiseConstantDecay(
            boundaries=[int(b) for b in cfg.boundaries],
            values=[float(base_lr * m) for m in cfg.values],
        )
    elif kind == "exponential":
        sched = s.ExponentialDecay(base_lr, decay_steps, cfg.decay_rate, staircase=cfg.staircase)
    elif kind == "inverse_time":
        sched = s.InverseTimeDecay(base_lr, decay_steps, cfg.decay_rate, staircase=cfg.staircase)
    elif kind == "cosine":
        sched = s.CosineDecay(base_lr, decay_steps, alpha=cfg.alpha)
    elif kind == "cosine_restarts":
        first = max(1, int(cfg.decay_steps or max(1, decay_steps // 4)))
        sched = s.CosineDecayRestarts(
            base_lr, first, t_mul=cfg.t_mul, m_mul=cfg.m_mul, alpha=cfg.alpha
        )
    elif kind == "polynomial":
        sched = s.PolynomialDecay(
            base_lr, decay_steps, end_learning_rate=base_lr * cfg.alpha, power=cfg.power
        )
    else:  # pragma: no cover - the config Literal forbids it
        raise ValueError(kind)
    if cfg.warmup_steps:
        return _warmup_class()(sched, cfg.warmup_steps)
    return sched
