"""YAML in, a validated `RunConfig` out: reading, ``--set`` overrides, shape bounds.

`load_config` reads a file, applies ``dotted.key=value`` overrides (values parsed as
YAML) and validates once; `with_values` is a tuning trial's copy of a loaded config
with its hyper-parameters set. Every problem is a one-line `UserError` naming the
file or field.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from service.config.keys import set_key
from service.config.messages import format_error
from service.config.schema import SPACE_CHECKED, RunConfig
from service.errors import UserError

# Bounds on the shape of a config, checked before the fields are: no section is nested
# deeper than a few levels, and a list of layers (a model option such as `units` or
# `filters`) with thousands of entries is a mistake that would only show when the model
# is built (or memory runs out).
MAX_DEPTH = 32
MAX_LIST = 100_000
MAX_MODEL_LIST = 1_000


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value``; the value is parsed as YAML (``3``, ``true``, ``[1, 2]``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not p for p in key.strip().split(".")):
        raise UserError(
            f"Invalid value for `--set`: received {text!r}; expected dotted.key=value, "
            "e.g. training.epochs=3."
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    except RecursionError:
        raise UserError(
            f"Invalid value for `--set {key.strip()}`: nested too deeply; expected at most "
            f"{MAX_DEPTH} levels."
        ) from None
    return key.strip().split("."), value


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``dotted.key=value`` set (validated later)."""
    data: dict[str, Any] = copy.deepcopy(dict(raw))
    for text in overrides:
        path, value = parse_override(text)
        set_key(data, path, value, what=f"--set {text}")
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; file problems are `UserError`s naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found.") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory; expected a YAML config file.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read config file ({err.__class__.__name__}).") from None
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise UserError(
            f"{path}: invalid YAML: nested too deeply; expected at most {MAX_DEPTH} levels."
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "malformed YAML"
        raise UserError(f"{path}: invalid YAML{where}: {problem}.") from None
    if not isinstance(data, dict):
        raise UserError(
            f"{path}: expected a mapping of sections (name, data, model, ...); "
            f"received {type(data).__name__}."
        )
    return data


def _check_shape(node: Any, where: str, source: str, depth: int = 0) -> None:
    """Raise `UserError` for nesting deeper than `MAX_DEPTH` or an over-long list."""
    if depth > MAX_DEPTH:
        raise UserError(
            f"{source}: `{where}` is nested more than {MAX_DEPTH} levels deep; expected a "
            "config section or value."
        )
    if isinstance(node, Mapping):
        for key, value in node.items():
            _check_shape(value, f"{where}.{key}" if where else str(key), source, depth + 1)
    elif isinstance(node, list):
        limit = MAX_MODEL_LIST if where.startswith("model.") else MAX_LIST
        if len(node) > limit:
            raise UserError(
                f"{source}: invalid value for `{where}`: received a list of {len(node)} "
                f"items; expected at most {limit}."
            )
        for i, value in enumerate(node):
            _check_shape(value, f"{where}[{i}]", source, depth + 1)


def validate(
    data: Mapping[str, Any], *, source: str = "config", context: Mapping[str, Any] | None = None
) -> RunConfig:
    """Validate plain data into a `RunConfig` or raise a one-line `UserError`."""
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise UserError(f"{source}: keys must be strings; received {bad_keys[0]!r}.")
    _check_shape(data, "", source)
    try:
        return RunConfig.model_validate(dict(data), context=dict(context or {}))
    except ValidationError as err:
        raise UserError(format_error(err, source)) from None
    except UserError as err:  # raised by a section's own checks (model options)
        raise UserError(f"{source}: {err}") from None


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Read, override and validate a pipeline config file."""
    raw = read_yaml(path)
    return validate(apply_overrides(raw, overrides), source=str(path))


def with_values(cfg: RunConfig, values: Mapping[str, Any], *, source: str = "trial") -> RunConfig:
    """A copy of ``cfg`` with each dotted key set to its value, validated again.

    For a tuning trial: the sections are checked with the new values, but not the
    tuning space, which ``cfg``'s own load checked (the trial's space is the same).
    """
    data = cfg.to_dict()
    for key, value in values.items():
        set_key(data, key, value)
    return validate(data, source=source, context={SPACE_CHECKED: True})
