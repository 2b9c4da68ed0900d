"""The run configuration's schema: one typed tree of frozen pydantic sections.

Each section forbids unknown keys and checks what it can see itself (a split's
fractions, a schedule's boundaries, a tuning space's parents). Checks that span
sections live in `service.config.checks` and run once per load; reading YAML and
``--set`` overrides are `service.config.loading`'s. Allowed values come from the
vocabularies in `service.vocab`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from service.config import checks
from service.config.direction import read_direction, resolve_direction
from service.errors import UserError
from service.vocab import (
    BUILTIN_SOURCES,
    FILE_SOURCES,
    TABLE_SOURCES,
    Direction,
    DirectionSetting,
    Loss,
    Optimizer,
    Schedule,
    Source,
    Task,
    Tuner,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# Validation context key: the tuning space was checked when the run's config was loaded.
SPACE_CHECKED = "space_checked"


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, values immutable.

    Each field's docstring is its description in the JSON Schema and `docs/config.md`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# --------------------------------------------------------------------- data
class SplitConfig(Section):
    """How rows go to train / validation / test.

    Values below 1 are fractions (summing to 1); whole numbers >= 1 are row counts
    (train may then be ``-1``: "all the rest"). A row's part follows a hash of its
    key (`data.id_column`, its file, or its content) and `seed`, the split's own seed:
    fixed by default, independent of the run's `seed` (which seeds weights and
    shuffling), so every run on the same data has the same test rows, and rows
    appended later leave the old rows where they were. With `stratify`
    (classification) every class must reach every part (checked; shares per class
    follow the fractions up to chance); time series are split in order (no
    shuffling, no look-ahead); with `data.group` no group spans two parts.
    """

    train: float = Field(0.7, ge=-1)
    """Train share: a fraction, or with row counts a whole count or -1 (all the rest)."""
    validation: float = Field(0.15, gt=0)
    """Validation share: a fraction below 1, or a row count >= 1."""
    test: float = Field(0.15, gt=0)
    """Test share: a fraction below 1, or a row count >= 1."""
    stratify: bool = True
    """Classification: every class reaches every part, in proportion."""
    ordered: bool | None = None
    """Split in row order (no shuffling, no look-ahead); unset: only for time series."""
    seed: int = Field(0, ge=0)
    """The split's own seed (independent of the run's `seed`), so test rows stay put."""

    @property
    def uses_counts(self) -> bool:
        return self.validation >= 1 and self.test >= 1

    @model_validator(mode="after")
    def _consistent(self) -> SplitConfig:
        if self.uses_counts:
            for name in ("validation", "test"):
                value = getattr(self, name)
                if value != int(value):
                    raise ValueError(f"{name} must be a whole row count; received {value}")
            if self.train != -1 and (self.train < 1 or self.train != int(self.train)):
                raise ValueError(
                    f"with row counts, train must be a whole count or -1 (the rest); "
                    f"received {self.train}"
                )
            return self
        parts = (self.train, self.validation, self.test)
        if not all(0 < p < 1 for p in parts):
            raise ValueError(
                f"fractions must lie in (0, 1), or validation and test be row counts >= 1; "
                f"received {parts}"
            )
        total = sum(parts)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train + validation + test must sum to 1; received {self.train} + "
                f"{self.validation} + {self.test} = {total:g}"
            )
        return self


class FeatureSpec(Section):
    """One feature of a TFRecord of `tf.train.Example`s.

    ``image``: encoded PNG/JPEG/BMP/GIF bytes (a bytes feature), decoded and resized
    to `data.image_size` with `data.color_mode`, like the files of an image folder.
    """

    dtype: Literal["float32", "int64", "string", "image"] = "float32"
    """Feature type; `image` is encoded PNG/JPEG/BMP/GIF bytes."""
    shape: list[int] = Field(default_factory=list)
    """Fixed shape of the feature ([] for a scalar)."""


class PreprocessingConfig(Section):
    """Preprocessing fitted on the train split only and exported inside the model."""

    normalize: bool = True
    """Standardize numeric inputs with train-split statistics (a layer in the model)."""
    pca: int | None = Field(None, ge=1)
    """Project features on this many principal components (fitted on train)."""
    lda: int | None = Field(None, ge=1)
    """Project features on this many linear discriminants (fitted on train)."""
    max_tokens: int = Field(20_000, ge=10)
    """Text: vocabulary size (most frequent train tokens)."""
    sequence_length: int = Field(200, ge=1)
    """Text: tokens per example (cut or padded)."""

    @model_validator(mode="after")
    def _one_projection(self) -> PreprocessingConfig:
        if self.pca and self.lda:
            raise ValueError("choose at most one of pca and lda")
        return self


class AugmentationConfig(Section):
    """Random image changes applied to the train part only, never exported.

    Keras preprocessing layers run inside the input pipeline on each train batch
    (validation, test and serving see the data as it is). Each key is searchable
    by the tuner like any other (``data.augmentation.rotation``). Factors follow the
    Keras layers: ``rotation`` is a fraction of a full turn, ``zoom`` and
    ``translation`` fractions of the image size, ``contrast`` and ``brightness``
    fractions of the value range.
    """

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    """Random flips."""
    rotation: float = Field(0.0, ge=0, le=1)
    """Random rotation, as a fraction of a full turn."""
    zoom: float = Field(0.0, ge=0, lt=1)
    """Random zoom, as a fraction of the image size."""
    translation: float = Field(0.0, ge=0, lt=1)
    """Random shift, as a fraction of the image size."""
    contrast: float = Field(0.0, ge=0, lt=1)
    """Random contrast change, as a fraction of the value range."""
    brightness: float = Field(0.0, ge=0, le=1)
    """Random brightness change, as a fraction of the value range."""

    @property
    def enabled(self) -> bool:
        return self.flip != "none" or any(
            getattr(self, k) for k in ("rotation", "zoom", "translation", "contrast", "brightness")
        )


class DataConfig(Section):
    """Where the examples come from, what the label means and how rows are split.

    Built-in sources ship inside installed packages (no download): ``digits`` and
    ``breast_cancer`` (scikit-learn), ``sunspots`` (statsmodels; yearly sunspot
    numbers, a time series). File sources read `path`. `id_column` (CSV, Parquet)
    names a column of stable row ids: rows keep their split part and their identity
    across versions of the file by it; without it a row is known by its content.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, use_attribute_docstrings=True
    )

    source: Source = "digits"
    """Where examples come from: a built-in set or a file format read from `path`."""
    path: str | None = None
    """File or folder of a file source."""
    label: str | None = None
    """Label column (table sources) or feature (TFRecord)."""
    features: list[str] | None = None
    """Feature columns to use (default: all but label, text, group and id)."""
    text: str | None = None
    """Text column: the model reads raw strings."""
    group: str | None = None
    """Column of group ids: no group spans two split parts."""
    id_column: str | None = None
    """Column of stable row ids (csv, parquet): rows keep their part and identity across file
    versions."""
    # reconstruction: an autoencoder learns to reproduce image inputs (labels, if any,
    # only stratify the split and colour the projection).
    task: Literal["auto", Task] = "auto"
    """What the label means; `auto` infers it from the data. `reconstruction`: an autoencoder
    reproduces image inputs."""
    classes: list[str] | None = None
    """Class names in label order (default: as found in the data)."""
    image_size: tuple[int, int] = (64, 64)
    """Images are resized to [height, width]."""
    color_mode: Literal["grayscale", "rgb"] = "rgb"
    """Images are read as grayscale (1 channel) or rgb (3)."""
    feature_spec: dict[str, FeatureSpec] | None = None
    """TFRecord: each feature's dtype and shape, by name."""
    window: int | None = Field(None, ge=1)
    """Time series: past steps per example (a sliding window)."""
    horizon: int = Field(1, ge=1)
    """Time series: how many steps ahead the target is."""
    split: SplitConfig = SplitConfig()
    """How rows go to train / validation / test."""
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    """Statistics fitted on the train split and exported inside the model."""
    # The input pipeline (tf.data): rows are read, decoded and checked as they are
    # consumed. `shuffle_buffer` rows of a table or TFRecord source are shuffled
    # before decoding (image and text folders shuffle the whole file list each
    # epoch); `cache` keeps decoded rows after the first epoch (memory, or files
    # under the run folder); `deterministic` keeps parallel reads in order.
    shuffle_buffer: int = Field(10_000, ge=1)
    """Rows of a table or TFRecord source shuffled before decoding."""
    cache: Literal["none", "memory", "disk"] = "none"
    """Keep decoded rows after the first epoch: in memory, or on disk under the run folder."""
    deterministic: bool = True
    """Keep parallel reads in order (reproducible batches)."""
    # The checking pass before training: every row (`full`), the train and
    # validation rows plus up to 1,000 test rows (`sample`), or only the rows
    # statistics are fitted on (`none`). A bad row stops the run (exit 2) or, with
    # `on_bad_rows: skip`, is left out and counted (metric `data_skipped_rows`).
    # (`validate` in YAML; the Python name avoids pydantic's own `validate`.)
    validate_rows: Literal["full", "sample", "none"] = Field("full", alias="validate")
    """Rows checked before training: all (`full`), train + validation + up to 1,000 test rows
    (`sample`), or only those statistics are fitted on (`none`)."""
    on_bad_rows: Literal["error", "skip"] = "error"
    """A bad row stops the run (`error`, exit 2) or is left out and counted (`skip`)."""
    augmentation: AugmentationConfig = AugmentationConfig()
    """Random image changes applied to the train part only, never exported."""

    @model_validator(mode="after")
    def _source_fields(self) -> DataConfig:
        if self.source in FILE_SOURCES and not self.path:
            raise ValueError(f"source {self.source!r} needs `path` (a file or folder)")
        if self.source in BUILTIN_SOURCES and self.path:
            raise ValueError(f"source {self.source!r} is built in; remove `path`")
        if self.source in TABLE_SOURCES and not self.label:
            raise ValueError(f"source {self.source!r} needs `label` (the label column)")
        if self.id_column and self.source not in TABLE_SOURCES:
            raise ValueError(
                f"`id_column` is for {' and '.join(TABLE_SOURCES)} sources; "
                f"received source {self.source!r}"
            )
        if self.id_column and self.window:
            raise ValueError(
                "`id_column` does not apply to a windowed series (`window`): "
                "its rows are windows, known by their values"
            )
        taken = [c for c in (self.label, self.text, self.group) if c]
        if self.id_column and (self.id_column in taken or self.id_column in (self.features or [])):
            raise ValueError(
                f"`id_column` {self.id_column!r} is also the label, text, group or a feature; "
                "expected a column of its own"
            )
        if self.source == "tfrecord" and not (self.feature_spec and self.label):
            raise ValueError("source 'tfrecord' needs `feature_spec` and `label`")
        if self.source == "tfrecord" and self.label not in (self.feature_spec or {}):
            raise ValueError(f"label {self.label!r} must be one of the feature_spec keys")
        return self


