"""Compile, fit and evaluate: the ML mechanics the pipeline's steps call."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import UserError

DEFAULT_LOSS = {
    "multiclass": "sparse_categorical_crossentropy",
    "binary": "sparse_categorical_crossentropy",
    "multilabel": "binary_crossentropy",
    "regression": "mean_squared_error",
    "reconstruction": "mean_squared_error",
}
# Output activations each loss is meant for (the model's last layer).
LOSS_ACTIVATIONS = {
    "sparse_categorical_crossentropy": ("softmax",),
    "categorical_crossentropy": ("softmax",),
    "binary_crossentropy": ("sigmoid",),
    "binary_focal_crossentropy": ("sigmoid",),
    "mean_squared_error": ("linear",),
    "mean_absolute_error": ("linear",),
    "huber": ("linear",),
}


def final_activation(model) -> str:
    """Name of the activation of the layer that produces ``model``'s output."""
    import keras

    layer = model.layers[-1]
    while isinstance(layer, keras.Model):
        layer = layer.layers[-1]
    act = getattr(layer, "activation", None)
    name = getattr(act, "__name__", "linear") if act is not None else "linear"
    return "linear" if name in ("linear", "identity") else name


def resolve_loss(training: Any, task: str, model) -> str:
    """The loss for ``task``; a loss that does not fit the task or the output is a `UserError`."""
    from service.config import LOSSES_BY_TASK

    activation = final_activation(model)
    loss = DEFAULT_LOSS[task] if training.loss == "auto" else training.loss
    if training.loss == "auto" and task == "binary" and activation == "sigmoid":
        loss = "binary_crossentropy"  # one sigmoid unit rather than a 2-way softmax
    allowed = LOSSES_BY_TASK[task]
    if loss not in allowed:
        raise UserError(
            f"Invalid value for `training.loss`: received {loss!r} for a {task} task; "
            f"expected one of {', '.join(repr(a) for a in allowed)}."
        )
    if activation not in LOSS_ACTIVATIONS[loss]:
        raise UserError(
            f"Invalid value for `training.loss`: received {loss!r}, but the model ends in "
            f"{activation!r}; {loss} expects a {' or '.join(LOSS_ACTIVATIONS[loss])} output."
        )
    return loss


def class_weights(training: Any, y_train: np.ndarray, class_names: tuple[str, ...]):
    """Keras ``class_weight`` dict from `training.class_weight` (None, balanced or per name)."""
    spec = training.class_weight
    if spec is None:
        return None
    k = len(class_names)
    if spec == "balanced":
        counts = np.bincount(y_train, minlength=k)
        return {i: float(len(y_train) / (k * c)) if c else 0.0 for i, c in enumerate(counts)}
    unknown = sorted(set(spec) - set(class_names))
    if unknown:
        raise UserError(
            f"Invalid value for `training.class_weight`: received classes {unknown}; "
            f"expected names from {list(class_names)}."
        )
    return {i: float(spec.get(name, 1.0)) for i, name in enumerate(class_names)}


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    one_hot: int | None = None,
):
    """A `tf.data` pipeline over in-memory arrays: cache, shuffle (train), batch, prefetch."""
    import tensorflow as tf

    if x.dtype == object:
        x = x.astype(str)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if one_hot:
        ds = ds.map(lambda a, b: (a, tf.one_hot(b, one_hot)), num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    # In-memory data: shard by element across workers (file sharding cannot apply).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options).cache()
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def compile_model(model, training: Any, task: str, *, steps_per_epoch: int) -> str:
    """Attach optimizer (with its schedule), loss and metrics; returns the loss name."""
    from service.training.optimizers import make_optimizer
    from service.training.schedules import make_schedule

    loss = resolve_loss(training, task, model)
    schedule = make_schedule(
        training.schedule,
        base_lr=training.optimizer.learning_rate,
        total_steps=training.epochs * steps_per_epoch,
    )
    metrics = ["mae"] if task in ("regression", "reconstruction") else ["accuracy"]
    model.compile(
        optimizer=make_optimizer(training.optimizer, learning_rate=schedule),
        loss=loss,
        metrics=metrics,
        jit_compile=training.jit_compile,
    )
    return loss


def higher_is_better(monitor: str) -> bool:
    """Whether a larger ``monitor`` value is better (accuracy, AUC), as Keras' ``mode="auto"``
    decides for early stopping; losses and errors are better smaller."""
    return "acc" in monitor or "auc" in monitor


def standard_callbacks(training: Any, *, backup_dir: str | None) -> list:
    """Early stopping (with best-weights restore) and, when given, BackupAndRestore."""
    import keras

    callbacks = []
    es = training.early_stopping
    if es.enabled:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=es.monitor,
                patience=es.patience,
                min_delta=es.min_delta,
                restore_best_weights=es.restore_best_weights,
            )
        )
    if backup_dir is not None:
        # double_checkpoint: a kill while the weights are written leaves the previous
        # epoch's copy, which Keras falls back to when the newest file cannot be read.
        callbacks.append(
            keras.callbacks.BackupAndRestore(
                backup_dir, delete_checkpoint=True, double_checkpoint=True
            )
        )
    return callbacks


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one evaluation, keyed ``test_*``, and the model's outputs."""

    metrics: dict[str, float]
    predictions: np.ndarray


def score(task: str, y: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """Task metrics from targets and model outputs (probabilities or values)."""
    from sklearn import metrics as skm

    out: dict[str, float] = {}
    if task == "binary" and outputs.ndim == 2 and outputs.shape[1] == 1:
        outputs = np.concatenate([1.0 - outputs, outputs], axis=1)  # sigmoid -> 2 columns
    if task in ("multiclass", "binary"):
        pred = outputs.argmax(axis=-1)
        out["accuracy"] = float(skm.accuracy_score(y, pred))
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
        out.update(precision_macro=float(p), recall_macro=float(r), f1_macro=float(f))
        if task == "binary" and len(np.unique(y)) == 2:
            out["roc_auc"] = float(skm.roc_auc_score(y, outputs[:, 1]))
    elif task == "multilabel":
        pred = (outputs > 0.5).astype(int)
        out["accuracy"] = float(skm.accuracy_score(y, pred))
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
        out.update(precision_macro=float(p), recall_macro=float(r), f1_macro=float(f))
    else:
        flat_y, flat_p = y.reshape(len(y), -1), outputs.reshape(len(outputs), -1)
        out["mae"] = float(skm.mean_absolute_error(flat_y, flat_p))
        out["rmse"] = float(math.sqrt(skm.mean_squared_error(flat_y, flat_p)))
    return out


def evaluate(
    model, x: np.ndarray, y: np.ndarray, *, task: str, batch_size: int, one_hot: int | None = None
) -> Evaluation:
    """Score ``model`` on ``(x, y)`` once; returns ``test_``-prefixed metrics."""
    ds = make_dataset(x, y, batch_size=batch_size, shuffle=False, seed=0, one_hot=one_hot)
    outputs = np.asarray(model.predict(ds.map(lambda a, b: a), verbose=0), dtype="float64")
    loss = model.evaluate(ds, verbose=0, return_dict=True)["loss"]
    metrics = {"test_loss": float(loss)}
    metrics.update({f"test_{k}": v for k, v in score(task, y, outputs).items()})
    return Evaluation(metrics=metrics, predictions=outputs)
