"""2-D projections of what the network's head sees: PCA and LDA of penultimate features."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import invalid_value
from service.reports._common import (
    CLASSIFICATION,
    NotApplicable,
    check_task,
    class_ids,
    class_label,
    new_figure,
    save,
)
from service.reports._graph import tap, walk_layers


def penultimate_features(
    model: Any, x: Any, *, batch_size: int = 256, code: bool = False
) -> tuple[np.ndarray, str]:
    """The input of the model's last `Dense` layer for each row of ``x``.

    With ``code`` (autoencoders), the output of the bottleneck instead: the last
    layer whose name starts with ``latent`` (the zoo's ``conv_autoencoder``).

    Returns:
        ``(features, layer_name)``: features (N, D) float64 (anything after the batch
        axis flattened) and the name of that layer.

    Raises:
        NotApplicable: the model has no `Dense` layer (no ``latent`` layer with ``code``).
    """
    import keras

    if code:
        latent = [layer for layer in walk_layers(model) if layer.name.startswith("latent")]
        if not latent:
            raise NotApplicable("model has no `latent*` bottleneck layer to project")
        last = latent[-1]
        taps = tap(model, [last])
        pos = taps.position(last, "output")
    else:
        dense = [layer for layer in walk_layers(model) if isinstance(layer, keras.layers.Dense)]
        if not dense:
            raise NotApplicable("model has no Dense layer, so no penultimate features")
        last = dense[-1]
        taps = tap(model, [], inputs_of=[last])
        pos = taps.position(last, "input")
    # Text models take raw strings (their TextVectorization is inside the model).
    rows = (
        np.asarray(x).astype(str)
        if np.asarray(x).dtype.kind in "OU"
        else np.asarray(x, dtype="float32")
    )
    # Eager calls in chunks: for a few hundred rows this is far quicker than `predict`,
    # which traces a new tf.function for every new model.
    chunks = [
        np.asarray(taps.model(rows[i : i + batch_size], training=False)[pos], dtype="float64")
        for i in range(0, len(rows), batch_size)
    ]
    feats = np.concatenate(chunks)
    return feats.reshape(len(feats), -1), last.name


def _scatter_classes(ax: Any, points: np.ndarray, labels: np.ndarray, class_names: Any) -> None:
    classes = np.unique(labels)
    cmap = "tab10" if len(classes) <= 10 else "tab20"
    import matplotlib

    colors = matplotlib.colormaps[cmap]
    for k, cid in enumerate(classes):
        rows = labels == cid
        ax.scatter(
            points[rows, 0],
            points[rows, 1],
            s=10,
            alpha=0.75,
            color=colors(k % colors.N),
            label=class_label(class_names, int(cid)),
        )


def _label_strips(ax: Any, labels: np.ndarray | None, class_names: Any) -> None:
    """Name the jittered strips of a 1-D projection on the y axis."""
    if labels is None:
        ax.set_yticks([])
        ax.set_ylabel("(jitter)")
        return
    classes = np.unique(labels)
    ax.set_yticks(classes.astype(float), [class_label(class_names, int(c)) for c in classes])
    ax.set_ylabel("class (jittered)")


def _as_2d(values: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, bool]:
    """Pad a 1-D projection with a per-class jitter so classes form separate strips."""
    if values.shape[1] >= 2:
        return values[:, :2], False
    rng = np.random.default_rng(0)
    base = labels.astype("float64") if labels is not None else np.zeros(len(values))
    return np.column_stack([values[:, 0], base + rng.uniform(-0.3, 0.3, len(values))]), True


def projection(
    model: Any,
    x: Any,
    y: Any,
    class_names: Sequence[str] | None,
    path: str | Path,
    *,
    task: str,
    max_points: int = 2000,
) -> Path:
    """Scatter the penultimate-layer features of ``x`` in 2-D: PCA, and LDA for classifiers.

    What it is for: whether the features the last layer sees separate the classes
    (tight, distinct clusters) and which classes overlap. Features are the input of
    the last `Dense` layer; PCA is unsupervised (shows the main variance), LDA uses
    the labels (the best linear class separation; fitted on the plotted rows, so it
    is optimistic). Regression colours the PCA points by target value. For
    ``reconstruction`` (autoencoders) the features are the bottleneck code, coloured
    (and LDA-projected) by the data's class labels when ``y`` holds class ids.

    Args:
        model: any model with a `Dense` layer (CNN, MLP, nested models allowed).
        x: raw inputs, (N, ...) as the model takes them (e.g. the test split).
        y: labels: class ids (N,) or one-hot for classification, values for regression.
        class_names: names for class ids (legend); None for regression.
        path: PNG file to write.
        task: ``"multiclass"``, ``"binary"``, ``"multilabel"``, ``"regression"`` or
            ``"reconstruction"``.
        max_points: use at most this many rows (a fixed random subset).

    Returns:
        ``path``.

    Raises:
        NotApplicable: the model has no `Dense` layer.
    """
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    check_task(task)
    x = np.asarray(x)
    y = np.asarray(y)
    if len(x) != len(y) or len(x) < 3:
        raise invalid_value("x/y rows", (len(x), len(y)), "the same number of rows, at least 3")
    if len(x) > max_points:
        keep = np.sort(np.random.default_rng(0).choice(len(x), max_points, replace=False))
        x, y = x[keep], y[keep]
    code = task == "reconstruction"
    feats, layer = penultimate_features(model, x, code=code)

    labels = class_ids(y) if task in CLASSIFICATION else None
    if code and y.ndim == 1 and y.dtype.kind in "iu":
        labels = y
    panels = 1 if labels is None else 2
    fig = new_figure(4.6 * panels + (0.0 if labels is None else 0.9), 4.2)
    axes = fig.subplots(1, panels, squeeze=False).ravel()

    pca = PCA(n_components=min(2, feats.shape[1], len(feats)), random_state=0)
    points, jittered = _as_2d(pca.fit_transform(feats), labels)
    shares = " + ".join(f"{100 * r:.0f}%" for r in pca.explained_variance_ratio_)
    ax = axes[0]
    if labels is not None:
        _scatter_classes(ax, points, labels, class_names)
    elif task == "regression":
        sc = ax.scatter(
            points[:, 0], points[:, 1], s=10, c=y.reshape(len(y), -1)[:, 0], cmap="viridis"
        )
        fig.colorbar(sc, ax=ax, label="target")
    else:
        ax.scatter(points[:, 0], points[:, 1], s=10, alpha=0.75)
    ax.set_title(f"PCA (variance {shares})", fontsize="medium")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    if jittered:
        _label_strips(ax, labels, class_names)

    if labels is not None:
        ax = axes[1]
        n_comp = min(2, len(np.unique(labels)) - 1, feats.shape[1])
        if n_comp < 1:
            ax.set_axis_off()
            ax.text(0.5, 0.5, "LDA needs at least two classes", ha="center", va="center")
        else:
            lda = LinearDiscriminantAnalysis(n_components=n_comp)
            points, jittered = _as_2d(lda.fit_transform(feats, labels), labels)
            _scatter_classes(ax, points, labels, class_names)
            ax.set_title("LDA (fit on these rows)", fontsize="medium")
            ax.set_xlabel("LD 1")
            ax.set_ylabel("LD 2")
            if jittered:
                _label_strips(ax, labels, class_names)
        if len(np.unique(labels)) <= 20:
            # One legend for both panels, outside them ("best" placement scans every point).
            fig.legend(
                *axes[0].get_legend_handles_labels(), loc="outside right center", fontsize="small"
            )
    where = "output" if code else "input"
    fig.suptitle(f"{len(feats)} rows, {feats.shape[1]} features at the {where} of {layer}")
    return save(fig, path)