# -------------------------------------------------------------------- model
class ModelConfig(BaseModel):
    """A model family (`type`, a name from `service.models.available()`) plus its options.

    The options are the builder's keyword arguments; they are checked against the
    builder's signature here, so a typo fails at validation, not after data loading.
    """

    model_config = ConfigDict(extra="allow", frozen=True, use_attribute_docstrings=True)

    type: str = "simple_cnn"
    """Model family (`kts describe` or `service.models.available()`); its options are the
    builder's keyword arguments, set next to `type`."""

    @model_validator(mode="after")
    def _check_options(self) -> ModelConfig:
        from service import models

        models.validate_options(self.type, self.options)
        return self

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# ----------------------------------------------------------------- training
class OptimizerConfig(Section):
    """Optimizer and its hyper-parameters (unused ones are ignored by that optimizer)."""

    name: Optimizer = "adam"
    """Keras optimizer."""
    learning_rate: float = Field(1e-3, gt=0)
    """Base learning rate (the peak after warm-up)."""
    momentum: float = Field(0.0, ge=0, lt=1)
    """Momentum (sgd, rmsprop)."""
    nesterov: bool = False
    """Nesterov momentum (sgd)."""
    beta_1: float = Field(0.9, gt=0, lt=1)
    """First-moment decay (Adam family)."""
    beta_2: float = Field(0.999, gt=0, lt=1)
    """Second-moment decay (Adam family)."""
    weight_decay: float | None = Field(None, ge=0)
    """Decoupled weight decay (adamw)."""
    clipnorm: float | None = Field(None, gt=0)
    """Clip each gradient to this norm."""
    clipvalue: float | None = Field(None, gt=0)
    """Clip each gradient element to this value."""


