"""Compile, fit and evaluate: the ML mechanics the pipeline's steps call."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import UserError
from service.vocab import DEFAULT_LOSS, LOSS_ACTIVATIONS, LOSSES_BY_TASK, VALUE_TASKS


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


# An epoch whose train steps waited for input this fraction of the time is input-bound.
INPUT_BOUND_FRACTION = 0.3


class InputMonitor:
    """Per epoch: train rows/s and the fraction of train time spent waiting for input.

    `wrap` stamps each train batch when the input pipeline finishes it (before the
    prefetch buffer); the callback compares that with when the previous step ended.
    A step whose batch was ready waited 0; otherwise it waited from the end of the
    previous step until its batch was produced. An epoch's first step is left out
    (it includes starting the pipeline and, in the first epoch, tracing the train
    step). Logged per epoch as
    ``input_wait_fraction``, ``train_rows_per_s`` and ``epoch_time_s``.
    """

    def __init__(self, rows_per_epoch: int):
        import collections
        import threading

        self.rows = rows_per_epoch
        self._stamps: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self.fractions: list[float] = []

    def _stamp(self):
        import time

        self._stamps.append(time.perf_counter())
        return np.float64(0.0)

    def wrap(self, ds):
        import tensorflow as tf

        def stamped(x, t):
            done = tf.numpy_function(self._stamp, [], tf.float64, stateful=True)
            with tf.control_dependencies([done]):
                return tf.nest.map_structure(tf.identity, x), t

        return ds.map(stamped).prefetch(tf.data.AUTOTUNE)

    @property
    def input_bound(self) -> bool:
        """True when the epochs' mean wait fraction reaches `INPUT_BOUND_FRACTION`."""
        return bool(self.fractions) and float(np.mean(self.fractions)) >= INPUT_BOUND_FRACTION

    def callback(self):
        import time

        import keras

        monitor = self

        class _Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                monitor._stamps.clear()
                self.start = self.last = self.first_end = time.perf_counter()
                self.wait = 0.0

            def on_train_batch_end(self, batch, logs=None):
                now = time.perf_counter()
                ready = monitor._stamps.popleft() if monitor._stamps else self.last
                if batch == 0:
                    self.first_end = now
                else:
                    self.wait += max(0.0, min(ready, now) - self.last)
                self.last = now

            def on_epoch_end(self, epoch, logs=None):
                measured = self.last - self.first_end
                fraction = self.wait / measured if measured > 0 else 0.0
                monitor.fractions.append(fraction)
                if logs is not None:
                    logs["input_wait_fraction"] = fraction
                    logs["train_rows_per_s"] = monitor.rows / max(self.last - self.start, 1e-9)
                    logs["epoch_time_s"] = time.perf_counter() - self.start

        return _Callback()


def fit(
    model,
    *,
    cfg: Any,
    data: Any,
    train_rows: np.ndarray,
    val_rows: np.ndarray | None,
    epochs: int,
    callbacks: list,
    initial_epoch: int = 0,
    verbose: Any = 0,
    shard: Any = None,
    monitor: InputMonitor | None = None,
):
    """The one way a model is fitted: the pipeline's training and every tuning trial.

    Streams ``train_rows`` (shuffled, augmented) and ``val_rows`` through
    `service.data.stream.part_dataset`, weights classes as `training.class_weight`
    says and calls ``model.fit``. With ``monitor``, its callback runs first and the
    train input is stamped for the input-wait diagnosis. Returns Keras' History.
    """
    from service import compat
    from service.data.stream import part_dataset

    bs = cfg.training.batch_size
    one_hot = data.num_classes if cfg.training.loss == "categorical_crossentropy" else None
    common = dict(data_cfg=cfg.data, batch_size=bs, seed=cfg.seed, one_hot=one_hot, shard=shard)
    cache_dir = cfg.run_dir / "cache"
    train_ds = part_dataset(data, train_rows, training=True, cache_dir=cache_dir, **common)
    if monitor is not None:
        train_ds = monitor.wrap(train_ds)
        callbacks = [monitor.callback(), *callbacks]
    val_ds = (
        part_dataset(data, val_rows, training=False, cache_dir=cache_dir, **common)
        if val_rows is not None
        else None
    )
    weights = (
        class_weights(cfg.training, data.y[train_rows], data.class_names)
        if data.task in ("multiclass", "binary")
        else None
    )
    with compat.multi_worker_fit(model.distribute_strategy):
        return model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=verbose,
            class_weight=weights,
            shuffle=False,  # the train dataset shuffles itself each epoch
        )


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
    metrics = ["mae"] if task in VALUE_TASKS else ["accuracy"]
    model.compile(
        optimizer=make_optimizer(training.optimizer, learning_rate=schedule),
        loss=loss,
        metrics=metrics,
        jit_compile=training.jit_compile,
    )
    return loss


