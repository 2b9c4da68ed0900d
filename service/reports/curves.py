"""Pictures of training and of predictions: learning curves and the confusion matrix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import invalid_value
from service.reports._common import class_ids, new_figure, save


def metric_families(
    history: Mapping[str, Sequence[float]],
) -> dict[str, tuple[str | None, str | None]]:
    """Group Keras history keys by metric: ``{"loss": ("loss", "val_loss"), ...}``.

    Each value is ``(train_key, validation_key)``; either may be None. ``loss`` comes
    first, then the others in the history's order.
    """
    families: dict[str, list[str | None]] = {}
    for key in history:
        is_val = key.startswith("val_")
        base = key[4:] if is_val else key
        families.setdefault(base, [None, None])[int(is_val)] = key
    order = sorted(families, key=lambda k: k != "loss")
    return {k: (families[k][0], families[k][1]) for k in order}


def infer_best_epoch(history: Mapping[str, Sequence[float]]) -> int | None:
    """The 0-based epoch with the lowest ``val_loss`` (else ``loss``); None if neither."""
    for key in ("val_loss", "loss"):
        values = history.get(key)
        if values is not None and len(values):
            return int(np.nanargmin(np.asarray(values, dtype="float64")))
    return None


def _learning_curves_figure(history: Mapping[str, Sequence[float]], *, best_epoch: int | None):
    from matplotlib.ticker import MaxNLocator

    if not history or not any(len(v) for v in history.values()):
        raise invalid_value("history", dict(history), "a non-empty Keras History.history dict")
    n_epochs = max(len(v) for v in history.values())
    if best_epoch is None:
        best_epoch = infer_best_epoch(history)
    elif not 0 <= best_epoch < n_epochs:
        raise invalid_value("best_epoch", best_epoch, f"an epoch index in [0, {n_epochs - 1}]")

    families = metric_families(history)
    cols = min(3, len(families))
    rows = -(-len(families) // cols)
    fig = new_figure(4.2 * cols, 3.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(families) :]:
        ax.set_axis_off()
    for ax, (name, (train_key, val_key)) in zip(axes, families.items(), strict=False):
        for key, label, style in ((train_key, "train", "-"), (val_key, "validation", "-")):
            if key is None:
                continue
            values = np.asarray(history[key], dtype="float64")
            ax.plot(np.arange(len(values)), values, style, marker=".", label=label)
            if (
                best_epoch is not None
                and best_epoch < len(values)
                and key == (val_key or train_key)
            ):
                ax.plot([best_epoch], [values[best_epoch]], "o", color="black", zorder=3)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.35", linestyle="--", label=f"best epoch {best_epoch}")
        ax.set_title(name)
        ax.set_xlabel("epoch (0-based)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig, best_epoch


def learning_curves(
    history: Mapping[str, Sequence[float]], path: str | Path, *, best_epoch: int | None
) -> Path:
    """Plot train vs validation curves, one panel per metric, best epoch marked.

    What it is for: seeing over- and under-fitting and where early stopping chose
    its weights.

    Args:
        history: Keras ``History.history``: metric name -> one value per epoch, e.g.
            ``{"loss": [...], "val_loss": [...], "accuracy": [...], "val_accuracy": [...]}``.
            ``val_<name>`` joins ``<name>``'s panel; any other key gets its own panel.
        path: PNG file to write.
        best_epoch: 0-based epoch index of the kept weights (Keras' ``history.epoch``
            and the MLflow step use the same numbering); drawn as a dashed vertical
            line labelled "best epoch N" in every panel. None: the epoch of the lowest
            ``val_loss`` (else ``loss``).

    Returns:
        ``path``.
    """
    fig, _ = _learning_curves_figure(history, best_epoch=best_epoch)
    return save(fig, path)


def confusion_counts(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    t = class_ids(y_true, field="y_true")
    p = class_ids(y_pred, field="y_pred")
    if t.shape != p.shape:
        raise invalid_value("y_pred.shape", p.shape, f"the shape of y_true, {t.shape}")
    for field, ids in (("y_true", t), ("y_pred", p)):
        bad = ids[(ids < 0) | (ids >= num_classes)]
        if bad.size:
            raise invalid_value(field, int(bad[0]), f"class ids in [0, {num_classes - 1}]")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def _confusion_matrix_figure(y_true: Any, y_pred: Any, class_names: Sequence[str]):
    n = len(class_names)
    if n < 2:
        raise invalid_value("class_names", list(class_names), "at least two class names")
    counts = confusion_counts(y_true, y_pred, n)
    rows = counts.sum(axis=1, keepdims=True)
    normalized = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    accuracy = np.trace(counts) / max(int(counts.sum()), 1)

    # Fixed margins sized from the labels: a layout engine would lay out (draw) every
    # cell annotation twice, which dominates the time for this picture.
    labels = [str(c) for c in class_names]
    longest = max(len(label) for label in labels)
    cell = min(max(0.42, 7.0 / n), 1.0)
    rotate = 0.075 * longest > 0.9 * cell
    margin = 0.55 + 0.075 * longest  # inches for tick labels and the axis label
    panel = cell * n
    width = 2 * (margin + panel + 0.9) + 0.2
    below = (margin if rotate else 0.45) + 0.1  # inches under the panels
    height = panel + below + 0.75
    fig = new_figure(width, height, layout=None)
    bottom = below / height
    axes = [
        fig.add_axes((left / width, bottom, panel / width, panel / height))
        for left in (margin, margin + panel + 0.9 + margin)
    ]
    bars = [
        fig.add_axes(((left + panel + 0.12) / width, bottom, 0.12 / width, panel / height))
        for left in (margin, margin + panel + 0.9 + margin)
    ]
    panels = (
        (counts, "counts", "d", float(max(counts.max(), 1))),
        (normalized, "row-normalized (recall)", ".2f", 1.0),
    )
    for ax, bar, (matrix, title, fmt, vmax) in zip(axes, bars, panels, strict=True):
        im = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=vmax)
        fig.colorbar(im, cax=bar)
        ax.set_title(title)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_xticks(
            range(n), labels, rotation=45 if rotate else 0, ha="right" if rotate else "center"
        )
        ax.set_yticks(range(n), labels)
        if n <= 25:
            for i in range(n):
                for j in range(n):
                    value = matrix[i, j]
                    ax.text(
                        j,
                        i,
                        format(value, fmt),
                        ha="center",
                        va="center",
                        fontsize="x-small" if n > 10 else "small",
                        color="white" if value > vmax / 2 else "black",
                    )
    fig.suptitle(f"accuracy {accuracy:.4f} on {int(counts.sum())} rows", y=1 - 0.12 / height)
    return fig, counts


def confusion_matrix(
    y_true: Any, y_pred: Any, class_names: Sequence[str], path: str | Path
) -> Path:
    """Plot the confusion matrix twice: raw counts and row-normalized, cells annotated.

    What it is for: which classes get confused with which; the normalized panel's
    diagonal is each class's recall.

    Args:
        y_true: true labels, class ids (N,) or one-hot (N, C).
        y_pred: predictions, class ids (N,), class probabilities (N, C), or binary
            probabilities (N,) / (N, 1) (thresholded at 0.5).
        class_names: names for ids ``0 .. C-1``; fixes the matrix size C.
        path: PNG file to write.

    Returns:
        ``path``.
    """
    fig, _ = _confusion_matrix_figure(y_true, y_pred, class_names)
    return save(fig, path)