class ScheduleConfig(Section):
    """Learning-rate schedule over optimizer steps, optionally after a linear warm-up.

    ``piecewise`` takes step `boundaries` and `values` (multipliers of the base rate,
    one more than the boundaries); ``exponential`` and ``inverse_time`` use
    `decay_rate`; ``cosine`` and ``polynomial`` decay to ``alpha x`` the base rate;
    ``cosine_restarts`` restarts every `decay_steps` (times `t_mul`). Unset
    `decay_steps` means the whole run.
    """

    type: Schedule = "constant"
    """Learning-rate schedule over optimizer steps."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up steps before the schedule starts."""
    decay_steps: int | None = Field(None, ge=1)
    """Decay period in steps (unset: the whole run; cosine_restarts: the first period)."""
    decay_rate: float = Field(0.5, gt=0)
    """Decay rate (exponential, inverse_time)."""
    staircase: bool = False
    """Decay in steps rather than continuously (exponential, inverse_time)."""
    alpha: float = Field(0.0, ge=0, le=1)
    """Final rate as a fraction of the base rate (cosine, cosine_restarts, polynomial)."""
    power: float = Field(1.0, gt=0)
    """Polynomial power (polynomial)."""
    t_mul: float = Field(2.0, gt=0)
    """Period multiplier after each restart (cosine_restarts)."""
    m_mul: float = Field(1.0, gt=0)
    """Rate multiplier after each restart (cosine_restarts)."""
    boundaries: list[int] = Field(default_factory=list)
    """Step boundaries, increasing (piecewise)."""
    values: list[float] = Field(default_factory=list)
    """Multipliers of the base rate, one more than boundaries (piecewise)."""

    @model_validator(mode="after")
    def _piecewise_shape(self) -> ScheduleConfig:
        if self.type == "piecewise":
            if not self.boundaries or len(self.values) != len(self.boundaries) + 1:
                raise ValueError(
                    "piecewise needs boundaries (steps) and one more value than boundaries; "
                    f"received {len(self.boundaries)} boundaries and {len(self.values)} values"
                )
            if sorted(self.boundaries) != self.boundaries:
                raise ValueError(f"boundaries must increase; received {self.boundaries}")
        return self


