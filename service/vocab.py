"""The config's vocabularies, each spelled once: the `Literal` types the schema uses and
the tuples and tables the rest of the service (and the error texts) are built from.

A vocabulary is a `Literal` (so mypy and pydantic see the allowed values) and its
values as a tuple (``typing.get_args``) for membership tests and messages. Modules
that dispatch on a name (data sources, optimizers, schedules) import from here;
`serving/` imports nothing of ours and keeps its own copy of `TASKS`, pinned to this
one by a test.

Example:
    >>> "csv" in TABLE_SOURCES, DEFAULT_LOSS["regression"]
    (True, 'mean_squared_error')
"""

from __future__ import annotations

from typing import Literal, get_args

# ---------------------------------------------------------------------- tasks
# What the label means. `reconstruction`: an autoencoder reproduces its (image) inputs;
# the model zoo's heads cover the other four.
HeadTask = Literal["multiclass", "binary", "multilabel", "regression"]
Task = Literal[HeadTask, "reconstruction"]
HEAD_TASKS: tuple[str, ...] = get_args(HeadTask)
TASKS: tuple[str, ...] = get_args(Task)
CLASSIFICATION_TASKS: tuple[str, ...] = ("multiclass", "binary")
VALUE_TASKS: tuple[str, ...] = ("regression", "reconstruction")  # compiled with `mae`

# -------------------------------------------------------------------- sources
# Built in: shipped inside installed packages (no download). Files: read from `path`.
BuiltinSource = Literal["digits", "breast_cancer", "sunspots"]
TableSource = Literal["csv", "parquet"]
FolderSource = Literal["image_dir", "text_dir"]
FileSource = Literal[TableSource, "npz", FolderSource, "tfrecord"]
Source = Literal[BuiltinSource, FileSource]
BUILTIN_SOURCES: tuple[str, ...] = get_args(BuiltinSource)
TABLE_SOURCES: tuple[str, ...] = get_args(TableSource)
FOLDER_SOURCES: tuple[str, ...] = get_args(FolderSource)
FILE_SOURCES: tuple[str, ...] = get_args(FileSource)
SOURCES: tuple[str, ...] = get_args(Source)

# --------------------------------------------------------------------- losses
Loss = Literal[
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
    "binary_focal_crossentropy",
    "mean_squared_error",
    "mean_absolute_error",
    "huber",
]
LOSSES: tuple[str, ...] = get_args(Loss)
# The losses that suit each task (`training.loss` is checked against it once the data
# has said what the task is).
LOSSES_BY_TASK: dict[str, tuple[str, ...]] = {
    "multiclass": ("sparse_categorical_crossentropy", "categorical_crossentropy"),
    "binary": ("sparse_categorical_crossentropy", "binary_crossentropy"),
    "multilabel": ("binary_crossentropy", "binary_focal_crossentropy"),
    "regression": ("mean_squared_error", "mean_absolute_error", "huber"),
    "reconstruction": ("mean_squared_error", "mean_absolute_error", "huber"),
}
# `training.loss: auto`.
DEFAULT_LOSS: dict[str, str] = {
    "multiclass": "sparse_categorical_crossentropy",
    "binary": "sparse_categorical_crossentropy",
    "multilabel": "binary_crossentropy",
    "regression": "mean_squared_error",
    "reconstruction": "mean_squared_error",
}
# Output activations each loss is meant for (the model's last layer).
LOSS_ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "sparse_categorical_crossentropy": ("softmax",),
    "categorical_crossentropy": ("softmax",),
    "binary_crossentropy": ("sigmoid",),
    "binary_focal_crossentropy": ("sigmoid",),
    "mean_squared_error": ("linear",),
    "mean_absolute_error": ("linear",),
    "huber": ("linear",),
}

# ------------------------------------------------------ optimizers, schedules
Optimizer = Literal["sgd", "rmsprop", "adam", "adamw", "adamax", "adadelta", "adagrad", "nadam"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
Schedule = Literal[
    "constant",
    "piecewise",
    "exponential",
    "inverse_time",
    "cosine",
    "cosine_restarts",
    "polynomial",
]
SCHEDULES: tuple[str, ...] = get_args(Schedule)

# --------------------------------------------------------------------- tuners
Tuner = Literal["random", "grid", "bayesian", "hyperband"]
TUNERS: tuple[str, ...] = get_args(Tuner)

# -------------------------------------------------------------- test metrics
# The metrics a run's test evaluation reports per task (`service.training.trainer`:
# ``evaluate`` gives test_loss and ``score`` the rest; ``test_roc_auc`` needs both classes
# in the test part), plus ``best_epoch``. `bless.metric` must be one of them.
_CLASSIFIER_METRICS = (
    "test_loss",
    "test_accuracy",
    "test_precision_macro",
    "test_recall_macro",
    "test_f1_macro",
)
TEST_METRICS_BY_TASK: dict[str, tuple[str, ...]] = {
    "multiclass": _CLASSIFIER_METRICS,
    "binary": (*_CLASSIFIER_METRICS, "test_roc_auc"),
    "multilabel": _CLASSIFIER_METRICS,
    "regression": ("test_loss", "test_mae", "test_rmse"),
    "reconstruction": ("test_loss", "test_mae", "test_rmse"),
}

# ----------------------------------------------------------------- direction
# Which way is better: one vocabulary for early stopping, tuning objectives and the
# bless gate. `auto` asks the metric (`service.config.direction`).
Direction = Literal["max", "min"]
DirectionSetting = Literal["auto", Direction]
DIRECTIONS: tuple[str, ...] = get_args(Direction)
DIRECTION_SETTINGS: tuple[str, ...] = get_args(DirectionSetting)
# Old spellings (the bless gate's), still read with a deprecation note.
DEPRECATED_DIRECTIONS: dict[str, str] = {"maximize": "max", "minimize": "min"}
