"""Data sources: turn the `data` config into validated in-memory arrays.

Every source ends in the same `Dataset`: features ``x`` (float32 images, tabular
rows or sequences; strings for text), labels ``y`` and what they mean. Problems
with the user's data (missing columns, NaN, unknown labels, undecodable images,
empty files) are `UserError`s naming the file, column or rows and what was
expected, raised before any training starts.

Built-in sets ship inside installed packages (scikit-learn, statsmodels), so
nothing is downloaded, which matters on air-gapped clusters.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from service.data import identity
from service.errors import UserError

Task = Literal["multiclass", "binary", "multilabel", "regression", "reconstruction"]
Kind = Literal["image", "tabular", "sequence", "text"]
INPUT_NAMES = {"image": "image", "tabular": "features", "sequence": "sequence", "text": "text"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass(frozen=True)
class Dataset:
    """In-memory examples.

    Attributes:
        x: features, ``(rows, *input_shape)`` float32 in raw units (images
            ``(rows, H, W, C)``, tables ``(rows, features)``, sequences
            ``(rows, steps, channels)``), or ``(rows,)`` strings for text.
        y: ``(rows,)`` int class ids (classification), ``(rows, horizon)`` or
            ``(rows,)`` float targets (regression), ``(rows, classes)`` 0/1 (multilabel);
            for ``reconstruction`` the source's labels, used only to stratify and colour.
        task: what the model learns (`targets` are what it fits).
        kind: what the features are; picks preprocessing and the input name.
        class_names: one name per class id (empty for regression).
        source: human-readable description for the run record.
        groups: optional ``(rows,)`` group ids (no group spans two split parts).
        ordered: rows are in time order (split without shuffling).
        feature_names: column names of tabular features.
        keys: ``(rows,)`` uint64 stable row identities (`service.data.identity`): the
            split places rows by them and models record the keys they fitted on.
    """

    x: np.ndarray
    y: np.ndarray
    task: Task
    kind: Kind
    class_names: tuple[str, ...]
    source: str
    groups: np.ndarray | None = None
    ordered: bool = False
    feature_names: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    keys: np.ndarray | None = None

    @property
    def input_name(self) -> str:
        return INPUT_NAMES[self.kind]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) or None

    @property
    def targets(self) -> np.ndarray:
        """What the model is fitted to: ``y``, or ``x`` itself for ``reconstruction``."""
        return self.x if self.task == "reconstruction" else self.y

    @property
    def output_size(self) -> int | None:
        """Classes for classifiers, target width for regression, None for autoencoders."""
        if self.task == "reconstruction":
            return None
        if self.task == "regression":
            return int(self.y.shape[1]) if self.y.ndim == 2 else 1
        return self.num_classes

    def __len__(self) -> int:
        return int(self.x.shape[0])


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
    text = [str(int(v)) if isinstance(v, float) and v == int(v) else str(v) for v in raw.tolist()]
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
    y = np.array([ids[v] for v in text], dtype="int64")
    del text
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
        x=x,
        y=y,
        task="multiclass",
        kind="image",
        class_names=tuple(str(c) for c in bunch.target_names),
        source="sklearn.datasets.load_digits",
        keys=identity.hash_rows(x, y),
    )


def load_breast_cancer() -> Dataset:
    """scikit-learn's Wisconsin breast-cancer table: 569 rows, 30 features, 2 classes."""
    from sklearn.datasets import load_breast_cancer as sk_bc

    bunch = sk_bc()
    x, y = bunch.data.astype("float32"), bunch.target.astype("int64")
    return Dataset(
        x=x,
        y=y,
        task="binary",
        kind="tabular",
        class_names=tuple(str(c) for c in bunch.target_names),
        source="sklearn.datasets.load_breast_cancer",
        feature_names=tuple(str(c) for c in bunch.feature_names),
        keys=identity.hash_rows(x, y),
    )


