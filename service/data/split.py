"""One frozen, fingerprinted train / validation / test split.

The split is computed once per run from the labels and the seed; its fingerprint
(a hash of the row indices of each part) goes into the run record so tuning,
final training and the single test evaluation can be shown to use the same rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

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


def _fractions(cfg: Any, n: int) -> tuple[float, float, float]:
    """Fractions from a `SplitConfig` given as fractions or as row counts."""
    if not cfg.uses_counts:
        return (cfg.train, cfg.validation, cfg.test)
    train = n - cfg.validation - cfg.test if cfg.train == -1 else cfg.train
    if train < 1 or train + cfg.validation + cfg.test > n:
        raise UserError(
            f"data.split: received counts train={cfg.train}, validation={int(cfg.validation)}, "
            f"test={int(cfg.test)} for {n} rows; expected counts that fit in {n} rows"
        )
    total = train + cfg.validation + cfg.test
    return (train / total, cfg.validation / total, cfg.test / total)


def make_split(
    y: np.ndarray,
    cfg: Any,
    *,
    seed: int,
    classification: bool,
    groups: np.ndarray | None = None,
    ordered: bool = False,
    class_names: tuple[str, ...] = (),
) -> Split:
    """The run's split, from a `SplitConfig` and what the data is.

    Time-ordered data (``ordered``, or ``cfg.ordered``) is cut in order: train is
    the past, test the most recent rows. With ``groups`` whole groups go to one
    part. Otherwise classification is stratified (unless ``cfg.stratify`` is off).
    """
    n = len(y)
    fractions = _fractions(cfg, n)
    if cfg.ordered if cfg.ordered is not None else ordered:
        n_train, n_val, n_test = _allocate(n, fractions)
        if min(n_train, n_val, n_test) < 1:
            raise UserError(f"data.split: {n} rows are too few for {fractions}")
        idx = np.arange(n, dtype="int64")
        return Split(idx[:n_train], idx[n_train : n_train + n_val], idx[n_train + n_val :])
    if groups is not None:
        return group_split(groups, fractions=fractions, seed=seed)
    return stratified_split(
        y,
        fractions=fractions,
        seed=seed,
        stratify=cfg.stratify and classification,
        class_names=class_names,
    )


def group_split(groups: np.ndarray, *, fractions: tuple[float, float, float], seed: int) -> Split:
    """Assign whole groups to parts (shuffled, seeded) so no group spans two parts."""
    rng = np.random.default_rng(seed)
    names, inverse = np.unique(np.asarray(groups), return_inverse=True)
    if len(names) < 3:
        raise UserError(
            f"data.group: found {len(names)} groups; expected at least 3 to fill "
            "train, validation and test"
        )
    sizes = np.bincount(inverse)
    order = rng.permutation(len(names))
    targets = np.array(fractions) * len(groups)
    filled = np.zeros(3)
    owner = np.empty(len(names), dtype="int64")
    # The first three groups seed the three parts, so none is empty.
    for part, g in enumerate(order[:3]):
        owner[g] = part
        filled[part] += sizes[g]
    for g in order[3:]:
        part = int(np.argmax(targets - filled))
        owner[g] = part
        filled[part] += sizes[g]
    rows = owner[inverse]
    return Split(*(np.flatnonzero(rows == p).astype("int64") for p in range(3)))


def kfold(
    y: np.ndarray, rows: np.ndarray, *, k: int, seed: int, stratify: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (fit, score) folds over ``rows`` (train + validation; never test)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = (
        StratifiedKFold(k, shuffle=True, random_state=seed)
        if stratify
        else KFold(k, shuffle=True, random_state=seed)
    )
    labels = y[rows] if stratify else np.zeros(len(rows))
    return [(rows[a], rows[b]) for a, b in splitter.split(np.zeros(len(rows)), labels)]


def stratified_split(
    y: np.ndarray,
    *,
    fractions: tuple[float, float, float],
    seed: int,
    stratify: bool = True,
    class_names: tuple[str, ...] = (),
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
            cid = y[rows[0]].item()
            name = class_names[cid] if class_names and 0 <= cid < len(class_names) else cid
            label = f"class {name!r}" if stratify else "the data"
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
