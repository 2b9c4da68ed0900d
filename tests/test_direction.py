"""Which way is better: one `max`/`min` vocabulary, decided once as Keras decides it.

Early stopping, the best epoch, tuning objectives and the bless gate read the same
resolved `direction`; a metric Keras cannot place needs an explicit one; the old
`maximize`/`minimize` still read, with a one-line note.
"""

from __future__ import annotations

import pytest

from service.config import load_config, metric_direction, validate
from service.config.direction import METRIC_DIRECTIONS
from service.errors import ConfigDeprecationWarning, UserError
from tests.helpers import CONFIGS, kts

DEFAULT = CONFIGS / "digits_cnn.yaml"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("loss", "min"),
        ("val_loss", "min"),
        ("val_mae", "min"),
        ("mean_squared_error", "min"),
        ("test_loss", "min"),
        ("test_rmse", "min"),
        ("accuracy", "max"),
        ("val_accuracy", "max"),
        ("val_auc", "max"),
        ("test_roc_auc", "max"),
        ("test_f1_macro", "max"),
        ("val_my_score", None),
        ("best_epoch", None),
        ("val_accuracy_of_sorts", None),  # no substring guessing ("acc" in the name)
    ],
)
def test_metric_direction_by_name(name, expected):
    assert metric_direction(name) == expected


def _cfg(**sections):
    return validate({"name": "x", **sections})


def test_loss_like_metrics_are_minimized_everywhere():
    cfg = _cfg(
        training={"early_stopping": {"monitor": "val_loss"}},
        tuning={
            "objective": {"metric": "val_loss"},
            "space": {
                "training.optimizer.learning_rate": {"type": "float", "min": 0.001, "max": 0.01}
            },
        },
        bless={"metric": "test_loss"},
    )
    assert cfg.training.early_stopping.direction == "min"
    assert cfg.tuning is not None
    assert cfg.tuning.objective.direction == "min"
    assert cfg.bless.direction == "min"


def test_accuracy_and_auc_are_maximized():
    cfg = _cfg(
        data={"source": "breast_cancer"},
        model={"type": "mlp"},
        training={"early_stopping": {"monitor": "val_accuracy"}},
        bless={"metric": "test_roc_auc"},
    )
    assert cfg.training.early_stopping.direction == "max"
    assert cfg.bless.direction == "max"
    assert validate({"name": "x"}).tuning is None
    defaults = _cfg(
        tuning={
            "space": {
                "training.optimizer.learning_rate": {"type": "float", "min": 0.001, "max": 0.01}
            }
        }
    )
    assert defaults.tuning is not None
    assert defaults.tuning.objective.direction == "max"  # val_accuracy


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        (
            {"training": {"early_stopping": {"monitor": "val_f2"}}},
            "training.early_stopping.direction",
        ),
        ({"bless": {"metric": "best_epoch"}}, "bless.direction"),
        (
            {
                "tuning": {
                    "objective": {"metric": "val_custom"},
                    "space": {"model.dropout": {"type": "float", "min": 0.1, "max": 0.5}},
                }
            },
            "tuning.objective.direction",
        ),
    ],
)
def test_unknown_metric_needs_an_explicit_direction(sections, field):
    with pytest.raises(UserError, match=rf"`{field}`: received 'auto' .* expected 'max'") as info:
        _cfg(**sections)
    assert "\n" not in str(info.value)


def test_unknown_metric_uses_the_explicit_direction():
    cfg = _cfg(
        training={"early_stopping": {"monitor": "val_f2", "direction": "max"}},
        bless={"metric": "best_epoch", "direction": "min"},
    )
    assert cfg.training.early_stopping.direction == "max"
    assert cfg.bless.direction == "min"
    # An explicit direction is kept as written, as Keras keeps an explicit mode.
    assert _cfg(bless={"metric": "test_loss", "direction": "max"}).bless.direction == "max"


def test_bless_disabled_needs_no_direction():
    assert not _cfg(bless={"enabled": False, "metric": "whatever"}).bless.enabled


def test_direction_is_written_as_given_and_reads_back():
    cfg = _cfg(bless={"metric": "test_loss"})
    assert cfg.to_dict()["bless"]["direction"] == "auto"
    assert validate(cfg.to_dict()).bless.direction == "min"


@pytest.mark.parametrize(("old", "new"), [("maximize", "max"), ("minimize", "min")])
def test_old_spelling_reads_with_a_deprecation_note(old, new):
    with pytest.warns(ConfigDeprecationWarning, match=rf"`bless.direction: {old}` is deprecated"):
        cfg = _cfg(bless={"metric": "test_loss", "direction": old})
    assert cfg.bless.direction == new
    assert cfg.to_dict()["bless"]["direction"] == new


def test_old_spelling_is_one_note_line_from_kts_validate(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(
        "name: old\n"
        "bless: {metric: test_loss, direction: minimize}\n"
        "training: {early_stopping: {monitor: val_loss, direction: minimize}}\n"
    )
    result = kts(["validate", str(path)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    notes = sorted(result.stderr.strip().splitlines())
    assert notes == [
        "kts: note: `bless.direction: minimize` is deprecated; write `direction: min`.",
        "kts: note: `training.early_stopping.direction: minimize` is deprecated; write "
        "`direction: min`.",
    ]


@pytest.mark.parametrize(
    ("overrides", "mode"),
    [
        ([], "min"),  # val_loss
        (["training.early_stopping.monitor=val_accuracy"], "max"),
        (
            ["training.early_stopping.monitor=val_f2", "training.early_stopping.direction=max"],
            "max",
        ),
    ],
)
def test_early_stopping_is_built_with_the_resolved_mode(overrides, mode):
    from service.training import trainer

    cfg = load_config(DEFAULT, overrides)
    (stopping,) = trainer.standard_callbacks(cfg.training, backup_dir=None)
    assert stopping.mode == mode == cfg.training.early_stopping.direction


# Metric names whose direction Keras itself reports (its `mode="auto"`), checked below
# against a compiled model: the table must give the same answer.
KERAS_METRICS = [
    "accuracy",
    "binary_accuracy",
    "categorical_accuracy",
    "top_k_categorical_accuracy",
    "auc",
    "precision",
    "recall",
    "f1_score",
    "r2_score",
    "cosine_similarity",
    "pearson_correlation",
    "concordance_correlation",
    "mae",
    "mse",
    "mape",
    "msle",
    "mean_absolute_error",
    "mean_squared_error",
    "root_mean_squared_error",
    "hinge",
    "squared_hinge",
    "categorical_hinge",
    "binary_crossentropy",
    "categorical_crossentropy",
    "kl_divergence",
    "poisson",
]


def test_direction_table_agrees_with_keras_auto_mode():
    import keras
    import numpy as np

    assert set(KERAS_METRICS) <= set(METRIC_DIRECTIONS)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(loss="categorical_crossentropy", metrics=KERAS_METRICS)
    x = np.random.default_rng(0).random((8, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(8) % 3]
    model.evaluate(x, y, verbose=0)  # builds the compiled metrics
    for name in ["loss", *KERAS_METRICS]:
        monitor = f"val_{name}"
        stopping = keras.callbacks.EarlyStopping(monitor=monitor, mode="auto")
        stopping.set_model(model)
        stopping.on_train_begin()
        stopping.on_epoch_end(0, {monitor: 1.0})  # Keras decides the direction here
        keras_says = "max" if stopping.monitor_op is keras.ops.greater else "min"
        assert metric_direction(monitor) == keras_says, name
