"""Dotted config keys (``training.optimizer.name``): set one, flatten a tree, walk the schema.

`set_key` is the one place a dotted key is written into plain config data: by
``--set`` overrides, by a tuning trial's hyper-parameters and by the tuning space's
checks. Keys are the YAML names (a field's alias where it has one).

Example:
    >>> data = {"training": {"epochs": 3}}
    >>> set_key(data, "training.optimizer.name", "sgd")
    >>> flatten(data)
    {'training.epochs': 3, 'training.optimizer.name': 'sgd'}
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Union

from service.errors import UserError


def set_key(
    data: MutableMapping[str, Any],
    key: str | Sequence[str],
    value: Any,
    *,
    what: str | None = None,
) -> None:
    """Set the dotted ``key`` of ``data`` to ``value`` in place.

    Missing (or null) sections on the way are created. A value on the way that is not a
    section is a `UserError` naming ``what`` (default: the key).
    """
    path = key.split(".") if isinstance(key, str) else list(key)
    node = data
    for depth, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, MutableMapping):
            where = ".".join(path[: depth + 1])
            raise UserError(
                f"Invalid value for `{what or '.'.join(path)}`: `{where}` is {child!r}, "
                "not a section."
            )
        node = child
    node[path[-1]] = value


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists kept as values)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def yaml_fields(model: Any) -> dict[str, Any]:
    """A pydantic model class's fields by the name a YAML file uses (the alias, if any);
    ``{}`` for anything that is not a model."""
    fields = getattr(model, "model_fields", None)
    if not isinstance(fields, dict):
        return {}
    return {(info.alias or name): info for name, info in fields.items()}


def python_name(model: Any, key: str) -> str:
    """The attribute name of the field ``key`` (a YAML name) of ``model``."""
    for name, info in getattr(model, "model_fields", {}).items():
        if (info.alias or name) == key:
            return str(name)
    return key


def section_at(root: Any, path: Iterable[Any]) -> Any:
    """The model class at ``path`` (YAML names) below ``root``, or None if there is none.

    An optional section (``TuningConfig | None``) counts as its section.
    """
    model = root
    for part in path:
        info = yaml_fields(model).get(str(part))
        if info is None:
            return None
        model = info.annotation
        members = [a for a in typing.get_args(model) if yaml_fields(a)]
        if typing.get_origin(model) in (Union, types.UnionType) and len(members) == 1:
            model = members[0]
    return model