def standard_callbacks(training: Any, *, backup_dir: str | None, keep_backup: bool = False) -> list:
    """Early stopping (with best-weights restore) and, when given, BackupAndRestore.

    The backup is deleted when training ends unless ``keep_backup`` (the pipeline
    removes it itself once the trained model is checkpointed: a kill in between must
    not leave neither).
    """
    import keras

    from service.failpoints import failpoint

    callbacks = []
    es = training.early_stopping
    if es.enabled:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=es.monitor,
                mode=es.direction,  # decided at validation, as best epoch and bless are
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
                backup_dir, delete_checkpoint=not keep_backup, double_checkpoint=True
            )
        )
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: failpoint("train.epoch_saved")
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
    model,
    data: Any,
    rows: np.ndarray,
    *,
    cfg: Any,
    task: str,
    loss: str | None = None,
    predict: Any = None,
) -> Evaluation:
    """Score ``model`` once on ``rows``, streamed; returns ``test_``-prefixed metrics.

    One read of the rows: outputs are kept in the order of ``rows`` (one small vector
    per row) and the loss
    (when ``loss`` is given) is computed from them with that loss plus the model's
    regularization losses, as ``model.evaluate`` reports it. Autoencoders' outputs
    are images: their errors are accumulated batch by batch, and only the outputs of
    the first `KEEP_RECONSTRUCTIONS` of ``rows`` are kept (for the report pictures).

    Args:
        model: a Keras model, or None when ``predict`` is given.
        predict: a callable from a batch of raw inputs to outputs (e.g. a loaded
            SavedModel's signature); default: ``model`` in inference mode.
    """
    import keras
    import tensorflow as tf

    from service.data.stream import part_dataset

    bs = cfg.training.batch_size
    ds = part_dataset(
        data,
        rows,
        data_cfg=cfg.data,
        batch_size=bs,
        training=False,
        seed=0,
        use_cache=False,
        with_rows=True,
    )
    regularization = 0.0
    if predict is None:
        predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        regularization = float(sum(float(keras.ops.convert_to_numpy(v)) for v in model.losses))
    rows = np.asarray(rows, dtype="int64")
    order = np.argsort(rows, kind="stable")

    def position(got: np.ndarray) -> np.ndarray:
        """Where each row read lies in ``rows`` (sources may read in file order)."""
        return order[np.searchsorted(rows[order], got)]

    if task == "reconstruction":
        kept = np.zeros((min(KEEP_RECONSTRUCTIONS, len(rows)), *data.input_shape))
        abs_err = sq_err = count = 0.0
        for got, x, _ in ds:
            out = np.asarray(predict(x), dtype="float64")
            ref = x.numpy().astype("float64")
            abs_err += float(np.abs(out - ref).sum())
            sq_err += float(np.square(out - ref).sum())
            count += out.size
            pos = position(got.numpy())
            keep = pos < len(kept)
            kept[pos[keep]] = out[keep]
        mse = sq_err / max(count, 1)
        metrics = {"test_mae": abs_err / max(count, 1), "test_rmse": math.sqrt(mse)}
        if loss is not None:
            metrics["test_loss"] = mse + regularization
        return Evaluation(metrics=metrics, predictions=kept)
    outputs = None
    for got, x, _ in ds:
        out = np.asarray(predict(x), dtype="float64")
        if outputs is None:
            outputs = np.zeros((len(rows), *out.shape[1:]))
        outputs[position(got.numpy())] = out
    outputs = outputs if outputs is not None else np.zeros((0,))
    y = data.y[rows]
    metrics = {}
    if loss is not None:
        target = y
        if loss == "categorical_crossentropy":
            target = np.eye(data.num_classes)[y]
        elif target.ndim == outputs.ndim - 1 and loss != "sparse_categorical_crossentropy":
            target = target[..., None]  # one sigmoid or regression unit per row
        value = keras.ops.convert_to_numpy(keras.losses.get(loss)(target, outputs))
        metrics["test_loss"] = float(np.mean(value)) + regularization
    metrics.update({f"test_{k}": v for k, v in score(task, y, outputs).items()})
    return Evaluation(metrics=metrics, predictions=outputs)


# Reconstructions kept for the report pictures (the rest are scored, then dropped).
KEEP_RECONSTRUCTIONS = 512
