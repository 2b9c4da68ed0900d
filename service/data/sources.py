"""Data sources: turn `data.source` into arrays plus what the model needs to know.

Built-in sets ship inside installed packages (scikit-learn), so nothing is
downloaded, which matters on air-gapped clusters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Task = Literal["multiclass", "binary", "multilabel", "regression"]


@dataclass(frozen=True)
class Dataset:
    """In-memory examples.

    Attributes:
        x: features, shape ``(rows, *input_shape)``, float32, raw units (no scaling).
        y: labels, shape ``(rows,)``; int class ids for classification.
        task: what the labels mean.
        class_names: one name per class id (empty for regression).
        input_name: name the exported serving signature gives the input.
        source: human-readable description for the run record.
    """

    x: np.ndarray
    y: np.ndarray
    task: Task
    class_names: tuple[str, ...]
    input_name: str
    source: str
    meta: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) or None

    def __len__(self) -> int:
        return int(self.x.shape[0])


def load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits, pixel values 0..16, as (8, 8, 1)."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = bunch.images.astype("float32")[..., None]
    y = bunch.target.astype("int64")
    return Dataset(
        x=x,
        y=y,
        task="multiclass",
        class_names=tuple(str(c) for c in bunch.target_names),
        input_name="image",
        source="sklearn.datasets.load_digits",
    )


BUILTIN = {"digits": load_digits}


def load(source: str) -> Dataset:
    """Load the data named by `data.source`."""
    return BUILTIN[source]()
