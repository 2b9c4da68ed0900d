"""The streaming data plane: index, checking pass, part pipelines, input diagnosis."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from service.config import DataConfig, load_config
from service.data import sources
from tests.helpers import CONFIGS, assert_user_error, kts


def _png(path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels.astype("uint8")).save(path)


def _image_folder(root, *, per_class: int = 20, size: int = 8, seed: int = 0) -> np.ndarray:
    """Two classes of grayscale PNGs (dark vs bright noise); returns every image, by path order."""
    rng = np.random.default_rng(seed)
    images = []
    for cls, base in (("a", 40), ("b", 170)):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(base + rng.normal(0, 30, (size, size)), 0, 255).astype("uint8")
            _png(root / cls / f"{i:04d}.png", img)
            images.append(img)
    return np.stack(images)[..., None].astype("float32")


def _image_cfg(root, **extra) -> DataConfig:
    return DataConfig.model_validate(
        {
            "source": "image_dir",
            "path": str(root),
            "image_size": [8, 8],
            "color_mode": "grayscale",
            **extra,
        }
    )


def _rows_of(ds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def test_image_folder_streams_each_row_once_with_its_label(tmp_path):
    from service.data.stream import part_dataset

    pixels = _image_folder(tmp_path / "img")
    cfg = _image_cfg(tmp_path / "img")
    data = sources.load(cfg)
    assert data.streamed
    assert data.input_shape == (8, 8, 1)
    rows = np.arange(0, 40, 3)
    x, y = _rows_of(part_dataset(data, rows, data_cfg=cfg, batch_size=4, training=False, seed=0))
    np.testing.assert_array_equal(x, pixels[rows])
    np.testing.assert_array_equal(y, data.y[rows])
    # Training order: shuffled, a new order each epoch, every row exactly once.
    ds = part_dataset(data, rows, data_cfg=cfg, batch_size=4, training=True, seed=3)
    first, second = _rows_of(ds)[0], _rows_of(ds)[0]
    key = lambda a: sorted(map(bytes, a.astype("uint8")))  # noqa: E731
    assert key(first) == key(second) == key(pixels[rows])
    assert not np.array_equal(first, second)


def test_tfrecord_of_encoded_pngs_reads_like_the_folder(tmp_path):
    import tensorflow as tf

    from service.data.stream import part_dataset

    pixels = _image_folder(tmp_path / "img")
    labels = np.repeat([0, 1], 20)
    for shard in range(3):
        with tf.io.TFRecordWriter(str(tmp_path / f"part-{shard}.tfrecord")) as writer:
            for i in range(shard, 40, 3):
                png = tf.io.encode_png(pixels[i].astype("uint8")).numpy()
                feature = {
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[labels[i]])),
                }
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
    cfg = DataConfig.model_validate(
        {
            "source": "tfrecord",
            "path": str(tmp_path),
            "label": "label",
            "feature_spec": {"image": {"dtype": "image"}, "label": {"dtype": "int64"}},
            "image_size": [8, 8],
            "color_mode": "grayscale",
        }
    )
    data = sources.load(cfg)
    assert data.kind == "image"
    assert data.input_shape == (8, 8, 1)
    assert data.reader.counts == [14, 13, 13]
    order = np.concatenate([np.arange(s, 40, 3) for s in range(3)])  # row -> image
    np.testing.assert_array_equal(data.y, labels[order])
    rows = np.array([39, 0, 5, 14, 20])
    ds = part_dataset(
        data, rows, data_cfg=cfg, batch_size=2, training=False, seed=0, with_rows=True
    )
    got = [(r.numpy(), x.numpy(), t.numpy()) for r, x, t in ds]
    read = np.concatenate([g[0] for g in got])
    assert sorted(read.tolist()) == sorted(rows.tolist())  # files are read in parallel
    np.testing.assert_array_equal(np.concatenate([g[1] for g in got]), pixels[order[read]])
    np.testing.assert_array_equal(np.concatenate([g[2] for g in got]), labels[order[read]])
    ds = part_dataset(data, np.arange(40), data_cfg=cfg, batch_size=8, training=True, seed=1)
    seen = sorted(map(bytes, _rows_of(ds)[0].astype("uint8")))
    assert seen == sorted(map(bytes, pixels.astype("uint8")))


def test_statistics_are_fitted_by_streaming_on_train_rows_only(tmp_path):
    from service.data.preprocess import fit_preprocessing
    from service.data.scan import scan

    pixels = _image_folder(tmp_path / "img").astype("float64")
    cfg = _image_cfg(tmp_path / "img")
    data = sources.load(cfg)
    train, val, test = np.arange(0, 40, 2), np.arange(1, 40, 4), np.arange(3, 40, 4)
    found = scan(
        data, {"train": train, "validation": val, "test": test}, validate="full", fit_moments=True
    )
    assert found.bad == {}
    assert found.rows_read == 40
    pre = fit_preprocessing(data, train, cfg.preprocessing)
    np.testing.assert_allclose(pre.stats["mean"], [pixels[train].mean()], rtol=1e-9)
    np.testing.assert_allclose(pre.stats["variance"], [pixels[train].var()], rtol=1e-6)
    both = np.concatenate([train, val])
    pre = fit_preprocessing(data, both, cfg.preprocessing)
    np.testing.assert_allclose(pre.stats["mean"], [pixels[both].mean()], rtol=1e-9)
    # Any other row set (a k-fold fold) is one more streaming read.
    fold = np.arange(10, 30)
    pre = fit_preprocessing(data, fold, cfg.preprocessing)
    np.testing.assert_allclose(pre.stats["variance"], [pixels[fold].var()], rtol=1e-6)


def test_csv_streams_in_record_batches_and_pca_uses_a_bounded_sample(tmp_path, monkeypatch):
    from service.data import preprocess
    from service.data.scan import moments

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(500, 4)) * [1, 2, 3, 4], columns=list("abcd"))
    frame["label"] = np.tile(["x", "y"], 250)
    frame.to_csv(tmp_path / "t.csv", index=False)
    cfg = DataConfig.model_validate(
        {
            "source": "csv",
            "path": str(tmp_path / "t.csv"),
            "label": "label",
            "preprocessing": {"pca": 2},
        }
    )
    data = sources.load(cfg)
    rows = np.arange(0, 500, 2)
    m = moments(data, rows)
    np.testing.assert_allclose(m.mean, frame[list("abcd")].to_numpy()[rows].mean(0), rtol=1e-5)
    monkeypatch.setattr(preprocess, "PROJECTION_SAMPLE", 100)
    pre = preprocess.fit_preprocessing(data, rows, cfg.preprocessing)
    assert pre.stats["projection_rows"] == 100
    assert pre.output_shape == (2,)


def test_a_slow_input_pipeline_is_flagged_input_bound_and_a_fast_one_is_not():
    import time

    import keras
    import tensorflow as tf

    from service.training.trainer import InputMonitor

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")

    def run(slow: bool) -> InputMonitor:
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        if slow:

            def wait(a):
                time.sleep(0.05)
                return a

            ds = ds.map(lambda a, b: (tf.numpy_function(wait, [a], tf.float32), b))
            ds = ds.map(lambda a, b: (tf.ensure_shape(a, [None, 4]), b))
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        model.compile("sgd", "sparse_categorical_crossentropy")
        monitor = InputMonitor(len(x))
        history = model.fit(monitor.wrap(ds), epochs=2, verbose=0, callbacks=[monitor.callback()])
        assert len(history.history["input_wait_fraction"]) == 2
        assert history.history["train_rows_per_s"][0] > 0
        return monitor

    slow, fast = run(True), run(False)
    assert slow.input_bound, slow.fractions
    assert min(slow.fractions) > 0.5
    assert not fast.input_bound, fast.fractions


def _run_on_images(tmp_path, *settings: str, output_json: bool = False):
    """`kts run` on the image folder ``tmp_path/img`` (8x8 grayscale), one tiny model."""
    args = ["run"]
    for setting in (
        "data.source=image_dir",
        f"data.path={tmp_path / 'img'}",
        "data.image_size=[8,8]",
        "data.color_mode=grayscale",
        "tuning.enabled=false",
        "model.filters=[8]",
        "model.dense_units=16",
        *settings,
    ):
        args += ["--set", setting]
    return kts(args + (["--output-json", "out.json"] if output_json else []), cwd=tmp_path)


def test_a_corrupt_png_stops_the_run_and_records_nothing(tmp_path):
    _image_folder(tmp_path / "img", per_class=60)
    (tmp_path / "img" / "b" / "0007.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    result = _run_on_images(tmp_path, "training.epochs=1")
    assert_user_error(result, "0007.png", "cannot be decoded as an image", "on_bad_rows")
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "serving_models").exists()


@pytest.mark.slow
def test_on_bad_rows_skip_trains_and_logs_how_many_rows_it_left_out(tmp_path):
    from mlflow.tracking import MlflowClient

    _image_folder(tmp_path / "img", per_class=60)
    for name in ("0003.png", "0011.png"):
        (tmp_path / "img" / "a" / name).write_bytes(b"truncated")
    result = _run_on_images(
        tmp_path,
        "data.on_bad_rows=skip",
        "data.cache=disk",
        "data.augmentation.flip=horizontal",
        "training.epochs=2",
        "tracking.reports=false",
        output_json=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "out.json").read_text())
    assert any("2 bad rows left out" in note for note in summary["notes"])
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(summary["run_id"])
    assert run.data.metrics["data_skipped_rows"] == 2.0
    assert "input_wait_fraction" in run.data.metrics
    skipped = client.download_artifacts(summary["run_id"], "data/skipped_rows.txt", str(tmp_path))
    lines = open(skipped).read().splitlines()
    assert [line.split("/")[-1].split(":")[0] for line in lines] == ["0003.png", "0011.png"]
    split = json.loads(
        open(client.download_artifacts(summary["run_id"], "split.json", str(tmp_path))).read()
    )
    assert sum(split["rows"].values()) == 118
    # cache: disk wrote the decoded parts under the run folder.
    assert list((tmp_path / "runs").glob("*/cache/part-*"))


def test_augmentation_changes_train_batches_only_and_is_a_searchable_key(tmp_path):
    from service.data.stream import part_dataset
    from tuning.space import apply

    pixels = _image_folder(tmp_path / "img")
    cfg = _image_cfg(tmp_path / "img", augmentation={"flip": "horizontal"})
    data = sources.load(cfg)
    rows = np.arange(40)
    x_val = _rows_of(part_dataset(data, rows, data_cfg=cfg, batch_size=40, training=False, seed=0))[
        0
    ]
    np.testing.assert_array_equal(x_val, pixels)
    x_tr = _rows_of(part_dataset(data, rows, data_cfg=cfg, batch_size=40, training=True, seed=0))[0]
    originals = {bytes(p.astype("uint8")) for p in pixels}
    flipped = {bytes(p[:, ::-1].astype("uint8")) for p in pixels}
    got = [bytes(x.astype("uint8")) for x in x_tr]
    assert all(g in originals | flipped for g in got)
    assert any(g not in originals for g in got)  # some rows were flipped
    run_cfg = load_config(CONFIGS / "digits_cnn.yaml")
    tried = apply(run_cfg, {"data.augmentation.rotation": 0.1, "data.validate": "sample"})
    assert tried.data.augmentation.rotation == 0.1
    assert tried.data.validate_rows == "sample"
