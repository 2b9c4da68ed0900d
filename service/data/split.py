"""One frozen, fingerprinted train / validation / test split.

The split is computed once per run from the labels and the seed; its fingerprint
(a hash of the row indices of each part) goes into the run record so tuning,
final training and the single test evaluation can be shown to use the same rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from service.errors import UserError


@dataclass(frozen=True)
class Split:
    """Row indices (sorted, disjoint) of each part, and their fingerprint."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for name in ("train", "validation", "test"):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(getattr(self, name), dtype="<i8").tobytes())
        return digest.hexdigest()[:16]

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def class_counts(self, y: np.ndarray) -> dict[str, dict[str, int]]:
        """Per part, how many rows of each class (for the run record)."""
        out = {}
        for name, idx in self.parts().items():
            values, counts = np.unique(y[idx], return_counts=True)
            out[name] = {str(v): int(c) for v, c in zip(values, counts, strict=True)}
        return out


def _allocate(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Rows for (train, validation, test) out of ``n``; validation/test round half up."""
    n_val = int(np.floor(n * fractions[1] + 0.5))
    n_test = int(np.floor(n * fractions[2] + 0.5))
    return n - n_val - n_test, n_val, n_test


def stratified_split(
    y: np.ndarray,
    *,
    fractions: tuple[float, float, float],
    seed: int,
    stratify: bool = True,
) -> Split:
    """Split rows into train / validation / test.

    With ``stratify`` each class is split on its own, so every part holds each
    class in proportion (within one row), and a class too small to reach every
    part is a `UserError`. The same ``y`` and ``seed`` always give the same split.

    Args:
        y: labels, shape ``(rows,)``.
        fractions: ``(train, validation, test)``, summing to 1.
        seed: seed of the row shuffle.
        stratify: split each class separately (classification).
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(len(y))]
    parts: list[list[np.ndarray]] = [[], [], []]
    for rows in groups:
        n_train, n_val, n_test = _allocate(len(rows), fractions)
        if min(n_train, n_val, n_test) < 1:
            label = f"class {y[rows[0]].item()!r}" if stratify else "the data"
            raise UserError(
                f"data.split: {label} has {len(rows)} rows; with fractions "
                f"{fractions} it cannot appear in train, validation and test "
                f"(need at least {_min_rows(fractions)} rows)."
            )
        shuffled = rng.permutation(rows)
        parts[0].append(shuffled[:n_train])
        parts[1].append(shuffled[n_train : n_train + n_val])
        parts[2].append(shuffled[n_train + n_val :])
    train, val, test = (np.sort(np.concatenate(p)).astype("int64") for p in parts)
    return Split(train=train, validation=val, test=test)


def _min_rows(fractions: tuple[float, float, float]) -> int:
    n = 3
    while min(_allocate(n, fractions)) < 1:
        n += 1
    return n
