"""`tuning.space` -> Keras-Tuner hyper-parameters, and a trial's values -> a `RunConfig`.

Each space key is a dotted config key (``model.dropout``, ``training.optimizer.name``)
and becomes a Keras-Tuner hyper-parameter of the same name. Keras-Tuner choices hold
only scalars of one type, so a choice over lists (``model.filters: [[8], [8, 16]]``)
or mixed types is declared over the values' JSON texts and decoded when applied.

Example:
    >>> import keras_tuner
    >>> hp = keras_tuner.HyperParameters()
    >>> values = declare(hp, cfg.tuning.space)        # doctest: +SKIP
    >>> trial_cfg = apply(cfg, values)                # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from service.config import ParamSpec, RunConfig, with_values
from service.errors import UserError


def ordered(space: Mapping[str, ParamSpec]) -> list[tuple[str, ParamSpec]]:
    """Unconditional keys first (parents must be declared before their children)."""
    return sorted(space.items(), key=lambda item: item[1].parent is not None)


def _encoded(values: list[Any]) -> bool:
    """True when a choice's values must travel as JSON text (lists, mixed types)."""
    kinds = {type(v) for v in values}
    return len(kinds) != 1 or not kinds <= {int, float, str, bool}


def choice_values(spec: ParamSpec) -> list[Any]:
    """The values Keras-Tuner sees for a choice (JSON texts where needed)."""
    values = list(spec.values or [])
    return [json.dumps(v) for v in values] if _encoded(values) else values


def decode(spec: ParamSpec, value: Any) -> Any:
    """A Keras-Tuner value back to the config value."""
    if spec.type == "choice" and _encoded(list(spec.values or [])):
        return json.loads(value)
    if spec.type == "int":
        return int(value)
    if spec.type == "float":
        return round(float(value), 12)  # a stepped 0.1 * 3 is 0.3, not 0.30000000000000004
    return value


def _parent_values(space: Mapping[str, ParamSpec], spec: ParamSpec) -> list[Any]:
    parent = space[spec.parent or ""]
    if parent.type == "choice" and _encoded(list(parent.values or [])):
        return [json.dumps(v) for v in spec.parent_values or []]
    return list(spec.parent_values or [])


def _declare_one(hp: Any, name: str, spec: ParamSpec) -> Any:
    if spec.type == "int":
        return hp.Int(
            name,
            int(spec.min or 0),
            int(spec.max or 0),
            step=int(spec.step) if spec.step else None,
            sampling=spec.sampling,
        )
    if spec.type == "float":
        return hp.Float(
            name, float(spec.min or 0), float(spec.max or 0), step=spec.step, sampling=spec.sampling
        )
    if spec.type == "choice":
        return hp.Choice(name, choice_values(spec))
    return hp.Boolean(name)


def declare(hp: Any, space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Register every key of ``space`` on ``hp``; return the active keys' config values.

    A conditional key is declared inside ``hp.conditional_scope(parent, values)``;
    while its parent has another value it is inactive and left out of the result
    (the configured value then stays).
    """
    values: dict[str, Any] = {}
    for name, spec in ordered(space):
        if spec.parent is None:
            values[name] = decode(spec, _declare_one(hp, name, spec))
            continue
        with hp.conditional_scope(spec.parent, _parent_values(space, spec)):
            value = _declare_one(hp, name, spec)
        if value is not None and hp.is_active(name):
            values[name] = decode(spec, value)
    return values


def apply(cfg: RunConfig, values: Mapping[str, Any]) -> RunConfig:
    """A copy of ``cfg`` with each dotted key set to its value, validated again.

    Raises `UserError` when the combination is not a valid config (for example a
    piecewise schedule without boundaries); the tuner records that trial as failed.
    The space itself is not checked again: ``cfg``'s load did that once.
    """
    try:
        return with_values(cfg, values)
    except UserError as err:
        raise UserError(f"{err} (hyper-parameters {dict(values)})") from None


def trial_values(space: Mapping[str, ParamSpec], hp_values: Mapping[str, Any]) -> dict[str, Any]:
    """Config values of a finished trial's ``hp.values`` (inactive keys dropped)."""
    out: dict[str, Any] = {}
    for name, spec in ordered(space):
        if name not in hp_values:
            continue
        if spec.parent is not None:
            parent_value = hp_values.get(spec.parent)
            if parent_value not in _parent_values(space, spec):
                continue
        out[name] = decode(spec, hp_values[name])
    return out
