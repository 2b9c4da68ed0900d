"""The checking pass: one streaming read that finds bad rows and fits statistics.

Before anything is recorded, the rows of the split are read once, block by block
(`Reader.blocks`): rows that cannot be decoded or hold NaN/inf are found, and the
per-channel moments (count, sum, sum of squares, range) of the train and
validation parts are accumulated in float64. Memory holds one block and a few
vectors, whatever the data's size; normalization layers are then built from the
moments (`service.data.preprocess`), never by holding the train part.

Which rows are read (`data.validate`): ``full`` every row; ``sample`` the rows
statistics need (train and validation) plus up to 1,000 rows of each other part;
``none`` only the rows statistics need. A bad row is a `UserError` naming it, or
with ``data.on_bad_rows: skip`` is left out of its part and counted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import UserError

SAMPLE_ROWS = 1_000


@dataclass
class Moments:
    """Per-channel moments of the values of some rows (channel = last axis)."""

    rows: int = 0
    count: float = 0.0  # values per channel
    total: np.ndarray = field(default_factory=lambda: np.zeros(0))
    squares: np.ndarray = field(default_factory=lambda: np.zeros(0))
    low: float = np.inf
    high: float = -np.inf

    def add(self, x: np.ndarray) -> None:
        """Fold in a block ``(rows, ..., channels)`` of finite values."""
        if not len(x):
            return
        flat = x.reshape(len(x), -1, x.shape[-1] if x.ndim > 1 else 1)
        if not len(self.total):
            self.total = np.zeros(flat.shape[-1])
            self.squares = np.zeros(flat.shape[-1])
        self.rows += len(x)
        self.count += flat.shape[0] * flat.shape[1]
        self.total += flat.sum(axis=(0, 1), dtype=np.float64)
        self.squares += np.einsum("bec,bec->c", flat, flat, dtype=np.float64)
        self.low = min(self.low, float(flat.min()))
        self.high = max(self.high, float(flat.max()))

    def __add__(self, other: Moments) -> Moments:
        if not other.rows:
            return self
        if not self.rows:
            return other
        return Moments(
            self.rows + other.rows,
            self.count + other.count,
            self.total + other.total,
            self.squares + other.squares,
            min(self.low, other.low),
            max(self.high, other.high),
        )

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1.0)

    @property
    def variance(self) -> np.ndarray:
        """Population variance, as Keras' ``Normalization.adapt`` computes it."""
        return np.maximum(self.squares / max(self.count, 1.0) - self.mean**2, 0.0)


@dataclass(frozen=True)
class ScanResult:
    """What the checking pass found: bad rows (row -> reason) and rows read."""

    rows_read: int
    bad: dict[int, str]


def rows_digest(rows: np.ndarray) -> str:
    """A key for a set of rows (order does not matter)."""
    return hashlib.sha1(np.sort(np.asarray(rows, dtype="<i8")).tobytes()).hexdigest()


def needs_moments(data: Any, pre_cfg: Any) -> bool:
    """Whether the model's preprocessing needs moments of its fit rows."""
    if data.kind == "text":
        return False
    return bool(pre_cfg.normalize) or data.task == "reconstruction"


def _bad_values(data: Any, x: np.ndarray) -> np.ndarray:
    """Per row of a block: a reason it is unusable, or '' (finite numbers, real text)."""
    if data.kind == "text":
        return np.array(["has no text" if v is None else "" for v in x], dtype=object)
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    return np.where(finite, "", "has NaN or inf")


def scan(
    data: Any, parts: dict[str, np.ndarray], *, validate: str, fit_moments: bool, seed: int = 0
) -> ScanResult:
    """Read the rows `validate` asks for once; fold train/validation moments into
    ``data.memo`` (see `moments`) and return the bad rows."""
    stat_parts = ("train", "validation") if fit_moments else ()
    chosen: list[np.ndarray] = []
    rng = np.random.default_rng(seed)
    for name, rows in parts.items():
        if validate == "full" or name in stat_parts:
            chosen.append(rows)
        elif validate == "sample":
            chosen.append(rng.choice(rows, size=min(SAMPLE_ROWS, len(rows)), replace=False))
    rows = np.unique(np.concatenate(chosen)) if chosen else np.zeros(0, dtype="int64")
    owner = np.full(len(data), -1, dtype="int8")
    for i, name in enumerate(stat_parts):
        owner[parts[name]] = i
    acc = [Moments() for _ in stat_parts]
    bad: dict[int, str] = {}
    seen = np.zeros(len(data), dtype=bool)
    for ids, x in data.reader.blocks(rows):
        seen[ids] = True
        reasons = _bad_values(data, x)
        for j in np.flatnonzero(reasons != ""):
            bad[int(ids[j])] = str(reasons[j])
        good = reasons == ""
        for p, moments in enumerate(acc):
            moments.add(x[good & (owner[ids] == p)])
    what = "an image" if data.kind == "image" else "a record of the declared type"
    for row in np.flatnonzero(~seen[rows] if len(rows) else []):
        bad[int(rows[row])] = f"cannot be decoded as {what}"
    if fit_moments:
        clean = {n: np.setdiff1d(parts[n], list(bad)) for n in stat_parts}
        data.memo[("moments", rows_digest(clean["train"]))] = acc[0]
        both = np.concatenate([clean["train"], clean["validation"]])
        data.memo[("moments", rows_digest(both))] = acc[0] + acc[1]
    return ScanResult(int(len(rows)), bad)


def moments(data: Any, rows: np.ndarray) -> Moments:
    """Moments of ``rows``: from the checking pass, or one more streaming read."""
    key = ("moments", rows_digest(rows))
    if key not in data.memo:
        acc = Moments()
        for _, x in data.reader.blocks(rows):
            acc.add(x)
        data.memo[key] = acc
    return data.memo[key]


def bad_rows_error(data: Any, bad: dict[int, str]) -> UserError:
    """One line: the first bad row, why, and how many there are."""
    first = min(bad)
    reason = bad[first]
    same = sum(1 for r in bad.values() if r == reason)
    where = data.reader.describe(first)
    expected = (
        "expected finite numbers"
        if "NaN" in reason
        else "expected a string"
        if "text" in reason
        else "expected a readable file"
    )
    more = f"{same} rows in all" if same > 1 else "1 row"
    return UserError(
        f"{where}: {reason} ({more}; {expected}; or set data.on_bad_rows: skip to leave "
        "bad rows out)"
    )