def _old_spelling(field: str) -> BeforeValidator:
    """For a ``direction`` field (Python name ``direction_setting``): the deprecated
    ``maximize``/``minimize`` still read, with a note."""
    return BeforeValidator(lambda value: read_direction(value, field=field))


class EarlyStoppingConfig(Section):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs.

    `monitor` also picks the best epoch (the one `restore_best_weights` restores, and
    the epoch count a tuned run retrains for). Which way it improves is `direction`:
    ``auto`` decides it from the name as Keras' ``mode="auto"`` does (losses and errors
    down; accuracy, AUC, precision, recall up); another name needs ``max`` or ``min``.
    """

    enabled: bool = True
    """Stop when `monitor` stops improving."""
    monitor: str = "val_loss"
    """Keras log name to watch (`val_*`: the validation split); also picks the best epoch."""
    direction_setting: Annotated[
        DirectionSetting, _old_spelling("training.early_stopping.direction")
    ] = Field("auto", alias="direction")
    """Which way `monitor` improves: `auto` asks the metric as Keras' `mode="auto"` does;
    another name needs `max` or `min`. (`maximize`/`minimize` still read, deprecated.)"""
    patience: int = Field(5, ge=0)
    """Epochs without improvement before stopping."""
    min_delta: float = Field(0.0, ge=0)
    """Smallest change that counts as an improvement."""
    restore_best_weights: bool = True
    """End with the best epoch's weights, not the last."""

    @property
    def direction(self) -> Direction:
        """``max`` or ``min``: `direction`, with ``auto`` decided by `monitor`."""
        return resolve_direction(
            self.direction_setting,
            self.monitor,
            field="training.early_stopping.direction",
            metric_field="training.early_stopping.monitor",
        )

    @model_validator(mode="after")
    def _direction_known(self) -> EarlyStoppingConfig:
        self.direction  # noqa: B018  (raises for a monitor Keras cannot place)
        return self


