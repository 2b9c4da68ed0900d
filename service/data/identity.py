"""Row identity: a stable 64-bit key per row, and a keyed position in [0, 1) per key.

The split decides a row's part from its key alone (`service.data.split`), and each
registered model records the keys it was fitted on, so a later run can tell which of
its test rows a champion never saw. A key must therefore be the same in every process,
on every machine and after any re-ordering of the data: a BLAKE2b digest (8 bytes,
little-endian) of a path, record or id text, or, for content, the row's canonical
64-bit words (float64 bits, text keys) folded with SplitMix64 (vectorized over rows:
millions of rows a second), never Python's salted ``hash()``.

What a key is made of, per source (``KEY_SCHEMES``, recorded with each model):

- a file path relative to the source root (image and text folders),
- ``file:record`` (TFRecord files),
- a configured id column (CSV, Parquet),
- otherwise the row's content (features and raw label): numbers as float64 (so ``1``
  and ``1.0`` agree and a column read as int in one file and as float in a longer one
  keeps its keys), strings as UTF-8. Identical rows share a key (and so a part).

All functions are pure: arrays in, ``uint64`` arrays out.

Example:
    >>> hash_strings(["cat/001.png"]).dtype
    dtype('uint64')
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.vocab import FOLDER_SOURCES, TABLE_SOURCES

# Bumped whenever an encoding below changes: a champion whose keys were made by
# another scheme cannot be compared row by row (the gate refuses, see promotion.py).
SCHEME_VERSION = "v1"

_MASK = (1 << 64) - 1


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def hash_strings(values: Iterable[str]) -> np.ndarray:
    """One key per string: BLAKE2b-64 of its UTF-8 bytes, as ``(n,)`` uint64."""
    return np.fromiter((_digest(str(v).encode("utf-8")) for v in values), dtype=np.uint64)


MISSING = "\x00missing"  # one text for None, NaN, pandas.NA and NaT, whoever read the file


def is_missing(v: Any) -> bool:
    return (
        v is None or (isinstance(v, float) and v != v) or type(v).__name__ in ("NAType", "NaTType")
    )


def id_strings(values: Sequence[Any] | np.ndarray) -> list[str]:
    """Canonical text of id or cell values: whole floats as ints (``7.0`` -> ``"7"``),
    missing values as `MISSING`, else ``str``.

    A numeric id column read as float in one file (pandas does so when any value is
    missing or fractional) keeps the keys it had as ints, and an empty cell has one
    key whether pandas (NaN) or pyarrow (None) read it.
    """
    out = []
    for v in np.asarray(values, dtype=object).tolist():
        if is_missing(v):
            out.append(MISSING)
            continue
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        out.append(str(v))
    return out


def hash_ids(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Keys of an id column's values (see `id_strings`)."""
    return hash_strings(id_strings(values))


def hash_paths(files: Iterable[str | Path], root: str | Path) -> np.ndarray:
    """Keys of files by their path relative to ``root``, POSIX-style (``cat/001.png``)."""
    base = Path(root)
    return hash_strings(Path(f).relative_to(base).as_posix() for f in files)


def hash_records(
    files: Sequence[str | Path], counts: Sequence[int], root: str | Path
) -> np.ndarray:
    """Keys of TFRecord records: ``"<file relative to root>:<record number>"``.

    Args:
        files: the record files, in reading order.
        counts: records read from each file.
        root: the folder the relative names start from.
    """
    base = Path(root)
    names = (
        f"{Path(f).relative_to(base).as_posix()}:{i}"
        for f, n in zip(files, counts, strict=True)
        for i in range(n)
    )
    return hash_strings(names)


def _text_keys(values: Any) -> np.ndarray:
    """Keys of each value's canonical text (`id_strings`), hashing each distinct value once."""
    import pandas as pd

    codes, uniques = pd.factorize(np.asarray(values, dtype=object).ravel(), use_na_sentinel=True)
    keys = hash_strings(id_strings(np.asarray(uniques, dtype=object)))
    missing = hash_strings([MISSING])
    return np.where(codes < 0, missing[0], keys[np.maximum(codes, 0)] if len(keys) else missing[0])


def _canonical_columns(array: np.ndarray) -> np.ndarray:
    """``(rows, k)`` uint64 words: float64 bits of numbers, text keys of anything else."""
    arr = np.asarray(array)
    flat = arr.reshape(len(arr), -1)
    if flat.dtype.kind in "biuf":
        out = flat.astype("<f8")
        out[out == 0] = 0.0  # -0.0 and 0.0 are one value
        out[np.isnan(out)] = np.nan  # one NaN bit pattern
        return out.view("<u8")
    if flat.dtype.kind in "USO":
        return _text_keys(flat).astype("<u8").reshape(flat.shape)
    raise TypeError(f"hash_rows: cannot hash arrays of dtype {arr.dtype}")


