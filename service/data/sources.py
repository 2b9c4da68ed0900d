"""Data sources: the index pass that turns the `data` config into a `Dataset`.

A `Dataset` is the source's index: labels ``y``, row groups and identities, what
the rows mean, and a `Reader` that reads the features of any rows while the model
consumes them (`service.data.readers`). Only what the split needs is read here
(labels, group columns, file lists); pixels and feature columns stay on disk.

Problems this pass can see (missing files or columns, wrong column types, unknown
or missing labels, too few classes, empty files) are `UserError`s naming the file,
column or rows and what was expected. Faults only decoding finds (a corrupt image,
NaN in a feature) are found by the checking pass (`service.data.scan`), also
before anything is recorded.

Built-in sets ship inside installed packages (scikit-learn, statsmodels), so
nothing is downloaded, which matters on air-gapped clusters.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from service.data import identity
from service.data.readers import (
    ArrayReader,
    FileReader,
    Reader,
    TableReader,
    TFRecordReader,
    WindowReader,
    decode_image_fn,
)
from service.errors import UserError
from service.vocab import BUILTIN_SOURCES, TABLE_SOURCES, Task

Kind = Literal["image", "tabular", "sequence", "text"]
INPUT_NAMES = {"image": "image", "tabular": "features", "sequence": "sequence", "text": "text"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass(frozen=True)
class Dataset:
    """A source's index and the reader of its rows.

    Attributes:
        y: ``(rows,)`` int class ids (classification), ``(rows, horizon)`` or
            ``(rows,)`` float targets (regression), ``(rows, classes)`` 0/1 (multilabel);
            for ``reconstruction`` the source's labels, used only to stratify and colour.
        task: what the model learns.
        kind: what the features are; picks preprocessing and the input name.
        class_names: one name per class id (empty for regression).
        source: human-readable description for the run record.
        reader: reads the features of given rows (`service.data.readers`).
        input_shape: shape of one example's raw features (``()`` for text).
        groups: optional ``(rows,)`` group ids (no group spans two split parts).
        ordered: rows are in time order (split without shuffling).
        feature_names: column names of tabular features.
        keys: ``(rows,)`` uint64 stable row identities (`service.data.identity`): the
            split places rows by them and models record the keys they fitted on.
        memo: statistics already computed over row sets (`service.data.scan`).
    """

    y: np.ndarray
    task: Task
    kind: Kind
    class_names: tuple[str, ...]
    source: str
    reader: Reader
    input_shape: tuple[int, ...]
    groups: np.ndarray | None = None
    ordered: bool = False
    feature_names: tuple[str, ...] = ()
    keys: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def input_name(self) -> str:
        return INPUT_NAMES[self.kind]

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) or None

    @property
    def streamed(self) -> bool:
        """Whether rows are read from files as they are consumed (not held in memory)."""
        return self.reader.streamed

    @property
    def x(self) -> np.ndarray:
        """All features, for in-memory sources only (built-in sets, ``.npz``)."""
        if isinstance(self.reader, ArrayReader):
            return self.reader.x
        if isinstance(self.reader, WindowReader):
            return self.reader.window_array(np.arange(len(self)))
        raise TypeError(f"{self.source} is streamed; read rows with take(rows) or a stream")

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The raw features of a few ``rows`` (in that order), e.g. warm-up requests or
        pictures; for whole parts use `service.data.stream`."""
        rows = np.asarray(rows, dtype="int64")
        got: dict[int, np.ndarray] = {}
        for ids, x in self.reader.blocks(np.unique(rows)):
            got.update(zip(ids.tolist(), x, strict=True))
        missing = [int(r) for r in rows if int(r) not in got]
        if missing:
            raise UserError(f"{self.reader.describe(missing[0])}: cannot be read")
        out = (
            np.stack([got[int(r)] for r in rows]) if len(rows) else np.zeros((0, *self.input_shape))
        )
        if self.kind == "text":
            return np.array(
                [v.decode() if isinstance(v, bytes) else str(v) for v in out], dtype=object
            )
        return out.astype("float32")

    @property
    def output_size(self) -> int | None:
        """Classes for classifiers, target width for regression, None for autoencoders."""
        if self.task == "reconstruction":
            return None
        if self.task == "regression":
            return int(self.y.shape[1]) if self.y.ndim == 2 else 1
        return self.num_classes

    def __len__(self) -> int:
        return int(self.y.shape[0])


