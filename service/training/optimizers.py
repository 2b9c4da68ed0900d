"""Optimizers from `training.optimizer` config."""

from __future__ import annotations

from typing import Any

# Which of the shared config fields each Keras optimizer understands.
_ACCEPTS: dict[str, tuple[str, ...]] = {
    "sgd": ("momentum", "nesterov"),
    "rmsprop": ("momentum",),
    "adam": ("beta_1", "beta_2"),
    "adamw": ("beta_1", "beta_2", "weight_decay"),
    "adamax": ("beta_1", "beta_2"),
    "adadelta": (),
    "adagrad": (),
    "nadam": ("beta_1", "beta_2"),
}
_CLASS = {
    "sgd": "SGD",
    "rmsprop": "RMSprop",
    "adam": "Adam",
    "adamw": "AdamW",
    "adamax": "Adamax",
    "adadelta": "Adadelta",
    "adagrad": "Adagrad",
    "nadam": "Nadam",
}


def make_optimizer(cfg: Any, learning_rate: Any = None):
    """Build a Keras optimizer from an `OptimizerConfig`.

    Args:
        cfg: the `training.optimizer` section.
        learning_rate: a float or a `LearningRateSchedule`; defaults to
            ``cfg.learning_rate``.
    """
    import keras

    kwargs: dict[str, Any] = {
        "learning_rate": cfg.learning_rate if learning_rate is None else learning_rate
    }
    for key in _ACCEPTS[cfg.name]:
        value = getattr(cfg, key)
        if value is not None:
            kwargs[key] = value
    if cfg.weight_decay is not None and cfg.name != "adamw":
        kwargs["weight_decay"] = cfg.weight_decay
    if cfg.clipnorm is not None:
        kwargs["clipnorm"] = cfg.clipnorm
    if cfg.clipvalue is not None:
        kwargs["clipvalue"] = cfg.clipvalue
    return getattr(keras.optimizers, _CLASS[cfg.name])(**kwargs)
