"""The run configuration: one typed tree, validated once at the edge.

YAML (plus ``--set dotted.key=value`` overrides) goes in through `load_config`;
everything downstream receives a frozen `RunConfig`. Unknown keys and wrong types
are `UserError`s naming the dotted field, what was received and what is allowed.

The package's modules:

- `vocab`: each vocabulary (tasks, sources, losses, optimizers, ...) spelled once;
- `direction`: which way a metric is better, as Keras decides it;
- `schema`: the pydantic sections and their own checks;
- `checks`: checks across sections, run once per load;
- `keys`: dotted keys (the one setter, flattening, walking the schema);
- `messages`: pydantic errors as one line;
- `loading`: YAML, overrides, `load_config`, a trial's `with_values`;
- `reference`: the JSON Schema (``kts schema``) and ``docs/config.md``.

Example:
    >>> cfg = load_config("pipelines/configs/digits_cnn.yaml", ["training.epochs=3"])
    >>> cfg.training.epochs
    3
"""

from __future__ import annotations

from service.config.checks import check_bless_metric
from service.config.direction import metric_direction
from service.config.keys import flatten, set_key
from service.config.loading import (
    MAX_DEPTH,
    MAX_LIST,
    MAX_MODEL_LIST,
    apply_overrides,
    load_config,
    parse_override,
    read_yaml,
    validate,
    with_values,
)
from service.config.schema import (
    NAME_PATTERN,
    AugmentationConfig,
    BlessConfig,
    DataConfig,
    EarlyStoppingConfig,
    ExportConfig,
    FeatureSpec,
    ModelConfig,
    ObjectiveConfig,
    OptimizerConfig,
    ParamSpec,
    PreprocessingConfig,
    RegistryConfig,
    RunConfig,
    ScheduleConfig,
    Section,
    SplitConfig,
    TrackingConfig,
    TrainingConfig,
    TuningConfig,
)
from service.vocab import (
    BUILTIN_SOURCES,
    FILE_SOURCES,
    LOSSES_BY_TASK,
    TEST_METRICS_BY_TASK,
)

__all__ = [
    "BUILTIN_SOURCES",
    "FILE_SOURCES",
    "LOSSES_BY_TASK",
    "MAX_DEPTH",
    "MAX_LIST",
    "MAX_MODEL_LIST",
    "NAME_PATTERN",
    "TEST_METRICS_BY_TASK",
    "AugmentationConfig",
    "BlessConfig",
    "DataConfig",
    "EarlyStoppingConfig",
    "ExportConfig",
    "FeatureSpec",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimizerConfig",
    "ParamSpec",
    "PreprocessingConfig",
    "RegistryConfig",
    "RunConfig",
    "ScheduleConfig",
    "Section",
    "SplitConfig",
    "TrackingConfig",
    "TrainingConfig",
    "TuningConfig",
    "apply_overrides",
    "check_bless_metric",
    "flatten",
    "load_config",
    "metric_direction",
    "parse_override",
    "read_yaml",
    "set_key",
    "validate",
    "with_values",
]