def windows(series: np.ndarray, *, window: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows over a 1-D series: ``x[i] = s[i:i+window]``, ``y[i]`` the next ``horizon``."""
    n = len(series) - window - horizon + 1
    if n < 1:
        raise UserError(
            f"data.window: received {window} (+ horizon {horizon}) for a series of "
            f"{len(series)} values; expected window + horizon <= {len(series)}"
        )
    idx = np.arange(window)[None, :] + np.arange(n)[:, None]
    x = series[idx][..., None].astype("float32")
    y = series[np.arange(horizon)[None, :] + np.arange(n)[:, None] + window].astype("float32")
    return x, y


def load_sunspots(window: int, horizon: int) -> Dataset:
    """statsmodels' yearly sunspot numbers 1700-2008 as windows -> next values (regression)."""
    from statsmodels.datasets import sunspots

    series = sunspots.load_pandas().data["SUNACTIVITY"].to_numpy("float32")
    x, y = windows(series, window=window, horizon=horizon)
    return Dataset(
        x=x,
        y=y,
        task="regression",
        kind="sequence",
        class_names=(),
        source="statsmodels.datasets.sunspots",
        ordered=True,
        keys=identity.hash_rows(x, y),
    )


# ------------------------------------------------------------------- files
def _read_table(cfg: Any) -> Any:
    import pandas as pd

    path = Path(cfg.path)
    if not path.is_file():
        raise _fail(str(path), f"{cfg.source} file not found")
    if path.stat().st_size == 0:
        raise _fail(str(path), "file is empty; expected a header and at least one row")
    try:
        if cfg.source == "csv":
            frame = pd.read_csv(path)
        else:
            frame = pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _fail(str(path), f"cannot read as {cfg.source}: {message}") from None
    if len(frame) == 0:
        raise _fail(str(path), "has a header but no rows; expected at least one row")
    return frame


def load_table(cfg: Any) -> Dataset:
    """CSV or Parquet: `label` column, `features` columns (default: all others), or `text`."""
    frame = _read_table(cfg)
    where = str(cfg.path)
    columns = [str(c) for c in frame.columns]
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
    groups = frame[cfg.group].astype(str).to_numpy() if cfg.group else None
    if cfg.id_column:
        ids = frame[cfg.id_column]
        if ids.isna().any():
            rows = np.flatnonzero(ids.isna().to_numpy())
            raise _fail(
                f"{where}: column {cfg.id_column!r} (data.id_column)",
                f"{len(rows)} rows have no id (first row {int(rows[0])}); expected an id on every row",
            )
        keys = identity.hash_ids(ids.to_numpy())
    else:
        keys = identity.hash_table(frame)
    if cfg.window:
        series = frame[cfg.label]
        if series.dtype.kind not in "if":
            raise _fail(
                label_where, f"has dtype {series.dtype}; expected numbers for a time series"
            )
        values = series.to_numpy("float64")
        _check_finite(values, label_where, "the series")
        x, y = windows(values, window=cfg.window, horizon=cfg.horizon)
        return Dataset(
            x,
            y,
            "regression",
            "sequence",
            (),
            f"{cfg.source}:{where}",
            ordered=True,
            keys=identity.hash_rows(x, y),
        )

    y, task, names = _encode_labels(
        frame[cfg.label].to_numpy(), where=label_where, task=cfg.task, declared=cfg.classes
    )
    if cfg.text:
        text = frame[cfg.text]
        if text.isna().any():
            rows = np.flatnonzero(text.isna().to_numpy())
            raise _fail(
                f"{where}: column {cfg.text!r}",
                f"{len(rows)} rows have no text (first row {int(rows[0])}); expected a string",
            )
        return Dataset(
            text.astype(str).to_numpy(dtype=object),
            y,
            task,
            "text",
            names,
            f"{cfg.source}:{where}",
            groups=groups,
            keys=keys,
        )
    feature_cols = wanted or [c for c in columns if c not in reserved]
    if not feature_cols:
        raise _fail(where, f"has no feature columns besides {reserved}")
    for col in feature_cols:
        dtype = frame[col].dtype
        if dtype.kind not in "biuf":
            sample = frame[col].dropna().astype(str).head(1).tolist()
            raise _fail(
                f"{where}: column {col!r}",
                f"has dtype {dtype} (e.g. {sample[0]!r}); expected numbers"
                if sample
                else f"has dtype {dtype}; expected numbers",
            )
    x = frame[feature_cols].to_numpy("float64")
    _check_finite(
        x, where, f"feature columns {feature_cols[:3]}{'...' if len(feature_cols) > 3 else ''}"
    )
    return Dataset(
        x.astype("float32"),
        y,
        task,
        "tabular",
        names,
        f"{cfg.source}:{where}",
        groups=groups,
        feature_names=tuple(feature_cols),
        keys=keys,
    )


def load_npz(cfg: Any) -> Dataset:
    """NumPy ``.npz`` with arrays ``x`` and ``y`` (names settable via features[0]/label)."""
    path = Path(cfg.path)
    if not path.is_file():
        raise _fail(str(path), "npz file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise _fail(str(path), f"cannot read as .npz: {err}") from None
    x_key = cfg.features[0] if cfg.features else "x"
    y_key = cfg.label or "y"
    missing = [k for k in (x_key, y_key) if k not in archive.files]
    if missing:
        raise _fail(str(path), f"missing arrays {missing}; the file has {archive.files}")
    x, raw = archive[x_key], archive[y_key]
    if len(x) == 0:
        raise _fail(str(path), "has 0 rows; expected at least one")
    if len(x) != len(raw):
        raise _fail(str(path), f"{x_key!r} has {len(x)} rows but {y_key!r} has {len(raw)}")
    if x.dtype.kind not in "biuf":
        raise _fail(f"{path}: array {x_key!r}", f"has dtype {x.dtype}; expected numbers")
    _check_finite(x.astype("float64"), str(path), f"array {x_key!r}")
    where = f"{path}: array {y_key!r}"
    if cfg.task == "multilabel" or raw.ndim == 2 and cfg.task != "regression":
        if not np.isin(raw, (0, 1)).all():
            raise _fail(where, "multilabel targets must be 0 or 1")
        names = tuple(cfg.classes or [str(i) for i in range(raw.shape[1])])
        y, task = raw.astype("float32"), "multilabel"
    else:
        y, task, names = _encode_labels(raw, where=where, task=cfg.task, declared=cfg.classes)
    kind: Kind = "image" if x.ndim == 4 else "sequence" if x.ndim == 3 else "tabular"
    keys = identity.hash_rows(x, raw)
    return Dataset(x.astype("float32"), y, task, kind, names, f"npz:{path}", keys=keys)  # type: ignore[arg-type]


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


def _read_class_folders(
    root: Path, what: str, suffixes: tuple[str, ...], read: Any
) -> tuple[list[Any], np.ndarray, tuple[str, ...], np.ndarray]:
    """Read every file with one of ``suffixes`` in each class sub-folder of ``root``.

    Returns the read items, their class ids, the class names (the folder names) and
    the items' keys (their paths relative to ``root``).
    """
    items, labels, read_files = [], [], []
    folders = _class_folders(root, what)
    for class_id, folder in enumerate(folders):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)
        if not files:
            raise _fail(str(folder), f"has no {what} files ({', '.join(suffixes)})")
        for file in files:
            items.append(read(file))
            labels.append(class_id)
            read_files.append(file)
    keys = identity.hash_paths(read_files, root)
    return items, np.array(labels, dtype="int64"), tuple(p.name for p in folders), keys


def _folder_dataset(
    x: np.ndarray, y: np.ndarray, names: tuple[str, ...], kind: Kind, source: str, keys: np.ndarray
):
    task: Task = "binary" if len(names) == 2 else "multiclass"
    return Dataset(x, y, task, kind, names, source, keys=keys)


def load_image_dir(cfg: Any) -> Dataset:
    """One sub-folder per class of images, decoded with Keras' image utilities and resized."""
    import keras

    def read(file: Path) -> np.ndarray:
        try:
            img = keras.utils.load_img(
                file, color_mode=cfg.color_mode, target_size=tuple(cfg.image_size)
            )
        except Exception as err:  # PIL raises many types for broken files
            raise _fail(
                str(file), f"cannot be decoded as an image ({type(err).__name__})"
            ) from None
        return keras.utils.img_to_array(img, dtype="float32")

    root = Path(cfg.path)
    images, y, names, keys = _read_class_folders(root, "image", IMAGE_SUFFIXES, read)
    return _folder_dataset(np.stack(images), y, names, "image", f"image_dir:{root}", keys)


def load_text_dir(cfg: Any) -> Dataset:
    """One sub-folder per class of ``.txt`` files (one example per file)."""

    def read(file: Path) -> str:
        try:
            return file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise _fail(str(file), "is not UTF-8 text; expected UTF-8 encoded .txt") from None

    root = Path(cfg.path)
    texts, y, names, keys = _read_class_folders(root, "text", (".txt",), read)
    texts_array = np.array(texts, dtype=object)
    return _folder_dataset(texts_array, y, names, "text", f"text_dir:{root}", keys)


def load_tfrecord(cfg: Any) -> Dataset:
    """TFRecord files of `tf.train.Example` parsed with the declared `feature_spec`."""
    import tensorflow as tf

    path = Path(cfg.path)
    files = sorted(path.glob("*.tfrecord*")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise _fail(str(path), "TFRecord file(s) not found")
    spec = {}
    for name, feat in cfg.feature_spec.items():
        dtype = {"float32": tf.float32, "int64": tf.int64, "string": tf.string}[feat.dtype]
        spec[name] = tf.io.FixedLenFeature(feat.shape, dtype)
    rows: dict[str, list] = {name: [] for name in spec}
    counts = []  # records per file: a record's key is "file:number"
    try:
        for file in files:
            counts.append(0)
            for record in tf.data.TFRecordDataset(str(file)):
                parsed = tf.io.parse_single_example(record, spec)
                for name in spec:
                    rows[name].append(parsed[name].numpy())
                counts[-1] += 1
    except tf.errors.OpError as err:
        first = str(err.message).splitlines()[0]
        raise _fail(str(path), f"does not match data.feature_spec: {first}") from None
    if not rows[cfg.label]:
        raise _fail(str(path), "has 0 records; expected at least one")
    feature_names = [n for n in spec if n != cfg.label]
    x = np.stack(
        [
            np.concatenate([np.ravel(rows[n][i]) for n in feature_names])
            for i in range(len(rows[cfg.label]))
        ]
    )
    _check_finite(x.astype("float64"), str(path), "features")
    raw = np.array([v.decode() if isinstance(v, bytes) else v for v in np.ravel(rows[cfg.label])])
    y, task, names = _encode_labels(
        raw, where=f"{path}: feature {cfg.label!r}", task=cfg.task, declared=cfg.classes
    )
    return Dataset(
        x.astype("float32"),
        y,
        task,
        "tabular",
        names,
        f"tfrecord:{path}",
        feature_names=tuple(feature_names),
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
    elif source in ("csv", "parquet"):
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
    elif (
        cfg.task != "auto"
        and data.task != cfg.task
        and source in ("digits", "breast_cancer", "sunspots")
    ):
        raise UserError(
            f"Invalid value for `data.task`: received {cfg.task!r}; source {source!r} is {data.task!r}"
        )
    return replace(data, meta={**data.meta, "rows": len(data)})