class TrainingConfig(Section):
    """How the weights are fitted on the train split."""

    epochs: int = Field(30, ge=1, le=100_000)
    """Passes over the train split (at most, with early stopping)."""
    batch_size: int = Field(64, ge=1, le=1_000_000)
    """Examples per batch (global, over all replicas)."""
    optimizer: OptimizerConfig = OptimizerConfig()
    """Optimizer and its hyper-parameters (unused ones are ignored by that optimizer)."""
    schedule: ScheduleConfig = ScheduleConfig()
    """Learning-rate schedule, optionally after a linear warm-up."""
    loss: Literal["auto", Loss] = "auto"
    """Loss; `auto` picks the task's usual loss. Checked against the task and the model's output."""
    class_weight: Literal["balanced"] | dict[str, float] | None = None
    """Per-class loss weights: `balanced` (inverse frequency) or a mapping class -> weight."""
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    """Early stopping and the best epoch."""
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = "auto"
    """Float policy; `auto`: mixed_float16 on a recent GPU, float32 otherwise."""
    jit_compile: bool = False
    """Compile the train step with XLA."""
    distribution: Literal["auto", "none", "mirrored", "multi_worker"] = "auto"
    """Distribution strategy; `auto`: mirrored over several GPUs, none otherwise."""
    resume: bool = True
    """A killed run started again continues from its last epoch into the same MLflow run."""
    verbose: int = Field(0, ge=0, le=2)
    """Keras progress output (0 silent, 1 bar, 2 one line per epoch)."""


class BlessConfig(Section):
    """The gate between a trained candidate and the served champion.

    The candidate is exported, registered and made `champion` only when it beats
    the current champion on `metric` by `min_improvement` (or when there is no
    champion yet). Both are scored on the rows of this run's test part that the
    champion never fitted on (not in its train or validation part); with fewer than
    `min_rows` such rows the gate refuses to decide (not blessed, the count given).
    """

    enabled: bool = True
    """Gate the export and the `champion` alias on beating the current champion."""
    metric: str = "test_accuracy"
    """Test metric compared (one the task reports, or `best_epoch`)."""
    direction_setting: Annotated[DirectionSetting, _old_spelling("bless.direction")] = Field(
        "auto", alias="direction"
    )
    """Which way `metric` is better: `auto` asks the metric as Keras does; `best_epoch` needs
    `max` or `min`. (`maximize`/`minimize` still read, deprecated.)"""
    min_improvement: float = Field(0.0, ge=0)
    """How much better than the champion the candidate must be."""
    min_rows: int = Field(30, ge=1)
    """Fewest test rows the champion never fitted on for the gate to decide."""

    @property
    def direction(self) -> Direction:
        """``max`` or ``min``: `direction`, with ``auto`` decided by `metric`."""
        return resolve_direction(
            self.direction_setting,
            self.metric,
            field="bless.direction",
            metric_field="bless.metric",
        )


