"""Report pictures (PNG) and a model card (Markdown) for one trained model.

Pure functions: each takes a model and/or arrays, writes one file and returns its
`Path`; nothing here talks to MLflow or knows about the pipeline. Matplotlib runs
headless on its Agg canvas without pyplot (no global state, thread-safe); heavy
imports happen inside the functions.

Pictures:

- `learning_curves`: train vs validation per metric, best epoch marked.
- `confusion_matrix`: counts and row-normalized (classification).
- `first_layer_filters`, `feature_maps`, `grad_cam` (+ `grad_cam_heatmap`): CNNs only.
- `projection`: PCA (and LDA for classifiers) of the penultimate-layer features.
- `model_card`: one Markdown page with tables and the pictures embedded.

`write_all` draws every picture that applies to a model and the card, listing in
the card why any picture was not drawn.

Every function takes the model as served: raw inputs, preprocessing layers and the
builder's model nested inside (`service.data.preprocess.with_normalization`). Inner
layers are reached by re-tracing the graph into one flat model that shares the
weights (`service.reports._graph.tap`), so no input is preprocessed by hand.

Example:
    >>> paths = write_all(model, history=h.history, best_epoch=4, x_test=x, y_test=y,
    ...                   y_pred=probs, class_names=names, task="multiclass",
    ...                   out_dir="reports", card_info={"metrics": {"test_accuracy": 0.97}})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import invalid_value
from service.reports._common import (
    CLASSIFICATION,
    NotApplicable,
    check_task,
    class_ids,
)
from service.reports.card import model_card
from service.reports.cnn import feature_maps, first_layer_filters, grad_cam, grad_cam_heatmap
from service.reports.curves import confusion_matrix, learning_curves
from service.reports.projection import projection
from service.reports.reconstruction import reconstructions
from service.strict import strict as strict_mode

__all__ = [
    "CARD_FILE",
    "CARD_KEYS",
    "NotApplicable",
    "confusion_matrix",
    "feature_maps",
    "first_layer_filters",
    "grad_cam",
    "grad_cam_heatmap",
    "learning_curves",
    "model_card",
    "projection",
    "reconstructions",
    "write_all",
]

CARD_FILE = "model_card.md"
CARD_KEYS = ("name", "data", "split", "metrics", "params", "layer_table", "bless")
GRAD_CAM_IMAGES = 4


def _grad_cam_rows(y_test: Any, limit: int) -> np.ndarray:
    """Up to ``limit`` test rows, preferring one per true class (the first of each)."""
    labels = class_ids(y_test, field="y_test")
    _, first = np.unique(labels, return_index=True)
    rows = np.sort(first)[:limit]
    if len(rows) < limit:
        extra = [i for i in range(len(labels)) if i not in set(rows.tolist())]
        rows = np.sort(np.concatenate([rows, extra[: limit - len(rows)]]).astype(int))
    return rows


def write_all(
    model: Any,
    *,
    history: Mapping[str, Sequence[float]] | None,
    best_epoch: int | None,
    x_test: Any,
    y_test: Any,
    y_pred: Any,
    class_names: Sequence[str] | None,
    task: str,
    out_dir: str | Path,
    card_info: Mapping[str, Any],
    strict: bool | None = None,
) -> list[Path]:
    """Write every picture that applies to ``model`` and the model card into ``out_dir``.

    Files: ``learning_curves.png``, ``confusion_matrix.png`` (classification),
    ``first_layer_filters.png``, ``feature_maps.png`` and ``grad_cam.png`` (image
    models with 2-D convolutions; Grad-CAM for classifiers), ``projection.png`` and
    ``model_card.md``. A picture that does not apply, or that fails, is left out and
    listed with its reason in the card's "Not drawn" section; reports never stop a run.

    Args:
        model: the trained model as served (raw inputs; nested models allowed).
        history: Keras ``History.history`` (metric -> per-epoch values), or None.
        best_epoch: 0-based epoch of the kept weights, or None to infer from ``val_loss``.
        x_test: raw test inputs (N, ...); the first row feeds the feature maps, a few
            rows (one per class where possible) feed Grad-CAM.
        y_test: test labels: class ids (N,) / one-hot, or regression targets.
        y_pred: model predictions on ``x_test``: class probabilities (N, C), class ids,
            or binary probabilities; regression values.
        class_names: class names by id; None uses the ids.
        task: ``"multiclass"``, ``"binary"``, ``"multilabel"``, ``"regression"`` or
            ``"reconstruction"`` (adds ``reconstructions.png``; ``y_pred`` are the
            reconstructions, ``y_test`` the data's labels, used to colour the projection).
        out_dir: folder for all files (created).
        card_info: `model_card` fields: ``name`` (default the model's name), ``data``,
            ``split``, ``metrics``, ``params`` (dicts, default empty),
            ``layer_table`` (text or None) and ``bless`` (the gate's verdict and the
            rows it compared on, a dict; no section when empty).
        strict: raise unexpected failures instead of listing them; default: strict
            mode (``KTS_STRICT``, `service.strict`; the test suite turns it on).
            `NotApplicable` pictures are always listed, never raised.

    Returns:
        Paths written: the pictures in the order above, then the card.
    """
    check_task(task)
    unknown = sorted(set(card_info) - set(CARD_KEYS))
    if unknown:
        raise invalid_value("card_info key", unknown[0], CARD_KEYS)
    strict = strict_mode() if strict is None else strict
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classify = task in CLASSIFICATION
    names: Sequence[str] | None = class_names
    if classify and names is None:
        labels = np.concatenate([class_ids(y_test), class_ids(y_pred)])
        names = [str(i) for i in range(max(2, int(labels.max()) + 1))]

    def not_for(reason: str) -> Callable[[Path], Path | None]:
        def skip(_: Path) -> Path | None:
            raise NotApplicable(reason)

        return skip

    x = np.asarray(x_test)
    jobs: list[tuple[str, Callable[[Path], Path | None]]] = [
        (
            "learning_curves.png",
            (lambda p: learning_curves(history, p, best_epoch=best_epoch))
            if history
            else not_for("no training history given"),
        ),
        (
            "confusion_matrix.png",
            (lambda p: confusion_matrix(y_test, y_pred, names, p))  # type: ignore[arg-type]
            if classify
            else not_for(f"task {task!r} is not single-label classification"),
        ),
        ("first_layer_filters.png", lambda p: first_layer_filters(model, p)),
        ("feature_maps.png", lambda p: feature_maps(model, x[0], p)),
        (
            "grad_cam.png",
            (
                lambda p: grad_cam(
                    model, x[_grad_cam_rows(y_test, GRAD_CAM_IMAGES)], p, class_names=names
                )
            )
            if classify
            else not_for(f"Grad-CAM explains class scores; task {task!r} has none"),
        ),
        ("projection.png", lambda p: projection(model, x, y_test, names, p, task=task)),
    ]
    if task == "reconstruction":
        jobs.insert(1, ("reconstructions.png", lambda p: reconstructions(x, y_pred, p)))

    written: list[Path] = []
    skipped: dict[str, str] = {}
    for file_name, job in jobs:
        try:
            result = job(out / file_name)
        except NotApplicable as err:
            skipped[file_name] = str(err)
            continue
        except Exception as err:
            if strict:
                raise
            skipped[file_name] = f"failed: {type(err).__name__}: {err}"
            continue
        if result is None:
            skipped[file_name] = "model has no Conv2D layer"
        else:
            written.append(result)

    card = model_card(
        out / CARD_FILE,
        name=str(card_info.get("name") or model.name),
        data=card_info.get("data") or {},
        split=card_info.get("split") or {},
        metrics=card_info.get("metrics") or {},
        params=card_info.get("params") or {},
        images=[p.name for p in written],
        layer_table=card_info.get("layer_table"),
        skipped=skipped,
        bless=card_info.get("bless") or None,
    )
    return [*written, card]
