"""Autoencoders: test images beside their reconstructions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from service.errors import invalid_value
from service.reports._common import NotApplicable, new_figure, save


def reconstructions(x: Any, reconstructed: Any, path: str | Path, *, images: int = 8) -> Path:
    """Draw ``images`` test inputs (top row) over their reconstructions (bottom row).

    What it is for: seeing what the bottleneck keeps (shapes, strokes) and loses
    (fine detail, noise). Each pair shares one grey scale (the input's range); the
    title of each reconstruction is its mean squared error in input units.

    Args:
        x: raw images (N, H, W, C) with C 1 (grey) or 3 (RGB).
        reconstructed: the model's outputs for ``x``, the same shape.
        path: PNG file to write.
        images: how many pairs (the first rows of ``x``).

    Returns:
        ``path``.

    Raises:
        NotApplicable: ``x`` is not a batch of images.
    """
    x = np.asarray(x, dtype="float64")
    out = np.asarray(reconstructed, dtype="float64")
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise NotApplicable(f"inputs of shape {x.shape} are not images (N, H, W, 1 or 3)")
    if out.shape != x.shape:
        raise invalid_value("reconstructed shape", out.shape, f"the inputs' shape {x.shape}")
    n = min(images, len(x))
    fig = new_figure(1.3 * n, 3.0)
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        low, high = float(x[i].min()), float(x[i].max())
        span = (high - low) or 1.0
        mse = float(np.mean((x[i] - out[i]) ** 2))
        for row, image, title in ((0, x[i], "input"), (1, out[i], f"MSE {mse:.3g}")):
            ax = axes[row, i]
            shown = np.clip((image - low) / span, 0.0, 1.0)
            ax.imshow(shown[..., 0] if shown.shape[-1] == 1 else shown, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize="small")
            ax.set_axis_off()
    fig.suptitle("test images (top) and their reconstructions (bottom)")
    return save(fig, path)
