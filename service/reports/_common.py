"""Pieces every report shares: the headless figure, saving, label handling."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from service.errors import check_choice, invalid_value
from service.vocab import CLASSIFICATION_TASKS, TASKS

DPI = 100
CLASSIFICATION = CLASSIFICATION_TASKS


class NotApplicable(ValueError):
    """This picture does not exist for this model (e.g. feature maps of an MLP).

    `write_all` lists the message in the model card instead of drawing the picture.
    """


def check_task(task: str) -> None:
    """House-style error unless ``task`` is one the trainer knows."""
    check_choice("task", task, TASKS)


def panel_grid(
    panels: int,
    *,
    max_cols: int,
    width: float,
    height: float,
    title_height: float = 0.4,
    layout: Literal["constrained"] | None = "constrained",
):
    """A figure of ``panels`` axes, at most ``max_cols`` a row, each ``width`` x ``height``
    inches (plus ``title_height`` for a suptitle); ``(figure, axes)`` with the axes flat in
    row order and the unused cells of the last row switched off. ``layout`` as in
    `new_figure` (None: the caller spaces the panels, e.g. with ``subplots_adjust``)."""
    cols = min(max_cols, panels)
    rows = -(-panels // cols)
    fig = new_figure(width * cols, height * rows + title_height, layout=layout)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_axis_off()
    return fig, axes


def new_figure(
    width: float, height: float, *, layout: Literal["constrained"] | None = "constrained"
):
    """A matplotlib `Figure` (size in inches) on its own Agg canvas.

    No pyplot: no global figure registry, no GUI backend, safe to use from threads.
    ``layout="constrained"`` spaces panels without `tight_layout`'s warnings; pass
    None for picture grids, where the layout engine costs more than the drawing.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def mosaic(tiles: list[np.ndarray], cols: int, *, gap_value: float = np.nan) -> np.ndarray:
    """Tile equally shaped 2-D (or H x W x 3) arrays row by row with 1-pixel gaps.

    One image in one `Axes` draws much faster than one `Axes` per tile. Gaps and
    unused cells hold ``gap_value`` (NaN draws as the colour map's "bad" colour).
    """
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, *tiles[0].shape[2:]), gap_value)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = tile
    return out


def minmax(a: np.ndarray) -> np.ndarray:
    """``a`` scaled to [0, 1] (all zeros when constant)."""
    a = np.asarray(a, dtype="float64")
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def save(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as PNG at `DPI` to ``path`` (parents created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png")
    return out


def class_ids(y: Any, *, field: str = "y") -> np.ndarray:
    """Integer class ids, shape (N,), from any of the label/prediction forms we meet.

    Accepts ids (N,), one-hot rows or class probabilities (N, C) (arg-max), and
    binary probabilities (N,) or (N, 1) (thresholded at 0.5).
    """
    a = np.asarray(y)
    if a.ndim == 2 and a.shape[1] > 1:
        return a.argmax(axis=-1).astype(np.int64)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise invalid_value(f"{field}.shape", a.shape, "(N,), (N, 1) or (N, num_classes)")
    if np.issubdtype(a.dtype, np.floating) and not np.array_equal(a, np.round(a)):
        return (a >= 0.5).astype(np.int64)
    return a.astype(np.int64)


def one_image(model: Any, image: Any) -> np.ndarray:
    """``image`` as a float32 batch of one, (1, H, W, C), checked against ``model``'s input.

    Raises `NotApplicable` if the model's input is not an image (rank 4 with batch).
    """
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4:
        raise NotApplicable(
            f"model input has shape {shape[1:]}, not (height, width, channels); "
            "image pictures need an image model"
        )
    a = np.asarray(image, dtype="float32")
    if a.ndim == 3:
        a = a[None]
    if (
        a.ndim != 4
        or a.shape[0] != 1
        or any(
            want is not None and want != got
            for want, got in zip(shape[1:], a.shape[1:], strict=True)
        )
    ):
        raise invalid_value("image.shape", np.shape(image), f"one image of shape {shape[1:]}")
    return a


def show_image(ax: Any, image: np.ndarray) -> None:
    """Draw one (H, W, C) input image, min-max scaled; grey unless it has 3 channels."""
    img = minmax(image)
    if img.shape[-1] == 3:
        ax.imshow(img)
    else:
        ax.imshow(img.mean(axis=-1), cmap="gray", vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])


def class_label(class_names: Any, cid: int) -> str:
    """``class_names[cid]`` when there is one, else the id as text."""
    if class_names is not None and 0 <= cid < len(class_names):
        return str(class_names[cid])
    return str(cid)
