"""Compile, fit and evaluate: the ML mechanics the pipeline's steps call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

LOSSES = {
    "multiclass": "sparse_categorical_crossentropy",
    "binary": "binary_crossentropy",
    "multilabel": "binary_crossentropy",
    "regression": "mean_squared_error",
}


def make_dataset(x: np.ndarray, y: np.ndarray, *, batch_size: int, shuffle: bool, seed: int):
    """A `tf.data` pipeline over in-memory arrays: cache, shuffle (train), batch, prefetch."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def compile_model(model, training: Any, task: str) -> None:
    """Attach optimizer, loss and metrics for ``task`` (`training` is a `TrainingConfig`)."""
    from service.training.optimizers import make_optimizer

    metrics = ["accuracy"] if task in ("multiclass", "binary", "multilabel") else ["mae"]
    model.compile(
        optimizer=make_optimizer(training.optimizer),
        loss=LOSSES[task],
        metrics=metrics,
        jit_compile=training.jit_compile,
    )


def standard_callbacks(training: Any) -> list:
    """Early stopping (with best-weights restore) as configured."""
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
    return callbacks


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one evaluation of a classifier or regressor, keyed ``test_*``."""

    metrics: dict[str, float]
    predictions: np.ndarray


def evaluate(model, x: np.ndarray, y: np.ndarray, *, task: str, batch_size: int) -> Evaluation:
    """Score ``model`` on ``(x, y)`` once; returns ``test_``-prefixed metrics."""
    from sklearn import metrics as skm

    probs = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype="float64")
    loss_values = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    out = {"test_loss": float(loss_values["loss"])}
    if task == "multiclass":
        pred = probs.argmax(axis=-1)
        out["test_accuracy"] = float(skm.accuracy_score(y, pred))
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
        out.update(
            test_precision_macro=float(p), test_recall_macro=float(r), test_f1_macro=float(f)
        )
    return Evaluation(metrics=out, predictions=probs)