# ------------------------------------------------------------------- tuning
class ParamSpec(Section):
    """One searchable hyper-parameter of `tuning.space` (keyed by a dotted config key).

    ``int`` / ``float``: a ``min``..``max`` range (``step``, ``sampling`` linear or
    log); ``choice``: one of ``values`` (lists allowed, e.g. ``[[16], [16, 32]]``);
    ``boolean``: true or false. With ``parent`` (another key of the space, a choice
    or boolean) the key is searched only while the parent takes one of
    ``parent_values``; otherwise the configured value stays.
    """

    type: Literal["int", "float", "choice", "boolean"]
    """Kind of hyper-parameter."""
    min: float | None = None
    """Lower end of an int or float range."""
    max: float | None = None
    """Upper end of an int or float range."""
    step: float | None = Field(None, gt=0)
    """Step of a range."""
    sampling: Literal["linear", "log"] = "linear"
    """Sample a range linearly or on a log scale (log needs min > 0)."""
    values: list[Any] | None = None
    """The choices of a `choice` (lists allowed, e.g. [[16], [16, 32]])."""
    parent: str | None = None
    """Another key of the space (a choice or boolean) this key depends on."""
    parent_values: list[Any] | None = None
    """The parent's values under which this key is searched."""

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.type in ("int", "float"):
            if self.min is None or self.max is None:
                raise ValueError(f"a {self.type} range needs `min` and `max`")
            if self.min > self.max or (self.type == "float" and self.min == self.max):
                raise ValueError(f"empty range: min {self.min:g} must be below max {self.max:g}")
            if self.type == "int" and (self.min != int(self.min) or self.max != int(self.max)):
                raise ValueError("an int range needs whole `min` and `max`")
            if self.sampling == "log" and self.min <= 0:
                raise ValueError(f"log sampling needs min > 0; received min {self.min:g}")
            if self.values is not None:
                raise ValueError(f"a {self.type} range takes min/max, not `values`")
        else:
            if self.min is not None or self.max is not None or self.step is not None:
                raise ValueError(f"a {self.type} takes no min/max/step")
        if self.type == "choice" and not self.values:
            raise ValueError("a choice needs a non-empty list of `values`")
        if self.type == "boolean" and self.values is not None:
            raise ValueError("a boolean takes no `values` (it searches true and false)")
        if (self.parent is None) != (self.parent_values is None):
            raise ValueError("`parent` and `parent_values` go together")
        if self.parent_values is not None and not self.parent_values:
            raise ValueError("`parent_values` must not be empty")
        return self


class ObjectiveConfig(Section):
    """What a trial is scored by: a Keras log name (``val_*`` is the validation split)."""

    metric: str = "val_accuracy"
    """Keras log name a trial is scored by (`val_*`: the validation split)."""
    direction_setting: Annotated[DirectionSetting, _old_spelling("tuning.objective.direction")] = (
        Field("auto", alias="direction")
    )
    """Which way `metric` is better: `auto` asks the metric as Keras does; another name needs
    `max` or `min`."""

    @property
    def direction(self) -> Direction:
        """``max`` or ``min``: `direction`, with ``auto`` decided by `metric`."""
        return resolve_direction(
            self.direction_setting,
            self.metric,
            field="tuning.objective.direction",
            metric_field="tuning.objective.metric",
        )

    @model_validator(mode="after")
    def _direction_known(self) -> ObjectiveConfig:
        self.direction  # noqa: B018  (raises for a metric Keras cannot place)
        return self


