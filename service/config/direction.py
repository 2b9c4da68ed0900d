"""Which way a metric is better, decided once at validation as Keras decides it.

Keras' ``MonitorCallback`` (``keras/src/callbacks/monitor_callback.py``) resolves
``mode="auto"`` by dropping a ``val_`` prefix, taking ``loss`` as smaller-is-better,
and otherwise asking the compiled metric of that name for its direction (accuracy,
AUC, precision, recall, F-scores, R2 and correlations go up; errors, cross-entropies
and hinge losses go down); a name it cannot place is an error asking for an explicit
mode. The same rule runs here on names alone, before any model exists: `METRIC_DIRECTIONS`
holds the directions of Keras' built-in metrics (by their default names and string
aliases; pinned to Keras by a test) and of the test metrics this service reports (whose
``test_`` prefix is dropped like ``val_``). Anything else needs ``direction: max|min``.

Example:
    >>> metric_direction("val_accuracy"), metric_direction("test_rmse")
    ('max', 'min')
    >>> metric_direction("val_my_score") is None
    True
"""

from __future__ import annotations

import warnings
from typing import Any

from service.errors import ConfigDeprecationWarning, UserError
from service.vocab import DEPRECATED_DIRECTIONS, Direction

_UP = (
    # keras.metrics with _direction "up"
    "accuracy",
    "acc",
    "binary_accuracy",
    "categorical_accuracy",
    "sparse_categorical_accuracy",
    "top_k_categorical_accuracy",
    "sparse_top_k_categorical_accuracy",
    "auc",
    "precision",
    "recall",
    "f1_score",
    "fbeta_score",
    "r2_score",
    "iou",
    "mean_iou",
    "binary_iou",
    "one_hot_iou",
    "one_hot_mean_iou",
    "cosine_similarity",
    "pearson_correlation",
    "concordance_correlation",
    # this service's test scores (service.training.trainer.score)
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "roc_auc",
)
_DOWN = (
    "loss",
    # keras.metrics with _direction "down", and losses used as metrics
    "mean_squared_error",
    "mse",
    "mean_absolute_error",
    "mae",
    "mean_absolute_percentage_error",
    "mape",
    "mean_squared_logarithmic_error",
    "msle",
    "root_mean_squared_error",
    "logcosh",
    "hinge",
    "squared_hinge",
    "categorical_hinge",
    "binary_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "binary_focal_crossentropy",
    "kl_divergence",
    "poisson",
    "huber",
    # this service's test scores
    "rmse",
)
METRIC_DIRECTIONS: dict[str, Direction] = {
    **{name: "max" for name in _UP},
    **{name: "min" for name in _DOWN},
}
# Prefixes naming the part a metric was measured on: Keras logs validation metrics as
# ``val_*``; this service reports test metrics as ``test_*``.
PART_PREFIXES = ("val_", "test_")


def metric_direction(name: str) -> Direction | None:
    """``"max"`` or ``"min"`` for a metric Keras (or this service) knows, else None."""
    for prefix in PART_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return METRIC_DIRECTIONS.get(name)


def resolve_direction(setting: str, metric: str, *, field: str, metric_field: str) -> Direction:
    """The direction `setting` (``auto``, ``max`` or ``min``) means for ``metric``.

    Raises `UserError` naming ``field`` when ``setting`` is ``auto`` and the metric's
    direction is unknown (Keras raises too, asking for an explicit mode).
    """
    if setting in ("max", "min"):
        return "max" if setting == "max" else "min"
    found = metric_direction(metric)
    if found is None:
        raise UserError(
            f"Invalid value for `{field}`: received 'auto' with `{metric_field}` {metric!r}, "
            "whose direction Keras cannot tell; expected 'max' (higher is better) or 'min' "
            "(lower is better)."
        )
    return found


def read_direction(value: Any, *, field: str) -> Any:
    """Map a deprecated ``maximize``/``minimize`` to ``max``/``min`` with a warning.

    Used as a pydantic ``before`` validator; any other value passes through to the
    field's own check.
    """
    if isinstance(value, str) and value in DEPRECATED_DIRECTIONS:
        new = DEPRECATED_DIRECTIONS[value]
        warnings.warn(
            f"`{field}: {value}` is deprecated; write `{field.rsplit('.', 1)[-1]}: {new}`.",
            ConfigDeprecationWarning,
            stacklevel=2,
        )
        return new
    return value
