"""One frozen, fingerprinted train / validation / test split, decided by row identity.

Which part a row goes to follows from its key alone (`service.data.identity`): a keyed
hash of (``data.split.seed``, key) places the row at a uniform position in [0, 1);
positions below the test fraction are test, the next validation fraction validation,
the rest train. So the split does not depend on the run's ``seed``, on the order of
the rows or on which other rows exist: runs with other seeds or hyper-parameters, and
runs on the same data with rows appended, keep the same test (and validation, and
train) rows for the rows they share. Identical keys always share a part.

The fingerprint (a hash of each part's sorted keys) goes into the run record, so
tuning, final training and the single test evaluation can be shown to use the same
rows, and two runs can be shown to have the same split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.data.identity import hash_strings, positions
from service.errors import UserError

PARTS = ("train", "validation", "test")


@dataclass(frozen=True)
class Split:
    """Row indices (sorted, disjoint) of each part, the rows' keys, and a fingerprint.

    Attributes:
        train, validation, test: ``int64`` row indices into the data.
        keys: ``(rows,)`` uint64 key of every row of the data (None: indices only).
    """

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    keys: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def fingerprint(self) -> str:
        """16 hex digits over each part's sorted keys (indices when there are no keys)."""
        digest = hashlib.sha256()
        for name in PARTS:
            digest.update(name.encode())
            idx = getattr(self, name)
            if self.keys is None:
                digest.update(np.ascontiguousarray(idx, dtype="<i8").tobytes())
            else:
                digest.update(np.sort(self.keys[idx]).astype("<u8").tobytes())
        return digest.hexdigest()[:16]

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def part_keys(self, *names: str) -> np.ndarray:
        """Sorted unique keys of the rows of ``names`` (e.g. ``"train", "validation"``)."""
        if self.keys is None:
            raise ValueError("this split was made without row keys")
        rows = np.concatenate([getattr(self, n) for n in names])
        return np.unique(self.keys[rows]).astype(np.uint64)

    def fit_keys(self) -> np.ndarray:
        """Keys of the rows a model's weights or early stopping see: train + validation."""
        return self.part_keys("train", "validation")

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
    keys: np.ndarray | None,
    classification: bool,
    groups: np.ndarray | None = None,
    ordered: bool = False,
    class_names: tuple[str, ...] = (),
) -> Split:
    """The run's split, from a `SplitConfig`, the rows' keys and what the data is.

    - Time-ordered data (``ordered``, or ``cfg.ordered``) is cut in order: train is
      the past, test the most recent rows (appending rows moves the cut; keys unused).
    - With ``groups`` each group goes whole to the part its group id hashes to.
    - Otherwise each row goes to the part its key hashes to (module docstring), with
      ``cfg.seed`` as the split seed.
    - Row counts (``cfg.uses_counts``): the keys with the lowest positions fill test,
      the next ones validation, the rest train; exact counts, stable under re-ordering
      and other run seeds, but appended rows can displace old ones (the counts are
      fixed). Rows sharing a key are kept together, so counts are exact up to that.

    Stratification: a per-row rule cannot give each class exactly its share of each
    part (a class's test share is binomial around the fraction, e.g. 27 +- 5 of 180
    rows at 15%), and any rebalancing would make a row's part depend on other rows.
    So with ``cfg.stratify`` (classification) the split is checked instead: a class
    with fewer rows than the fractions need (`_min_rows`), or one that the hash
    left out of a part, is a `UserError` naming the class, with the way out (more
    rows, another ``data.split.seed``, or ``stratify: false``). Appending rows never
    takes a class out of a part it reached.

    Args:
        y: labels, ``(rows, ...)``.
        cfg: the `SplitConfig`.
        keys: ``(rows,)`` uint64 row keys (`Dataset.keys`); required unless ordered.
        classification: whether ``y`` holds class ids (stratification applies).
        groups: optional ``(rows,)`` group ids.
        ordered: the data is in time order (``cfg.ordered`` overrides).
        class_names: names of the class ids, for messages.
    """
    n = len(y)
    if keys is not None:
        keys = np.asarray(keys, dtype=np.uint64)
        if keys.shape != (n,):
            raise ValueError(f"make_split: {keys.shape[0]} keys for {n} rows")
    fractions = _fractions(cfg, n)
    if cfg.ordered if cfg.ordered is not None else ordered:
        n_train, n_val, n_test = _allocate(n, fractions)
        if min(n_train, n_val, n_test) < 1:
            raise UserError(f"data.split: {n} rows are too few for {fractions}")
        idx = np.arange(n, dtype="int64")
        return Split(idx[:n_train], idx[n_train : n_train + n_val], idx[n_train + n_val :], keys)
    if groups is not None:
        return group_split(groups, fractions=fractions, seed=cfg.seed, keys=keys)
    if keys is None:
        raise ValueError("make_split: row keys are required (Dataset.keys) unless ordered")
    pos = positions(keys, seed=cfg.seed)
    if cfg.uses_counts:
        part = _by_rank(keys, pos, validation=int(cfg.validation), test=int(cfg.test))
    else:
        part = _by_threshold(pos, fractions)
    stratify = cfg.stratify and classification
    _check_parts(np.asarray(y), part, fractions, cfg.seed, stratify, class_names)
    return _from_parts(part, keys)