class TuningConfig(Section):
    """A Keras-Tuner search over `space` before the final training.

    Trials fit on the train split and are scored on the validation split (the test
    split is never seen). `epochs` (default, and at most, `training.epochs`) bounds
    each trial (and is Hyperband's ``max_epochs``); with `early_stopping` the training
    section's early stopping also applies inside trials. `enabled: false` skips the
    search (``--set tuning.enabled=false`` trains the configured values as they are).

    `kfold` (K >= 2): each trial fits K times on the folds of train + validation
    (stratified when `data.split.stratify` is) and scores the mean of the K folds'
    best `objective` values.

    `final` is what becomes the run's model after the search (the test split is
    still evaluated once, after it):

    - ``retrain_train_val`` (default): fit the best configuration from scratch on
      train + validation for the best trial's best epoch count (its best epoch by
      `training.early_stopping.monitor`, counted from epoch 1; the mean over folds
      with `kfold`), with no early stopping, as there is no held-out data left to
      stop on.
    - ``retrain``: fit the best configuration on train, early stopping on validation,
      as a run without tuning would.
    - ``best_weights``: no further fitting: the best trial's checkpoint (its best
      epoch) is the model; the run's learning curves are that trial's.
    """

    enabled: bool = True
    """Run the search (false: train the configured values as they are)."""
    tuner: Tuner = "random"
    """Keras-Tuner search algorithm."""
    space: dict[str, ParamSpec] = Field(default_factory=dict)
    """Searchable hyper-parameters, keyed by dotted config key (`model.<option>` or
    `training.<field>`)."""
    objective: ObjectiveConfig = ObjectiveConfig()
    """What a trial is scored by."""
    max_trials: int = Field(10, ge=1, le=100_000)
    """Most trials to run."""
    executions_per_trial: int = Field(1, ge=1, le=100)
    """Fits per trial (scores averaged)."""
    epochs: int | None = Field(None, ge=1, le=100_000)
    """Epochs per trial (default, and at most, `training.epochs`; Hyperband's max_epochs)."""
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    """Tuner seed (default: the run's `seed`)."""
    early_stopping: bool = True
    """Apply the training section's early stopping inside trials."""
    hyperband_factor: int = Field(3, ge=2)
    """Hyperband's reduction factor."""
    max_consecutive_failed_trials: int = Field(3, ge=1)
    """Stop the search after this many failed trials in a row."""
    kfold: int | None = Field(None, ge=2, le=100)
    """K >= 2: each trial fits on K folds of train + validation and scores their mean."""
    final: Literal["retrain_train_val", "retrain", "best_weights"] = "retrain_train_val"
    """What becomes the run's model after the search: retrain on train + validation for the
    best epoch count, retrain on train with early stopping, or the best trial's weights."""

    @model_validator(mode="after")
    def _combinations(self) -> TuningConfig:
        if self.enabled and not self.space:
            raise UserError(
                "Invalid value for `tuning.space`: received {}; expected at least one "
                "key to search (or tuning.enabled: false)."
            )
        if self.kfold is not None and self.tuner == "hyperband":
            raise UserError(
                f"Invalid value for `tuning.kfold`: received {self.kfold} with tuner "
                "'hyperband'; expected null (Hyperband continues a trial from the weights "
                "of the one it promotes, and a k-fold trial has K models), or another tuner."
            )
        if self.kfold is not None and self.final == "best_weights":
            raise UserError(
                f"Invalid value for `tuning.final`: received 'best_weights' with "
                f"tuning.kfold {self.kfold}; expected 'retrain_train_val' or 'retrain' "
                "(a k-fold trial has one model per fold, none fitted on the run's split)."
            )
        return self

    @model_validator(mode="after")
    def _parents(self) -> TuningConfig:
        for key, spec in self.space.items():
            if spec.parent is None:
                continue
            where = f"tuning.space.{key}.parent"
            parent = self.space.get(spec.parent)
            if parent is None:
                raise UserError(
                    f"Invalid value for `{where}`: received {spec.parent!r}; expected a key "
                    f"of tuning.space ({', '.join(k for k in self.space if k != key) or 'none'})."
                )
            if parent.type not in ("choice", "boolean") or parent.parent is not None:
                raise UserError(
                    f"Invalid value for `{where}`: received {spec.parent!r} ({parent.type}"
                    f"{', conditional' if parent.parent else ''}); expected an unconditional "
                    "choice or boolean."
                )
            allowed = parent.values if parent.type == "choice" else [True, False]
            bad = [v for v in spec.parent_values or [] if v not in (allowed or [])]
            if bad:
                raise UserError(
                    f"Invalid value for `tuning.space.{key}.parent_values`: received {bad!r}; "
                    f"expected values of {spec.parent}: {allowed!r}."
                )
        return self


# ---------------------------------------------------------- tracking/export
class TrackingConfig(Section):
    """MLflow tracking. `uri` None means `$MLFLOW_TRACKING_URI`, else ``sqlite:///mlflow.db``."""

    enabled: bool = True
    """Track the run in MLflow."""
    uri: str | None = None
    """Tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."""
    experiment: str | None = None
    """Experiment name (default: the pipeline's `name`)."""
    run_name: str | None = None
    """Run name (default: `<experiment>-<UTC time>-<4 hex>`, distinct per run)."""
    required: bool = True
    """An unreachable tracking server stops the run (exit 2); false: record into a local
    SQLite store."""
    reports: bool = True
    """Log report pictures (learning curves, confusion matrix, ...) and the model card."""
    # CPU, memory, disk, network (and GPU) as `system/*` metrics every N seconds.
    system_metrics: bool = True
    """Log CPU, memory, disk, network (and GPU) as `system/*` metrics."""
    system_metrics_interval: float = Field(10.0, ge=0.5, le=3600)
    """Seconds between system metric samples."""