def _row_keys(arrays: Sequence[np.ndarray], *, prefix: bytes = b"") -> np.ndarray:
    """Fold each row's words into one key, vectorized over rows and words.

    Each word is mixed (SplitMix64) with its position, the mixed words are summed
    (mod 2**64, so the whole block is one NumPy reduction) and the sum mixed with
    the prefix's digest. Rows are done a block at a time, so memory stays bounded.
    """
    rows = len(arrays[0])
    if any(len(a) != rows for a in arrays):
        raise ValueError(f"hash_rows: arrays differ in rows: {[len(a) for a in arrays]}")
    start_key = np.uint64(_digest(prefix))
    out = np.empty(rows, dtype=np.uint64)
    width = sum(int(np.prod(np.shape(a)[1:], dtype=np.int64)) for a in arrays)
    salts = _splitmix64(np.arange(1, width + 1, dtype=np.uint64))
    block = max(1, (1 << 22) // max(width, 1))  # ~4M words (32 MB) a block
    with np.errstate(over="ignore"):
        for begin in range(0, rows, block):
            end = min(rows, begin + block)
            words = np.concatenate([_canonical_columns(a[begin:end]) for a in arrays], axis=1)
            mixed = _splitmix64(words ^ salts).sum(axis=1, dtype=np.uint64)
            out[begin:end] = _splitmix64(mixed ^ start_key)
    return out


def hash_rows(*arrays: np.ndarray) -> np.ndarray:
    """Content keys: each row's canonical words across ``arrays``, folded into 64 bits.

    Each array has one entry per row (any trailing shape: images, windows, labels);
    row ``i``'s key covers row ``i`` of every array, in order. Numbers are encoded as
    float64, strings by their own keys.

    Args:
        *arrays: ``(rows, ...)`` arrays of numbers or strings, equal row counts.

    Returns:
        ``(rows,)`` uint64.
    """
    if not arrays:
        raise ValueError("hash_rows: need at least one array")
    return _row_keys(arrays)


def hash_table(frame: Any) -> np.ndarray:
    """Content keys of a pandas DataFrame's rows, independent of column order.

    The key covers the column names and each row's values (numbers as float64,
    anything else as text), so re-ordering columns changes no key, while adding,
    renaming or dropping a column changes every key: set an id column when a table's
    columns change. Our own encoding rather than ``pandas.util.hash_pandas_object``,
    whose values depend on the dtype pandas infers (int vs float) and are not promised
    stable across pandas versions.

    Returns:
        ``(rows,)`` uint64.
    """
    by_name = {str(c): c for c in frame.columns}
    names = sorted(by_name)
    columns = []
    for name in names:
        values = frame[by_name[name]].to_numpy()
        columns.append(values if values.dtype.kind in "biuf" else _text_keys(values)[:, None])
    header = "\x1f".join(names).encode("utf-8") + b"\x1e"
    return _row_keys(columns, prefix=header)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on uint64 arrays (wrapping arithmetic)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def positions(keys: np.ndarray, *, seed: int) -> np.ndarray:
    """A keyed, uniform position in [0, 1) for each key; the split thresholds it.

    The same (key, seed) always gives the same position, whatever other keys exist;
    another seed gives unrelated positions.

    Args:
        keys: ``(rows,)`` uint64 row keys.
        seed: the split seed (``data.split.seed``).

    Returns:
        ``(rows,)`` float64 in [0, 1).
    """
    salt = _splitmix64(np.array([int(seed) & _MASK], dtype=np.uint64))[0]
    mixed = _splitmix64(np.asarray(keys, dtype=np.uint64) ^ salt)
    return (mixed >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def key_scheme(data_cfg: Any) -> str:
    """What the keys of a `DataConfig`'s rows are made of, e.g. ``"v1:column:user_id"``.

    Recorded with each model: fitted keys can only be compared under one scheme.
    """
    source = data_cfg.source
    if source in FOLDER_SOURCES:
        kind = "path"
    elif source == "tfrecord":
        kind = "record"
    elif source in TABLE_SOURCES and getattr(data_cfg, "id_column", None):
        kind = f"column:{data_cfg.id_column}"
    else:
        kind = "content"
    return f"{SCHEME_VERSION}:{kind}"