def _from_parts(part: np.ndarray, keys: np.ndarray | None) -> Split:
    """The `Split` of per-row part numbers (0 train, 1 validation, 2 test)."""
    train, validation, test = (np.flatnonzero(part == p).astype("int64") for p in range(3))
    return Split(train, validation, test, keys)


def _by_threshold(pos: np.ndarray, fractions: tuple[float, float, float]) -> np.ndarray:
    """Part of each position: 2 (test) below the test fraction, 1 (validation) next, 0."""
    part = np.zeros(len(pos), dtype="int8")
    part[pos < fractions[2] + fractions[1]] = 1
    part[pos < fractions[2]] = 2
    return part


def _by_rank(keys: np.ndarray, pos: np.ndarray, *, validation: int, test: int) -> np.ndarray:
    """Parts for row counts: keys in position order fill test, then validation."""
    unique, first, inverse, counts = np.unique(
        keys, return_index=True, return_inverse=True, return_counts=True
    )
    order = np.lexsort((unique, pos[first]))  # ties (never in practice) broken by key
    before = np.cumsum(counts[order]) - counts[order]  # rows placed ahead of each key
    owner = np.zeros(len(unique), dtype="int8")
    owner[order[before < test + validation]] = 1
    owner[order[before < test]] = 2
    return owner[inverse.ravel()]


def _class_label(cid: Any, class_names: tuple[str, ...]) -> str:
    name = class_names[cid] if class_names and 0 <= cid < len(class_names) else cid
    return f"class {name!r}"


def _check_parts(
    y: np.ndarray,
    part: np.ndarray,
    fractions: tuple[float, float, float],
    seed: int,
    stratify: bool,
    class_names: tuple[str, ...],
) -> None:
    """Every part non-empty; with ``stratify`` every class in every part (else UserError)."""
    blocks = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(len(y))]
    for rows in blocks:
        label = _class_label(y[rows[0]].item(), class_names) if stratify else "the data"
        if min(_allocate(len(rows), fractions)) < 1:
            raise UserError(
                f"data.split: {label} has {len(rows)} rows; with fractions "
                f"{fractions} it cannot appear in train, validation and test "
                f"(need at least {_min_rows(fractions)} rows)."
            )
        reached = np.bincount(part[rows], minlength=3)
        missing = [PARTS[p] for p in range(3) if reached[p] == 0]
        if missing:
            hint = ", or set data.split.stratify: false" if stratify else ""
            raise UserError(
                f"data.split: {label} has {len(rows)} rows and none went to "
                f"{' or '.join(missing)} with data.split.seed {seed} (a row's part follows "
                f"a hash of its key, so few rows can miss a part); expected rows in train, "
                f"validation and test: add rows, set another data.split.seed{hint}."
            )


def group_split(
    groups: np.ndarray,
    *,
    fractions: tuple[float, float, float],
    seed: int,
    keys: np.ndarray | None = None,
) -> Split:
    """Assign whole groups to parts by a keyed hash of the group id (never two parts).

    A group's part depends only on its id and ``seed`` (stable as groups come and
    go); the parts' row shares follow the fractions only as closely as group sizes
    and chance allow. A part left without a group is a `UserError`.
    """
    names, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    if len(names) < 3:
        raise UserError(
            f"data.group: found {len(names)} groups; expected at least 3 to fill "
            "train, validation and test"
        )
    owner = _by_threshold(positions(hash_strings(names.tolist()), seed=seed), fractions)
    empty = [PARTS[p] for p in range(3) if not (owner == p).any()]
    if empty:
        raise UserError(
            f"data.group: {len(names)} groups and none went to {' or '.join(empty)} with "
            f"data.split.seed {seed} (a group's part follows a hash of its id); expected "
            "groups in train, validation and test: add groups or set another data.split.seed."
        )
    rows = owner[inverse.ravel()]
    return _from_parts(rows, keys)


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


def _min_rows(fractions: tuple[float, float, float]) -> int:
    n = 3
    while min(_allocate(n, fractions)) < 1:
        n += 1
    return n