# ------------------------------------------------------------------ checks
def _fail(where: str, message: str) -> UserError:
    return UserError(f"{where}: {message}")


def _check_finite(values: np.ndarray, where: str, what: str) -> None:
    if values.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))
        raise _fail(
            where,
            f"{what} has {len(rows)} rows with NaN or inf (first row {int(rows[0])}); "
            "expected finite numbers",
        )


def _label_name(value: Any) -> str:
    """A label's class name: integral floats as integers (``1.0`` -> ``"1"``)."""
    return str(int(value)) if isinstance(value, float) and value == int(value) else str(value)


def _encode_labels(
    raw: np.ndarray, *, where: str, task: str, declared: list[str] | None
) -> tuple[np.ndarray, Task, tuple[str, ...]]:
    """Map raw labels to class ids (or floats for regression), inferring the task."""
    if raw.dtype.kind in "fc" and not np.isfinite(raw.astype("float64")).all():
        n = int((~np.isfinite(raw.astype("float64"))).sum())
        raise _fail(where, f"{n} labels are NaN or inf; expected a label on every row")
    if raw.dtype.kind == "O" and any(v is None or v != v for v in raw):  # None or NaN
        n = sum(1 for v in raw if v is None or v != v)
        raise _fail(where, f"{n} labels are missing; expected a label on every row")
    if task == "regression" or (
        task == "auto"
        and declared is None
        and raw.dtype.kind == "f"
        and not np.allclose(raw, np.round(raw))
    ):
        return raw.astype("float32"), "regression", ()
    # Each distinct value is named once; rows keep only their index into those (a
    # Python string per row would be about 85 bytes a row, 0.34 GB at 4M rows).
    try:
        values, inverse = np.unique(raw, return_inverse=True)
    except TypeError:  # Python objects of mixed types do not sort: compare their names
        values, inverse = np.unique([_label_name(v) for v in raw.tolist()], return_inverse=True)
    text = [_label_name(v) for v in values.tolist()]
    names = sorted(set(text), key=lambda v: (0, int(v)) if v.lstrip("-").isdigit() else (1, v))
    if declared is not None:
        unknown = sorted(set(text) - set(declared))
        if unknown:
            raise _fail(
                where,
                f"labels {unknown[:5]} are not among the declared classes {declared}",
            )
        names = list(declared)
    if len(names) < 2:
        raise _fail(where, f"found {len(names)} class ({names}); expected at least 2 classes")
    ids = {name: i for i, name in enumerate(names)}
    y = np.array([ids[v] for v in text], dtype="int64")[np.ravel(inverse)]
    inferred: Task = "binary" if len(names) == 2 else "multiclass"
    if task not in ("auto", "regression"):
        inferred = task  # type: ignore[assignment]
    return y, inferred, tuple(names)


# --------------------------------------------------------------- built-ins
def load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits, pixel values 0..16, as (8, 8, 1)."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x, y = bunch.images.astype("float32")[..., None], bunch.target.astype("int64")
    return Dataset(
        y=y,
        task="multiclass",
        kind="image",
        class_names=tuple(str(c) for c in bunch.target_names),
        source="sklearn.datasets.load_digits",
        reader=ArrayReader(x),
        input_shape=(8, 8, 1),
        keys=identity.hash_rows(x, y),
    )