class ExportConfig(Section):
    """TF-Serving export to ``base_path/model_name/VERSION/``."""

    enabled: bool = True
    """Export a TF-Serving SavedModel."""
    base_path: str = "serving_models"
    """Exports go to base_path/model_name/VERSION/."""
    model_name: str | None = Field(None, pattern=NAME_PATTERN)
    """Served model name (default: the pipeline's `name`)."""


class RegistryConfig(Section):
    """MLflow Model Registry versions (`model_name` None: the pipeline name).

    A blessed candidate is exported, logged as the run's MLflow model, registered and
    given the alias ``champion``. With `challengers`, a candidate that did not beat
    the champion is still logged and registered (its SavedModel written under the
    run folder, not where serving looks) with the alias ``challenger``, for comparison
    and manual promotion.
    """

    enabled: bool = True
    """Register blessed models in the MLflow Model Registry."""
    model_name: str | None = Field(None, pattern=NAME_PATTERN)
    """Registered model name (default: the pipeline's `name`)."""
    challengers: bool = True
    """Also register a candidate that did not beat the champion, with the alias `challenger`."""


class RunConfig(Section):
    """The whole pipeline: one YAML file."""

    name: str = Field(pattern=NAME_PATTERN)
    """Pipeline name: the default experiment, registered and served model name."""
    # Weights, shuffling and trials; not the split, which has `data.split.seed`.
    seed: int = Field(42, ge=0, le=2**31 - 1)
    """Seeds weights, shuffling and trials; not the split (`data.split.seed`)."""
    work_dir: str = "runs"
    """Folder of the pipelines' working files (resolved config, backups, reports)."""
    data: DataConfig = DataConfig()
    """Where examples come from, what the label means and how rows are split."""
    model: ModelConfig = ModelConfig()
    """Model family and its options."""
    training: TrainingConfig = TrainingConfig()
    """How the weights are fitted."""
    tuning: TuningConfig | None = None
    """Optional Keras-Tuner search before the final training."""
    tracking: TrackingConfig = TrackingConfig()
    """MLflow tracking."""
    bless: BlessConfig = BlessConfig()
    """The gate between a trained candidate and the served champion."""
    registry: RegistryConfig = RegistryConfig()
    """MLflow Model Registry versions."""
    export: ExportConfig = ExportConfig()
    """TF-Serving export."""

    @model_validator(mode="after")
    def _bless_metric(self) -> RunConfig:
        if self.bless.enabled:
            checks.check_bless_metric(self.bless.metric, self.data.task)
            self.bless.direction  # noqa: B018  (raises for a metric Keras cannot place)
        return self

    @model_validator(mode="after")
    def _tuning_space(self, info: ValidationInfo) -> RunConfig:
        # A trial's config (`service.config.loading.with_values`) has the space its
        # run's config had, checked when that was loaded: not again per trial.
        if not (info.context or {}).get(SPACE_CHECKED):
            checks.check_space(self)
        if self.tuning is not None and self.tuning.enabled:
            if self.training.distribution == "multi_worker":
                # Every worker of a multi-worker run would run its own search, each
                # trial a collective fit the others are not in: trials are spread over
                # processes by Keras-Tuner's chief and workers instead.
                raise UserError(
                    "Invalid value for `training.distribution`: received 'multi_worker' "
                    "with `tuning.enabled` true; expected 'auto', 'none' or 'mirrored' for a "
                    "search (spread trials over processes with `kts tune-chief` and "
                    "`kts tune-worker`), or --set tuning.enabled=false to train one model "
                    "on several workers."
                )
        return self

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def registered_name(self) -> str:
        return self.registry.model_name or self.name

    @property
    def export_name(self) -> str:
        return self.export.model_name or self.name

    @property
    def run_dir(self) -> Path:
        """Where this pipeline keeps its working files (resolved config, backups)."""
        return Path(self.work_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (model options inlined)."""
        return self.model_dump(mode="json", by_alias=True)
