"""Property test: malformed data files end in a `UserError` (exit 2) or load, nothing else.

Hypothesis builds CSV / Parquet / NPZ / image-folder / TFRecord inputs with faults
mixed in (random bytes, truncation, duplicate or missing columns, ragged rows, text
in number columns, NaN, empty files, wrong array types, odd image modes, records
that do not match the spec), then runs what `kts run` runs before training: the
index pass and the checking pass over every row, and reads every row through the
training stream. Any exception other than `UserError` is a traceback a user would
see; `UserError` messages must be one line.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.config import DataConfig
from service.errors import UserError

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
JUNK = st.binary(min_size=0, max_size=64)


def _run_like_kts(cfg: DataConfig) -> None:
    """Index, check every row, stream every row: what happens before the first step."""
    from service.data import sources
    from service.data.scan import bad_rows_error, scan
    from service.data.stream import part_dataset

    data = sources.load(cfg)
    rows = np.arange(len(data))
    found = scan(data, {"train": rows, "validation": rows[:0]}, validate="full", fit_moments=True)
    if found.bad:
        raise bad_rows_error(data, found.bad)
    for _ in part_dataset(data, rows, data_cfg=cfg, batch_size=7, training=True, seed=0):
        pass


def _check(cfg: DataConfig) -> None:
    message = ""
    try:
        _run_like_kts(cfg)
    except UserError as err:
        message = str(err)
    assert "\n" not in message


# ------------------------------------------------------------------ tables
@st.composite
def csv_bytes(draw):
    header = draw(
        st.sampled_from([["a", "b", "label"], ["a", "label", "label"], ["label"], ["a", "b"], []])
    )
    lines = [",".join(header)]
    cell = st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(-5, 5).map(str),
        st.sampled_from(["", "x", '"q', "cat", "dog", "1e999", "nan", "  "]),
    )
    for _ in range(draw(st.integers(0, 12))):
        width = len(header) + draw(st.sampled_from([0, 0, 0, -1, 1]))
        lines.append(",".join(draw(cell) for _ in range(max(width, 0))))
    body = "\n".join(lines).encode()
    fault = draw(st.sampled_from(["none", "junk", "truncate", "latin1"]))
    if fault == "junk":
        body += draw(JUNK)
    elif fault == "truncate":
        body = body[: draw(st.integers(0, len(body)))]
    elif fault == "latin1":
        body = body.replace(b"cat", "cät".encode("latin-1"))
    return body


@SETTINGS
@given(body=csv_bytes(), text=st.booleans())
def test_malformed_csv_is_a_user_error_or_loads(tmp_path, body, text):
    path = tmp_path / "d.csv"
    path.write_bytes(body)
    extra = {"text": "a"} if text else {}
    _check(
        DataConfig.model_validate({"source": "csv", "path": str(path), "label": "label", **extra})
    )


@SETTINGS
@given(
    n=st.integers(0, 12),
    kind=st.sampled_from(["float", "string", "null", "mixed"]),
    junk=st.booleans(),
)
def test_malformed_parquet_is_a_user_error_or_loads(tmp_path, n, kind, junk):
    import pandas as pd

    path = tmp_path / "d.parquet"
    values = {
        "float": np.arange(n, dtype="float64"),
        "string": np.array([f"s{i}" for i in range(n)], dtype=object),
        "null": np.array([None] * n, dtype=object),
        "mixed": np.array([np.nan if i % 3 else i for i in range(n)], dtype="float64"),
    }[kind]
    pd.DataFrame({"a": values, "label": np.arange(n) % 2}).to_parquet(path)
    if junk:
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    _check(DataConfig.model_validate({"source": "parquet", "path": str(path), "label": "label"}))


# --------------------------------------------------------------------- npz
@SETTINGS
@given(
    x_kind=st.sampled_from(["ok", "nan", "strings", "object", "1d", "empty", "short"]),
    y_kind=st.sampled_from(["ok", "float", "strings", "one_class", "2d"]),
    junk=st.booleans(),
)
def test_malformed_npz_is_a_user_error_or_loads(tmp_path, x_kind, y_kind, junk):
    n = 10
    x = {
        "ok": np.ones((n, 3), "float32"),
        "nan": np.where(np.eye(n, 3) > 0, np.nan, 1.0),
        "strings": np.array([["a"] * 3] * n),
        "object": np.array([None] * n, dtype=object),
        "1d": np.arange(n, dtype="float32"),
        "empty": np.zeros((0, 3)),
        "short": np.ones((n - 1, 3)),
    }[x_kind]
    y = {
        "ok": np.arange(n) % 2,
        "float": np.linspace(0, 1, n),
        "strings": np.array(["a", "b"] * (n // 2)),
        "one_class": np.zeros(n),
        "2d": np.ones((n, 2)),
    }[y_kind]
    path = tmp_path / "d.npz"
    buffer = io.BytesIO()
    try:
        np.savez(buffer, x=x, y=y)
    except ValueError:
        buffer = io.BytesIO(b"not an npz")
    raw = buffer.getvalue()
    path.write_bytes(raw[: len(raw) // 2] if junk else raw)
    _check(DataConfig.model_validate({"source": "npz", "path": str(path)}))


# ------------------------------------------------------------------ images
def _png_bytes(mode: str, size: tuple[int, int]) -> bytes:
    from PIL import Image

    channels = {"L": 1, "RGB": 3, "RGBA": 4, "P": 1, "I;16": 1}[mode]
    shape = (size[1], size[0]) if channels == 1 else (size[1], size[0], channels)
    pixels = np.random.default_rng(0).integers(0, 255, shape, dtype="uint8")
    image = Image.fromarray(pixels.astype("uint16") if mode == "I;16" else pixels)
    if mode == "P":
        image = image.convert("P")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


IMAGE_FILE = st.one_of(
    st.tuples(
        st.sampled_from(["L", "RGB", "RGBA", "P", "I;16"]),
        st.tuples(st.integers(1, 12), st.integers(1, 12)),
        st.sampled_from(["ok", "truncate", "junk_tail", "empty"]),
    ),
    JUNK.map(lambda b: ("junk", b, "raw")),
)


@SETTINGS
@given(
    files=st.lists(IMAGE_FILE, min_size=1, max_size=5),
    classes=st.integers(1, 3),
    color=st.sampled_from(["rgb", "grayscale"]),
)
def test_malformed_image_folder_is_a_user_error_or_loads(tmp_path, files, classes, color):
    root = tmp_path / "img"
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    for i, (mode, size, fault) in enumerate(files):
        if fault == "raw":
            raw = size
        else:
            raw = _png_bytes(mode, size)
            raw = {
                "ok": raw,
                "truncate": raw[: len(raw) // 2],
                "junk_tail": raw + b"\x00junk",
                "empty": b"",
            }[fault]
        (root / f"c{i % classes}" / f"{i}.png").write_bytes(raw)
    cfg = {"source": "image_dir", "path": str(root), "image_size": [6, 6], "color_mode": color}
    _check(DataConfig.model_validate(cfg))


# ---------------------------------------------------------------- tfrecord
@SETTINGS
@given(
    records=st.lists(
        st.sampled_from(["ok", "no_label", "short", "junk_image", "string_label"]),
        min_size=1,
        max_size=6,
    ),
    truncate=st.booleans(),
    image=st.booleans(),
)
def test_malformed_tfrecord_is_a_user_error_or_loads(tmp_path, records, truncate, image):
    import tensorflow as tf

    def feature(values, kind):
        if kind == "bytes":
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        if kind == "int":
            return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    path = tmp_path / "d.tfrecord"
    png = _png_bytes("RGB", (4, 4))
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, kind in enumerate(records):
            features = {}
            if image:
                features["x"] = feature([b"junk" if kind == "junk_image" else png], "bytes")
            else:
                features["x"] = feature([1.0] if kind == "short" else [1.0, 2.0], "float")
            if kind == "string_label":
                features["label"] = feature([b"a"], "bytes")
            elif kind != "no_label":
                features["label"] = feature([i % 2], "int")
            example = tf.train.Example(features=tf.train.Features(feature=features))
            writer.write(example.SerializeToString())
    if truncate:
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) - 7])
    spec = {"x": {"dtype": "image"} if image else {"dtype": "float32", "shape": [2]}}
    cfg = {
        "source": "tfrecord",
        "path": str(path),
        "label": "label",
        "feature_spec": {**spec, "label": {"dtype": "int64"}},
        "image_size": [4, 4],
    }
    _check(DataConfig.model_validate(cfg))


def test_a_duplicate_label_column_is_refused_not_trained_on(tmp_path):
    from service.data import sources

    path = tmp_path / "d.csv"
    path.write_text("a,label,label\n1,0,0\n2,1,1\n3,0,0\n4,1,1\n")
    cfg = DataConfig.model_validate({"source": "csv", "path": str(path), "label": "label"})
    with pytest.raises(UserError, match=r"duplicate column names \['label'\]"):
        sources.load(cfg)


def test_an_echoed_value_is_cut_but_the_field_and_what_is_allowed_stay():
    from pipelines.cli import one_line

    value = "x" * 50_000
    line = one_line(f"data.csv: column 'a' has dtype object (e.g. '{value}'); expected numbers")
    assert len(line) <= 200
    assert line.startswith("data.csv: column 'a' has dtype object (e.g. 'xxx")
    assert line.endswith("xxx'); expected numbers")
    allowed = ", ".join(f"training.optimizer.option_{i}" for i in range(40))
    line = one_line(f"Unknown key `lr`: received 'lr'; expected one of {allowed}.")
    assert line.endswith("training.optimizer.option_39.")  # a long allowed list is kept
    assert len(one_line("y" * 10_000)) <= 2000
