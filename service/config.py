"""The run configuration: one typed tree, validated once at the edge.

YAML (plus ``--set dotted.key=value`` overrides) goes in through `load_config`;
everything downstream receives a frozen `RunConfig`. Unknown keys and wrong types
are `UserError`s naming the dotted field, what was received and what is allowed.

Example:
    >>> cfg = load_config("pipelines/configs/digits_cnn.yaml", ["training.epochs=3"])
    >>> cfg.training.epochs
    3
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.errors import UserError, did_you_mean

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, values immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------- data
class SplitConfig(Section):
    """Fractions of the rows that go to train / validation / test (sum to 1)."""

    train: float = Field(0.7, gt=0, lt=1)
    validation: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)
    stratify: bool = True

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train + validation + test must sum to 1; received {self.train} + "
                f"{self.validation} + {self.test} = {total:g}"
            )
        return self


class DataConfig(Section):
    """Where the examples come from and how they are split."""

    source: Literal["digits"] = "digits"
    split: SplitConfig = SplitConfig()


# -------------------------------------------------------------------- model
class ModelConfig(BaseModel):
    """A model family (`type`, a name from `service.models.available()`) plus its options.

    The options are the builder's keyword arguments; they are checked against the
    builder's signature here, so a typo fails at validation, not after data loading.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = "simple_cnn"

    @model_validator(mode="after")
    def _check_options(self) -> ModelConfig:
        from service import models

        models.validate_options(self.type, self.options)
        return self

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# ----------------------------------------------------------------- training
OptimizerName = Literal["sgd", "rmsprop", "adam", "adamw", "adamax", "adadelta", "adagrad", "nadam"]


class OptimizerConfig(Section):
    """Optimizer and its hyper-parameters (unused ones are ignored by that optimizer)."""

    name: OptimizerName = "adam"
    learning_rate: float = Field(1e-3, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    beta_1: float = Field(0.9, gt=0, lt=1)
    beta_2: float = Field(0.999, gt=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    clipnorm: float | None = Field(None, gt=0)
    clipvalue: float | None = Field(None, gt=0)


class EarlyStoppingConfig(Section):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs."""

    enabled: bool = True
    monitor: str = "val_loss"
    patience: int = Field(5, ge=0)
    min_delta: float = Field(0.0, ge=0)
    restore_best_weights: bool = True


class TrainingConfig(Section):
    """How the weights are fitted on the train split."""

    epochs: int = Field(30, ge=1, le=100_000)
    batch_size: int = Field(64, ge=1, le=1_000_000)
    optimizer: OptimizerConfig = OptimizerConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = "auto"
    jit_compile: bool = False
    distribution: Literal["auto", "none", "mirrored", "multi_worker"] = "auto"
    verbose: int = Field(0, ge=0, le=2)


# ---------------------------------------------------------- tracking/export
class TrackingConfig(Section):
    """MLflow tracking. `uri` None means `$MLFLOW_TRACKING_URI`, else ``sqlite:///mlflow.db``."""

    enabled: bool = True
    uri: str | None = None
    experiment: str | None = None
    run_name: str | None = None
    required: bool = True


class ExportConfig(Section):
    """TF-Serving export to ``base_path/model_name/VERSION/``."""

    enabled: bool = True
    base_path: str = "serving_models"
    model_name: str | None = Field(None, pattern=NAME_PATTERN)


class RunConfig(Section):
    """The whole pipeline: one YAML file."""

    name: str = Field(pattern=NAME_PATTERN)
    seed: int = Field(42, ge=0, le=2**31 - 1)
    work_dir: str = "runs"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    tuning: None = None
    tracking: TrackingConfig = TrackingConfig()
    export: ExportConfig = ExportConfig()

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def export_name(self) -> str:
        return self.export.model_name or self.name

    @property
    def run_dir(self) -> Path:
        """Where this pipeline keeps its working files (resolved config, backups)."""
        return Path(self.work_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (model options inlined)."""
        return self.model_dump(mode="json")


# --------------------------------------------------------------- loading
def _format_error(err: ValidationError, source: str) -> str:
    parts = []
    for item in err.errors()[:3]:
        loc = ".".join(str(p) for p in item["loc"])
        kind = item["type"]
        received = item.get("input")
        if kind == "extra_forbidden":
            parent = item["loc"][:-1]
            allowed = _allowed_keys(parent)
            hint = did_you_mean(str(item["loc"][-1]), allowed)
            parts.append(
                f"unknown key `{loc}`.{hint} Allowed here: {', '.join(allowed)}"
                if allowed
                else f"unknown key `{loc}`"
            )
        elif kind == "missing":
            parts.append(f"missing required key `{loc}`")
        else:
            msg = item["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            parts.append(
                f"invalid value for `{loc or '(top level)'}`: received {received!r}; {msg}"
            )
    more = len(err.errors()) - len(parts)
    suffix = f" (and {more} more)" if more > 0 else ""
    return f"{source}: " + "; ".join(parts) + suffix


def _allowed_keys(loc: Iterable[Any]) -> list[str]:
    model: Any = RunConfig
    for part in loc:
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        model = field.annotation
    return list(model.model_fields) if hasattr(model, "model_fields") else []


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
    return key.strip().split("."), value


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``dotted.key=value`` set (validated later)."""
    data: dict[str, Any] = copy.deepcopy(dict(raw))
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise UserError(
                    f"Invalid value for `--set {text}`: `{where}` is {child!r}, not a section."
                )
            node = child
        node[path[-1]] = value
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


def validate(data: Mapping[str, Any], *, source: str = "config") -> RunConfig:
    """Validate plain data into a `RunConfig` or raise a one-line `UserError`."""
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise UserError(f"{source}: keys must be strings; received {bad_keys[0]!r}.")
    try:
        return RunConfig.model_validate(dict(data))
    except ValidationError as err:
        raise UserError(_format_error(err, source)) from None
    except UserError as err:  # raised by a section's own checks (model options)
        raise UserError(f"{source}: {err}") from None


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Read, override and validate a pipeline config file."""
    raw = read_yaml(path)
    return validate(apply_overrides(raw, overrides), source=str(path))


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