def load_breast_cancer() -> Dataset:
    """scikit-learn's Wisconsin breast-cancer table: 569 rows, 30 features, 2 classes."""
    from sklearn.datasets import load_breast_cancer as sk_bc

    bunch = sk_bc()
    x, y = bunch.data.astype("float32"), bunch.target.astype("int64")
    return Dataset(
        y=y,
        task="binary",
        kind="tabular",
        class_names=tuple(str(c) for c in bunch.target_names),
        source="sklearn.datasets.load_breast_cancer",
        reader=ArrayReader(x),
        input_shape=(int(x.shape[1]),),
        feature_names=tuple(str(c) for c in bunch.feature_names),
        keys=identity.hash_rows(x, y),
    )


def _window_count(n: int, *, window: int, horizon: int) -> int:
    count = n - window - horizon + 1
    if count < 1:
        raise UserError(
            f"data.window: received {window} (+ horizon {horizon}) for a series of "
            f"{n} values; expected window + horizon <= {n}"
        )
    return count


def windowed(series: np.ndarray, *, window: int, horizon: int, source: str) -> Dataset:
    """Sliding windows over a 1-D series: row ``i`` is ``s[i:i+window]``, ``y[i]`` the
    next ``horizon`` values; only the series is kept in memory."""
    series = np.asarray(series, dtype="float32")
    n = _window_count(len(series), window=window, horizon=horizon)
    y = series[np.arange(horizon)[None, :] + np.arange(n)[:, None] + window]
    reader = WindowReader(series, window, where=source)
    keys = np.concatenate(  # content keys, a block of windows at a time
        [
            identity.hash_rows(reader.window_array(rows), y[rows])
            for rows in np.array_split(np.arange(n), max(1, n // 65_536))
        ]
    )
    return Dataset(
        y=y,
        task="regression",
        kind="sequence",
        class_names=(),
        source=source,
        reader=reader,
        input_shape=(window, 1),
        ordered=True,
        keys=keys,
    )


def load_sunspots(window: int, horizon: int) -> Dataset:
    """statsmodels' yearly sunspot numbers 1700-2008 as windows -> next values (regression)."""
    from statsmodels.datasets import sunspots

    series = sunspots.load_pandas().data["SUNACTIVITY"].to_numpy("float32")
    return windowed(series, window=window, horizon=horizon, source="statsmodels.datasets.sunspots")


# ------------------------------------------------------------------- files
def _check_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise _fail(str(path), f"{what} file not found")
    if path.stat().st_size == 0:
        raise _fail(str(path), "file is empty; expected a header and at least one row")


def _table_head(cfg: Any) -> Any:
    """The first rows of a CSV / the schema of a Parquet file, as an empty-ish frame."""
    import pandas as pd

    path = Path(cfg.path)
    _check_file(path, cfg.source)
    try:
        if cfg.source == "csv":
            import csv

            with open(path, newline="", encoding="utf-8") as f:
                names = next(csv.reader(f), [])
            head = pd.read_csv(path, nrows=1000)
        else:
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            names = list(pf.schema_arrow.names)
            if pf.metadata.num_rows == 0:
                head = pf.schema_arrow.empty_table().to_pandas()
            else:
                head = next(pf.iter_batches(batch_size=1000)).to_pandas()
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        # (UnicodeDecodeError is a ValueError; pyarrow's errors are too.)
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _fail(str(path), f"cannot read as {cfg.source}: {message}") from None
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise _fail(
            str(path),
            f"has duplicate column names {duplicated}; expected each column name once "
            "(a repeated label column would become a feature)",
        )
    return head


# Bytes per block of the streaming CSV reader (the index pass reads one at a time).
CSV_BLOCK_BYTES = 4 << 20


def _csv_columns(path: Path, columns: list[str]):
    """``columns`` of a CSV as a pyarrow Table, read block by block.

    `pyarrow.csv.read_csv` holds every block of the file at once (measured: 2.8 GB of
    Arrow memory for a 2.2 GB file, most of it still resident afterwards); the
    streaming reader holds one block. It fixes each column's type from the first
    block, so a column whose values change type later (numbers, then words) is read
    again by `read_csv`, which infers types over the whole file, as before.
    """
    import pyarrow as pa
    from pyarrow import csv

    convert = csv.ConvertOptions(include_columns=columns, strings_can_be_null=True)
    try:
        reader = csv.open_csv(
            path, read_options=csv.ReadOptions(block_size=CSV_BLOCK_BYTES), convert_options=convert
        )
        return pa.Table.from_batches(list(reader), schema=reader.schema)
    except pa.ArrowInvalid as err:
        if "conversion error" not in str(err):
            raise
    return csv.read_csv(path, convert_options=convert)


def _table_columns(cfg: Any, columns: list[str]) -> dict[str, np.ndarray]:
    """Whole ``columns`` of a CSV / Parquet file, read without the other columns."""
    import pyarrow as pa

    path = Path(cfg.path)
    try:
        if cfg.source == "csv":
            table = _csv_columns(path, columns)
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as err:
        raise _fail(str(path), f"cannot read as {cfg.source}: {str(err).splitlines()[0]}") from None
    return {c: table.column(c).to_pandas().to_numpy() for c in columns}


def _table_index(cfg: Any, head: Any, where: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The index pass of a table: the label / group / id columns and each row's key.

    With `data.id_column` only those columns are read (column projection) and the ids
    are the keys. Otherwise a row's key is its content: every column is read once, in
    record batches, and the index columns are taken from the same read.
    """
    import pyarrow as pa

    wanted = [c for c in (cfg.label, cfg.group, cfg.id_column) if c]
    if cfg.id_column:
        index = _table_columns(cfg, wanted)
        ids = index[cfg.id_column]
        missing = np.flatnonzero([identity.is_missing(v) for v in ids])
        if len(missing):
            raise _fail(
                f"{where}: column {cfg.id_column!r} (data.id_column)",
                f"{len(missing)} rows have no id (first row {int(missing[0])}); expected an "
                "id on every row",
            )
        return index, identity.hash_ids(ids)
    types = {str(c): "number" if head[c].dtype.kind in "biuf" else "text" for c in head.columns}
    reader = TableReader(Path(cfg.path), cfg.source, list(types), types=types)
    columns: dict[str, list[np.ndarray]] = {c: [] for c in wanted}
    keys = []
    try:
        for _, batch in reader.raw_batches():
            frame = batch.to_pandas()
            keys.append(identity.hash_table(frame))
            for c in wanted:
                # A copy: pandas keeps same-typed columns in one 2-D block, and a view
                # of one column would keep every batch's whole block alive (measured:
                # 2.0 GB resident after the pass over a 4M x 51 CSV instead of 0.3 GB).
                columns[c].append(frame[c].to_numpy().copy())
    except (pa.ArrowInvalid, OSError) as err:
        raise _fail(where, f"cannot read as {cfg.source}: {str(err).splitlines()[0]}") from None
    if not keys:
        raise _fail(where, "has a header but no rows; expected at least one row")
    return {c: np.concatenate(v) for c, v in columns.items()}, np.concatenate(keys)


def load_table(cfg: Any) -> Dataset:
    """CSV or Parquet: `label` column, `features` columns (default: all others), or `text`.

    Only the label (and group) columns are read here, by column projection; feature
    and text columns are read in record batches as training consumes them.
    """
    head = _table_head(cfg)
    where = str(cfg.path)
    if len(head) == 0:
        raise _fail(where, "has a header but no rows; expected at least one row")
    columns = [str(c) for c in head.columns]
    reserved = [c for c in (cfg.label, cfg.text, cfg.group, cfg.id_column) if c]
    wanted = list(cfg.features) if cfg.features else []
    missing = [c for c in [*reserved, *wanted] if c not in columns]
    if missing:
        raise _fail(where, f"missing columns {missing}; the file has {columns}")
    if cfg.features:
        extra = [c for c in columns if c not in wanted and c not in reserved]
        if extra:
            raise _fail(
                where,
                f"unexpected columns {extra}; expected only {wanted + reserved} "
                "(list them in data.features or drop them)",
            )
    label_where = f"{where}: column {cfg.label!r}"
    index, keys = _table_index(cfg, head, where)
    groups = index[cfg.group].astype(str) if cfg.group else None
    if cfg.window:
        series = index[cfg.label]
        if series.dtype.kind not in "if":
            raise _fail(
                label_where, f"has dtype {series.dtype}; expected numbers for a time series"
            )
        values = series.astype("float64")
        _check_finite(values, label_where, "the series")
        return windowed(
            values, window=cfg.window, horizon=cfg.horizon, source=f"{cfg.source}:{where}"
        )

    y, task, names = _encode_labels(
        index[cfg.label], where=label_where, task=cfg.task, declared=cfg.classes
    )
    rows = len(y)
    if cfg.text:
        reader = TableReader(Path(cfg.path), cfg.source, [cfg.text], text=True, rows_total=rows)
        return Dataset(
            y=y,
            task=task,
            kind="text",
            class_names=names,
            source=f"{cfg.source}:{where}",
            reader=reader,
            input_shape=(),
            groups=groups,
            keys=keys,
        )
    feature_cols = wanted or [c for c in columns if c not in reserved]
    if not feature_cols:
        raise _fail(where, f"has no feature columns besides {reserved}")
    for col in feature_cols:
        dtype = head[col].dtype
        if dtype.kind not in "biuf":
            sample = head[col].dropna().astype(str).head(1).tolist()
            raise _fail(
                f"{where}: column {col!r}",
                f"has dtype {dtype} (e.g. {sample[0]!r}); expected numbers"
                if sample
                else f"has dtype {dtype}; expected numbers",
            )
    return Dataset(
        y=y,
        task=task,
        kind="tabular",
        class_names=names,
        source=f"{cfg.source}:{where}",
        reader=TableReader(Path(cfg.path), cfg.source, feature_cols, rows_total=rows),
        input_shape=(len(feature_cols),),
        groups=groups,
        feature_names=tuple(feature_cols),
        keys=keys,
    )


def load_npz(cfg: Any) -> Dataset:
    """NumPy ``.npz`` with arrays ``x`` and ``y`` (names settable via features[0]/label).

    An ``.npz`` is a zip of whole arrays and cannot be read by row: it is held in
    memory (for data larger than memory use tfrecord, parquet or csv).
    """
    path = Path(cfg.path)
    if not path.is_file():
        raise _fail(str(path), "npz file not found")
    x_key = cfg.features[0] if cfg.features else "x"
    y_key = cfg.label or "y"
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise ValueError("a single .npy array, not an .npz archive")
            missing = [k for k in (x_key, y_key) if k not in archive.files]
            if missing:
                raise _fail(str(path), f"missing arrays {missing}; the file has {archive.files}")
            x, raw = archive[x_key], archive[y_key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _fail(str(path), f"cannot read as .npz: {message}") from None
    if x.ndim < 2:
        raise _fail(
            f"{path}: array {x_key!r}",
            f"has shape {x.shape}; expected (rows, features...) with at least 2 dimensions",
        )
    if len(x) == 0:
        raise _fail(str(path), "has 0 rows; expected at least one")
    if len(x) != len(raw):
        raise _fail(str(path), f"{x_key!r} has {len(x)} rows but {y_key!r} has {len(raw)}")
    if x.dtype.kind not in "biuf":
        raise _fail(f"{path}: array {x_key!r}", f"has dtype {x.dtype}; expected numbers")
    where = f"{path}: array {y_key!r}"
    if cfg.task == "multilabel" or raw.ndim == 2 and cfg.task != "regression":
        if not np.isin(raw, (0, 1)).all():
            raise _fail(where, "multilabel targets must be 0 or 1")
        names = tuple(cfg.classes or [str(i) for i in range(raw.shape[1])])
        y, task = raw.astype("float32"), "multilabel"
    else:
        y, task, names = _encode_labels(raw, where=where, task=cfg.task, declared=cfg.classes)
    kind: Kind = "image" if x.ndim == 4 else "sequence" if x.ndim == 3 else "tabular"
    return Dataset(
        y=y,
        task=task,  # type: ignore[arg-type]
        kind=kind,
        class_names=names,
        source=f"npz:{path}",
        reader=ArrayReader(x.astype("float32"), where=f"{path}: array {x_key!r}"),
        input_shape=tuple(int(d) for d in x.shape[1:]),
        keys=identity.hash_rows(x, raw),
    )


def _class_folders(root: Path, what: str) -> list[Path]:
    if not root.is_dir():
        raise _fail(str(root), f"{what} folder not found")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise _fail(
            str(root),
            f"has {len(folders)} class sub-folders; expected one sub-folder per class (at least 2)",
        )
    return folders


def _list_class_folders(
    root: Path, what: str, suffixes: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Paths of every file with one of ``suffixes`` in each class sub-folder of ``root``,
    their class ids and the class names (the folder names). Nothing is opened."""
    paths: list[str] = []
    labels: list[int] = []
    folders = _class_folders(root, what)
    for class_id, folder in enumerate(folders):
        files = sorted(
            e.path
            for e in os.scandir(folder)
            if e.is_file() and os.path.splitext(e.name)[1].lower() in suffixes
        )
        if not files:
            raise _fail(str(folder), f"has no {what} files ({', '.join(suffixes)})")
        paths.extend(files)
        labels.extend([class_id] * len(files))
    return (
        np.array(paths, dtype=object),
        np.array(labels, dtype="int64"),
        tuple(p.name for p in folders),
    )


def _folder_dataset(cfg: Any, what: str, suffixes: tuple[str, ...], kind: Kind, decode: Any, shape):
    root = Path(cfg.path)
    paths, y, names = _list_class_folders(root, what, suffixes)
    task: Task = "binary" if len(names) == 2 else "multiclass"
    return Dataset(
        y=y,
        task=task,
        kind=kind,
        class_names=names,
        source=f"{cfg.source}:{root}",
        reader=FileReader(paths, root, decode),
        input_shape=shape,
        keys=identity.hash_paths(paths, root),
    )


def load_image_dir(cfg: Any) -> Dataset:
    """One sub-folder per class of images; decoded (and resized) as they are read."""
    channels = 1 if cfg.color_mode == "grayscale" else 3
    size = tuple(int(v) for v in cfg.image_size)
    decode = decode_image_fn(size, channels)  # type: ignore[arg-type]
    return _folder_dataset(cfg, "image", IMAGE_SUFFIXES, "image", decode, (*size, channels))


def load_text_dir(cfg: Any) -> Dataset:
    """One sub-folder per class of ``.txt`` files (one example per file)."""
    return _folder_dataset(cfg, "text", (".txt",), "text", None, ())


def load_tfrecord(cfg: Any) -> Dataset:
    """TFRecord files of `tf.train.Example` parsed with the declared `feature_spec`.

    The index pass parses only the label feature (batched, in tf.data); a feature
    of dtype ``image`` holds encoded PNG/JPEG bytes, decoded to `image_size`.
    """
    import tensorflow as tf

    path = Path(cfg.path)
    files = sorted(path.glob("*.tfrecord*")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise _fail(str(path), "TFRecord file(s) not found")
    spec = cfg.feature_spec
    features = [n for n in spec if n != cfg.label]
    images = [n for n in features if spec[n].dtype == "image"]
    if len(images) > 1 or (images and len(features) > 1):
        raise _fail(
            str(path),
            f"data.feature_spec has features {features}; an `image` feature must be the only "
            "feature besides the label",
        )
    dtypes = {"float32": tf.float32, "int64": tf.int64, "string": tf.string}
    label_spec = spec[cfg.label]
    if label_spec.dtype == "image":
        raise _fail(
            str(path), f"label {cfg.label!r} has dtype 'image'; expected int64, float32 or string"
        )
    parse = {cfg.label: tf.io.FixedLenFeature(label_spec.shape, dtypes[label_spec.dtype])}
    counts, chunks = [], []
    try:
        for file in files:
            ds = tf.data.TFRecordDataset(str(file)).batch(4096)
            ds = ds.map(lambda r: tf.io.parse_example(r, parse)[cfg.label])
            got = [np.asarray(b) for b in ds.as_numpy_iterator()]
            counts.append(int(sum(len(b) for b in got)))
            chunks.extend(got)
    except tf.errors.OpError as err:
        first = str(err.message).splitlines()[0]
        raise _fail(str(path), f"does not match data.feature_spec: {first}") from None
    if not sum(counts):
        raise _fail(str(path), "has 0 records; expected at least one")
    reader = TFRecordReader(
        [str(f) for f in files],
        counts,
        dict(spec),
        cfg.label,
        image_size=tuple(int(v) for v in cfg.image_size),  # type: ignore[arg-type]
        channels=1 if cfg.color_mode == "grayscale" else 3,
    )
    try:  # the first record, fully parsed: a spec that does not fit fails here
        first = next(iter(tf.data.TFRecordDataset(reader.files[:1]).take(1)))
        reader.parse_fn()(first)
    except tf.errors.OpError as err:
        message = str(err.message).splitlines()[0]
        raise _fail(str(path), f"does not match data.feature_spec: {message}") from None
    labels = np.concatenate([np.ravel(c) if c.ndim > 1 and c.shape[1] == 1 else c for c in chunks])
    raw = (
        np.array([v.decode() if isinstance(v, bytes) else v for v in labels])
        if labels.dtype == object
        else labels
    )
    y, task, names = _encode_labels(
        raw, where=f"{path}: feature {cfg.label!r}", task=cfg.task, declared=cfg.classes
    )
    if images:
        shape: tuple[int, ...] = (*reader.image_size, reader.channels)
    else:
        shape = (int(sum(int(np.prod(spec[n].shape or [1])) for n in features)),)
    return Dataset(
        y=y,
        task=task,
        kind="image" if images else "tabular",
        class_names=names,
        source=f"tfrecord:{path}",
        reader=reader,
        input_shape=shape,
        feature_names=() if images else tuple(features),
        keys=identity.hash_records(files, counts, path if path.is_dir() else path.parent),
    )


def load(cfg: Any) -> Dataset:
    """Load and validate the data named by a `DataConfig`."""
    source = cfg.source
    if source == "digits":
        data = load_digits()
    elif source == "breast_cancer":
        data = load_breast_cancer()
    elif source == "sunspots":
        data = load_sunspots(cfg.window or 12, cfg.horizon)
    elif source in TABLE_SOURCES:
        data = load_table(cfg)
    elif source == "npz":
        data = load_npz(cfg)
    elif source == "image_dir":
        data = load_image_dir(cfg)
    elif source == "text_dir":
        data = load_text_dir(cfg)
    elif source == "tfrecord":
        data = load_tfrecord(cfg)
    else:  # pragma: no cover - the config Literal forbids it
        raise ValueError(source)
    if cfg.task == "reconstruction":
        if data.kind != "image":
            raise UserError(
                f"Invalid value for `data.task`: received 'reconstruction'; source {source!r} "
                f"has {data.kind} features; reconstruction needs images (digits, image_dir, "
                "npz or tfrecord of shape (rows, height, width, channels))."
            )
        data = replace(data, task="reconstruction")
    elif cfg.task != "auto" and data.task != cfg.task and source in BUILTIN_SOURCES:
        raise UserError(
            f"Invalid value for `data.task`: received {cfg.task!r}; source {source!r} is {data.task!r}"
        )
    return replace(data, meta={**data.meta, "rows": len(data)}, memo={})
