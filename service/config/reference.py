"""The config described for people and editors, generated from the schema.

- `json_schema`: a JSON Schema (draft 2020-12) of a pipeline config, from pydantic,
  for editors and YAML language servers (``kts schema > kts.schema.json``). It checks
  each key's type, allowed values and bounds and rejects unknown keys; checks across
  sections (a bless metric the task reports, a tuning space's values) are
  ``kts validate``'s.
- `markdown`: ``docs/config.md``, every key with its type, default, allowed values and
  description (``kts schema --markdown > docs/config.md``; a test fails when the
  committed file is stale).

Descriptions are the fields' docstrings in `service.config.schema`.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from service.config.schema import ModelConfig, RunConfig

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
TITLE = "keras-training-service pipeline config"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a pipeline config (model families listed in `model.type`)."""
    from service import models

    schema = RunConfig.model_json_schema(by_alias=True)
    schema["$defs"]["ModelConfig"]["properties"]["type"]["enum"] = models.available()
    return {"$schema": SCHEMA_DIALECT, **schema, "title": TITLE}


def json_text() -> str:
    """`json_schema` as the text ``kts schema`` prints."""
    return json.dumps(json_schema(), indent=2) + "\n"


# ------------------------------------------------------------------- markdown
HEADER = """\
# Configuration reference

Every key of a pipeline config (`kts run CONFIG`), generated from the schema in
`service/config/schema.py` by `kts schema --markdown > docs/config.md`: do not edit by
hand (a test fails when this file is stale). Every section rejects unknown keys.
`kts schema > kts.schema.json` writes the same schema as JSON Schema, for editors: a
YAML language server picks it up from a first line
`# yaml-language-server: $schema=kts.schema.json`.

`kts validate CONFIG` checks a config without running it, including what a JSON
Schema cannot say (a bless metric the task reports, each value of a tuning space,
model options against the builder). Any key can be overridden on the command line:
`--set training.epochs=3`.
"""


def markdown() -> str:
    """``docs/config.md``: one table per section, every key."""
    out = [HEADER]
    for title, prefix, model in _sections(RunConfig, ""):
        out.append(f"\n## {title}\n")
        about = _first_paragraph(model.__doc__)
        if about:
            out.append(f"{about}\n")
        out.append("| key | type | default | allowed | description |")
        out.append("|---|---|---|---|---|")
        for key, info in _fields(model):
            out.append(_row(f"{prefix}{key}", info))
        if model is ModelConfig:
            out.append(_row_text("model.<option>", "any", "", "see below", _MODEL_OPTIONS))
    out.append(_model_options())
    return "\n".join(out).rstrip() + "\n"


_MODEL_OPTIONS = (
    "The family's options, next to `type`: the keyword arguments of its builder, "
    "checked against its signature (`kts describe MODEL` shows the layers)."
)


def _sections(model: Any, prefix: str) -> list[tuple[str, str, Any]]:
    """(title, key prefix, model) for ``model`` and every section below it, depth first."""
    title = f"`{prefix.rstrip('.')}`" if prefix else "Top level"
    found = [(title, prefix, model)]
    for key, info in _fields(model):
        inner = _section_of(info.annotation)
        if inner is not None:
            model_cls, mapping = inner
            found += _sections(
                model_cls, f"{prefix}{key}.<name>." if mapping else f"{prefix}{key}."
            )
    return found


def _fields(model: Any) -> list[tuple[str, FieldInfo]]:
    return [(info.alias or name, info) for name, info in model.model_fields.items()]


def _section_of(annotation: Any) -> tuple[Any, bool] | None:
    """(section model, keyed by name?) if ``annotation`` holds a section, else None."""
    for arg in _union_args(annotation):
        if _is_model(arg):
            return arg, False
        if typing.get_origin(arg) is dict and _is_model(typing.get_args(arg)[1]):
            return typing.get_args(arg)[1], True
    return None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _union_args(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _type(annotation: Any) -> str:
    """A reader's name for ``annotation``: integer, list of string, section, ..."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(_type(a) for a in args))
    if origin is Literal:
        return " or ".join(dict.fromkeys(_type(type(a)) for a in _literal_values(annotation)))
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(_type(a) for a in args) + "]"
    if origin is dict:
        return f"mapping of {_type(args[0])} to {_type(args[1])}"
    if _is_model(annotation):
        return "section"
    names = {int: "integer", float: "number", str: "string", bool: "boolean"}
    if annotation is type(None):
        return "null"
    return names.get(annotation, "any")


def _literal_values(annotation: Any) -> list[Any]:
    """Every value of the `Literal`s in ``annotation`` (through unions and Annotated)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return list(args)
    if origin is typing.Annotated:
        return _literal_values(args[0])
    if origin in (Union, types.UnionType):
        return [v for a in args for v in _literal_values(a)]
    return []


def _allowed(info: FieldInfo) -> str:
    values = _literal_values(info.annotation)
    parts = [", ".join(f"`{_yaml(v)}`" for v in values)] if values else []
    bounds = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    for item in info.metadata:
        for attr, sign in bounds.items():
            limit = getattr(item, attr, None)
            if limit is not None:
                parts.append(f"{sign} {_number(limit)}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            parts.append(f"pattern `{pattern}`")
    return "; ".join(parts)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    """``value`` as it is written in YAML (flow style)."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return _number(value)
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value) if not isinstance(value, str) else value


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else f"{value}"


def _row(key: str, info: FieldInfo) -> str:
    description = " ".join((info.description or "").split())
    if _section_of(info.annotation) is not None:
        description += " See below."
    allowed = "a family below" if key == "model.type" else _allowed(info)
    return _row_text(key, _type(info.annotation), _default(info), allowed, description)


def _row_text(key: str, kind: str, default: str, allowed: str, description: str) -> str:
    cells = [f"`{key}`", kind, default, allowed, description]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def _model_options() -> str:
    from service import models

    lines = [
        "\n## Model options by `model.type`\n",
        "| `model.type` | options |",
        "|---|---|",
    ]
    for name in models.available():
        options = ", ".join(f"`{o}`" for o in models.option_names(name))
        lines.append(f"| `{name}` | {options} |")
    return "\n".join(lines)
