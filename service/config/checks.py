"""Checks that span config sections, run once per load (not again for each tuning trial).

- `check_bless_metric`: `bless.metric` is a test metric that `data.task` reports.
- `check_space`: every `tuning.space` key names a model option or a training field,
  and every value it can take suits that field (so it fails at validation, not in a
  trial). Each candidate value is validated against its own section only.

The schema (`service.config.schema`) calls these from `RunConfig`'s validators; this
module reads the schema through the config it is given, so it does not import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from service.config.keys import python_name, yaml_fields
from service.errors import UserError, did_you_mean
from service.vocab import TEST_METRICS_BY_TASK

if TYPE_CHECKING:
    from service.config.schema import ParamSpec, RunConfig


def check_bless_metric(metric: str, task: str, *, resolved: bool = False) -> None:
    """Raise `UserError` unless a run of ``task`` reports ``metric`` (``auto``: any task).

    Called at validation with `data.task`, and again once the data has said what
    ``auto`` is (``resolved``), before anything is recorded.
    """
    if task in TEST_METRICS_BY_TASK:
        allowed = [*TEST_METRICS_BY_TASK[task], "best_epoch"]
        what = (
            f"the test metrics of a {task} task (data.task resolved from the data)"
            if resolved
            else f"the test metrics of data.task {task!r}"
        )
    else:
        allowed = sorted({m for ms in TEST_METRICS_BY_TASK.values() for m in ms} | {"best_epoch"})
        what = "the test metrics some task reports"
    if metric not in allowed:
        raise UserError(
            f"Invalid value for `bless.metric`: received {metric!r}; expected one of "
            f"{', '.join(allowed)} ({what}).{did_you_mean(metric, allowed)}"
        )


def check_space(cfg: RunConfig) -> None:
    """Every `tuning.space` key must name a model option or a training field, and each
    value it can take must suit that field."""
    if cfg.tuning is None:
        return
    for key in cfg.tuning.space:
        _check_key(cfg, key)
    for key, spec in cfg.tuning.space.items():
        for value in candidates(spec):
            problem = field_problem(cfg, key, value)
            if problem:
                raise UserError(
                    f"Invalid value for `tuning.space.{key}`: received {value!r}, which "
                    f"`{key}` does not accept ({problem})."
                )


def _check_key(cfg: RunConfig, key: str) -> None:
    from service import models

    section, _, rest = key.partition(".")
    allowed: list[str]
    if section == "model":
        allowed = [f"model.{o}" for o in models.option_names(cfg.model.type)]
    elif section == "training":
        node: Any = type(cfg.training)
        prefix = "training"
        for part in rest.split("."):
            fields = yaml_fields(node)
            if part not in fields:
                allowed = [f"{prefix}.{n}" for n in fields] if fields else [prefix]
                break
            node, prefix = fields[part].annotation, f"{prefix}.{part}"
        else:
            if not yaml_fields(node):
                return  # a leaf field of the training section
            allowed = [f"{prefix}.{n}" for n in yaml_fields(node)]
    else:
        allowed = ["model.<option>", "training.<field>"]
    if key not in allowed:
        raise UserError(
            f"Unknown key `tuning.space.{key}`: received {key!r}; expected one of "
            f"{', '.join(allowed)}.{did_you_mean(key, allowed)}"
        )


def candidates(spec: ParamSpec) -> list[Any]:
    """The values a space key is checked with: a choice's values, both booleans, or a
    range's two ends."""
    if spec.type == "choice":
        return list(spec.values or [])
    if spec.type == "boolean":
        return [True, False]
    ends = (spec.min, spec.max)
    return [int(v) if spec.type == "int" else v for v in ends if v is not None]


def field_problem(cfg: RunConfig, key: str, value: Any) -> str | None:
    """Why the dotted ``key`` of ``cfg`` cannot take ``value``, or None.

    Only the section holding ``key`` is validated again, with that one value changed;
    errors of its other fields, and of other sections, are not this key's.
    """
    *path, leaf = key.split(".")
    section: Any = cfg
    for part in path:
        section = getattr(section, python_name(type(section), part))
    data = section.model_dump(mode="json", by_alias=True)
    data[leaf] = value
    try:
        type(section).model_validate(data)
    except ValidationError as err:
        for item in err.errors():
            if ".".join(str(p) for p in item["loc"]) == leaf:
                return str(item["msg"]).removeprefix("Value error, ")
    except UserError as err:
        if f"`{key}`" in str(err):
            return str(err).rstrip(".")
    return None
