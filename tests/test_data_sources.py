"""Data sources and validation: every fault is exit 2 with a line naming what is wrong."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from service.config import DataConfig
from service.data import sources
from service.errors import UserError
from tests.helpers import assert_user_error, kts


def _table(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "label": np.array(["cat", "dog"] * (n // 2)),
        }
    )


def _write(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def _png(path, size=(6, 6), value=128):
    from PIL import Image

    Image.fromarray(np.full((*size, 3), value, dtype="uint8")).save(path)


# Each fault: (name, builder of (data-config dict) in tmp_path, substrings of the message).
def _fault_table():
    def missing_column(tmp):
        return {
            "source": "csv",
            "path": _write(_table(), tmp / "d.csv"),
            "label": "label",
            "features": ["a", "zzz"],
        }, ["missing columns ['zzz']", "d.csv"]

    def extra_column(tmp):
        return {
            "source": "csv",
            "path": _write(_table(), tmp / "d.csv"),
            "label": "label",
            "features": ["a"],
        }, ["unexpected columns ['b']"]

    def wrong_dtype(tmp):
        frame = _table()
        frame["b"] = ["x"] * len(frame)
        return {"source": "csv", "path": _write(frame, tmp / "d.csv"), "label": "label"}, [
            "column 'b'",
            "expected numbers",
        ]

    def nan_feature(tmp):
        frame = _table()
        frame.loc[3, "a"] = np.nan
        return {"source": "csv", "path": _write(frame, tmp / "d.csv"), "label": "label"}, [
            "NaN or inf",
            "d.csv: row 3",
        ]

    def inf_feature(tmp):
        frame = _table()
        frame.loc[5, "b"] = np.inf
        return {"source": "csv", "path": _write(frame, tmp / "d.csv"), "label": "label"}, [
            "NaN or inf",
            "d.csv: row 5",
        ]

    def nan_label(tmp):
        frame = _table()
        frame["label"] = frame["label"].astype(object)
        frame.loc[2, "label"] = None
        return {"source": "csv", "path": _write(frame, tmp / "d.csv"), "label": "label"}, [
            "column 'label'",
            "labels are missing",
        ]

    def unknown_label(tmp):
        return {
            "source": "csv",
            "path": _write(_table(), tmp / "d.csv"),
            "label": "label",
            "classes": ["cat", "cow"],
        }, ["['dog']", "declared classes"]

    def empty_file(tmp):
        (tmp / "d.csv").write_text("")
        return {"source": "csv", "path": str(tmp / "d.csv"), "label": "label"}, [
            "d.csv",
            "file is empty",
        ]

    def header_only(tmp):
        (tmp / "d.csv").write_text("a,b,label\n")
        return {"source": "csv", "path": str(tmp / "d.csv"), "label": "label"}, ["no rows"]

    def missing_file(tmp):
        return {"source": "parquet", "path": str(tmp / "none.parquet"), "label": "label"}, [
            "none.parquet",
            "not found",
        ]

    def bad_image(tmp):
        for cls in ("a", "b"):
            (tmp / "img" / cls).mkdir(parents=True)
            _png(tmp / "img" / cls / "ok.png")
        (tmp / "img" / "b" / "broken.png").write_bytes(b"not an image at all")
        return {"source": "image_dir", "path": str(tmp / "img"), "image_size": [6, 6]}, [
            "broken.png",
            "cannot be decoded",
        ]

    def one_class_dir(tmp):
        (tmp / "img" / "only").mkdir(parents=True)
        _png(tmp / "img" / "only" / "x.png")
        return {"source": "image_dir", "path": str(tmp / "img")}, ["1 class sub-folders"]

    def npz_mismatch(tmp):
        np.savez(tmp / "d.npz", x=np.zeros((5, 3)), y=np.zeros(4))
        return {"source": "npz", "path": str(tmp / "d.npz")}, ["has 5 rows", "has 4"]

    return [
        missing_column,
        extra_column,
        wrong_dtype,
        nan_feature,
        inf_feature,
        nan_label,
        unknown_label,
        empty_file,
        header_only,
        missing_file,
        bad_image,
        one_class_dir,
        npz_mismatch,
    ]


def _load_and_check(cfg: DataConfig):
    """The index pass, then the checking pass over every row (as `kts run` does)."""
    from service.data.scan import bad_rows_error, scan

    data = sources.load(cfg)
    found = scan(data, {"all": np.arange(len(data))}, validate="full", fit_moments=False)
    if found.bad:
        raise bad_rows_error(data, found.bad)
    return data


@pytest.mark.parametrize("fault", _fault_table(), ids=lambda f: f.__name__)
def test_fault_is_a_one_line_user_error(tmp_path, fault):
    data_cfg, needles = fault(tmp_path)
    cfg = DataConfig.model_validate(data_cfg)
    with pytest.raises(UserError) as info:
        _load_and_check(cfg)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_class_too_small_for_every_split_via_cli(tmp_path):
    frame = _table(40)
    frame.loc[:1, "label"] = "bird"  # two rows of a third class
    path = _write(frame, tmp_path / "d.csv")
    result = kts(
        [
            "run",
            "--set",
            "data.source=csv",
            "--set",
            f"data.path={path}",
            "--set",
            "data.label=label",
            "--set",
            "model.type=simple_cnn",
        ],
        cwd=tmp_path,
    )
    # simple_cnn wants images: the data error must come first, and nothing is written.
    assert_user_error(result, "class 'bird' has 2 rows")
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "serving_models").exists()


def test_nan_in_features_via_cli_writes_nothing(tmp_path):
    frame = _table()
    frame.loc[7, "a"] = np.nan
    path = _write(frame, tmp_path / "d.csv")
    result = kts(
        [
            "run",
            "--set",
            "data.source=csv",
            "--set",
            f"data.path={path}",
            "--set",
            "data.label=label",
        ],
        cwd=tmp_path,
    )
    assert_user_error(result, "d.csv: row 7", "NaN or inf")
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------ good sources
def test_csv_infers_binary_and_keeps_feature_order(tmp_path):
    cfg = DataConfig.model_validate(
        {"source": "csv", "path": _write(_table(), tmp_path / "d.csv"), "label": "label"}
    )
    data = sources.load(cfg)
    assert data.task == "binary"
    assert data.class_names == ("cat", "dog")
    assert data.feature_names == ("a", "b")
    assert data.streamed
    x = data.take(np.arange(40))
    assert x.shape == (40, 2)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, _table()[["a", "b"]].to_numpy(), rtol=1e-6)
    np.testing.assert_array_equal(data.y[:4], [0, 1, 0, 1])


def test_csv_label_that_changes_type_after_the_first_block(tmp_path, monkeypatch):
    # The index streams the label column; types are fixed by the first block, so a
    # label column of numbers, then words, is read again with whole-file inference.
    monkeypatch.setattr(sources, "CSV_BLOCK_BYTES", 1024)
    frame = pd.DataFrame({"a": np.arange(600, dtype=float), "label": ["1", "2"] * 300})
    frame.loc[599, "label"] = "cat"
    path = _write(frame, tmp_path / "d.csv")
    data = sources.load(DataConfig(source="csv", path=path, label="label"))
    assert data.class_names == ("1", "2", "cat")
    assert np.bincount(data.y).tolist() == [300, 299, 1]


def test_parquet_regression_and_groups(tmp_path):
    frame = _table()
    frame["target"] = frame["a"] * 2.5 + 0.1
    frame["site"] = np.repeat(np.arange(8), 5)
    frame.drop(columns="label").to_parquet(tmp_path / "d.parquet")
    cfg = DataConfig.model_validate(
        {
            "source": "parquet",
            "path": str(tmp_path / "d.parquet"),
            "label": "target",
            "group": "site",
        }
    )
    data = sources.load(cfg)
    assert data.task == "regression"
    assert data.feature_names == ("a", "b")
    assert data.groups is not None
    assert len(set(data.groups)) == 8


def test_image_dir_and_text_dir(tmp_path):
    for cls, value in (("dark", 10), ("light", 240)):
        (tmp_path / "img" / cls).mkdir(parents=True)
        (tmp_path / "txt" / cls).mkdir(parents=True)
        for i in range(3):
            _png(tmp_path / "img" / cls / f"{i}.png", value=value)
            (tmp_path / "txt" / cls / f"{i}.txt").write_text(f"{cls} words {i}")
    images = sources.load(
        DataConfig.model_validate(
            {"source": "image_dir", "path": str(tmp_path / "img"), "image_size": [6, 6]}
        )
    )
    x = images.take(np.arange(6))
    assert x.shape == (6, 6, 6, 3)
    assert images.class_names == ("dark", "light")
    np.testing.assert_array_equal(x[images.y == 0], 10.0)
    np.testing.assert_array_equal(x[images.y == 1], 240.0)
    texts = sources.load(
        DataConfig.model_validate({"source": "text_dir", "path": str(tmp_path / "txt")})
    )
    assert texts.kind == "text"
    assert texts.input_name == "text"
    assert texts.take(np.array([0]))[0] == "dark words 0"


def test_tfrecord_with_feature_spec(tmp_path):
    import tensorflow as tf

    path = tmp_path / "d.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(6):
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "pixels": tf.train.Feature(
                            float_list=tf.train.FloatList(value=[i, i + 1.0])
                        ),
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
                    }
                )
            )
            writer.write(example.SerializeToString())
    cfg = DataConfig.model_validate(
        {
            "source": "tfrecord",
            "path": str(path),
            "label": "label",
            "feature_spec": {
                "pixels": {"dtype": "float32", "shape": [2]},
                "label": {"dtype": "int64"},
            },
        }
    )
    data = sources.load(cfg)
    np.testing.assert_array_equal(data.take(np.array([2]))[0], [2.0, 3.0])
    np.testing.assert_array_equal(data.y, [0, 1, 0, 1, 0, 1])
    bad = DataConfig.model_validate(
        {
            "source": "tfrecord",
            "path": str(path),
            "label": "label",
            "feature_spec": {
                "pixels": {"dtype": "float32", "shape": [3]},
                "label": {"dtype": "int64"},
            },
        }
    )
    with pytest.raises(UserError, match="does not match data.feature_spec"):
        sources.load(bad)


def test_builtin_sunspots_is_an_ordered_series():
    data = sources.load(
        DataConfig.model_validate({"source": "sunspots", "window": 10, "horizon": 2})
    )
    assert data.task == "regression"
    assert data.ordered
    assert data.x.shape[1:] == (10, 1)
    assert data.y.shape[1] == 2
    # y of window i are the two values right after x of window i, which is x of window i+10.
    np.testing.assert_allclose(data.y[0], data.x[10, :2, 0])


def test_config_requires_path_and_label_for_files():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs `path`"):
        DataConfig.model_validate({"source": "csv", "label": "y"})
    with pytest.raises(ValidationError, match="is built in"):
        DataConfig.model_validate({"source": "digits", "path": "x"})
