"""Synthetic data for the data-plane benchmarks, written as it is generated.

Three kinds, each with class-dependent content so a model can learn something:

- ``images``: an image folder of ``count`` RGB PNGs ``size`` x ``size`` in ``classes``
  sub-folders (``class_0`` ...). Image ``i`` has label ``i % classes``: its class
  colour plus uniform noise in [-64, 64), so a PNG is close to incompressible
  (about 24 KB at 96x96). PNGs are encoded by 2 worker processes.
- ``tfrecord``: ``shards`` TFRecord files of `tf.train.Example` {``image``: the encoded
  PNG bytes, ``label``: int64}; record ``i`` holds exactly image ``i`` of ``images``
  (same seed, same bytes). Shard ``s`` holds a contiguous range of records.
- ``table``: a CSV and a Parquet file of the same ``rows`` rows: ``cols`` float32
  columns ``f00`` ... (standard normal plus a per-class centre) and an int64 ``label``
  column, written in chunks of ``chunk`` rows (one Parquet row group per chunk).

Memory stays bounded by one chunk of rows or of images in flight. Each output gets
a ``.done.json`` marker written last; the ``ensure_*`` functions reuse an output
whose marker matches its parameters and regenerate it otherwise.

    /work/main/.venv/bin/python bench/datagen.py images --out /tmp/kts-bench/data/img --count 24000
    /work/main/.venv/bin/python bench/datagen.py tfrecord --out /tmp/kts-bench/data/tfr --count 24000
    /work/main/.venv/bin/python bench/datagen.py table --out /tmp/kts-bench/data/table --rows 4000000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from multiprocessing import Pool
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SEED = 1234
WORKERS = 2


# ------------------------------------------------------------------ images
def _palette(classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(64, 192, size=(classes, 3))


def image_pixels(i: int, *, size: int, classes: int, seed: int = SEED) -> np.ndarray:
    """Pixels ``(size, size, 3)`` uint8 of image ``i`` (label ``i % classes``)."""
    rng = np.random.default_rng([seed, i])
    noise = rng.integers(-64, 64, size=(size, size, 3))
    return np.clip(_palette(classes, seed)[i % classes] + noise, 0, 255).astype("uint8")


def png_bytes(i: int, *, size: int, classes: int, seed: int = SEED) -> bytes:
    """Image ``i`` encoded as PNG (zlib level 1: fast to write, decoded as usual)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image_pixels(i, size=size, classes=classes, seed=seed)).save(
        buf, format="PNG", compress_level=1
    )
    return buf.getvalue()


def _png_job(args: tuple[int, int, int, int]) -> tuple[int, bytes]:
    i, size, classes, seed = args
    return i, png_bytes(i, size=size, classes=classes, seed=seed)


def _pngs(count: int, *, size: int, classes: int, seed: int) -> Iterator[tuple[int, bytes]]:
    """``(i, PNG bytes)`` for ``i`` in ``range(count)``, in order, encoded by the workers."""
    jobs = ((i, size, classes, seed) for i in range(count))
    with Pool(WORKERS) as pool:
        yield from pool.imap(_png_job, jobs, chunksize=64)


def _fresh(out: Path, params: dict) -> bool:
    """True when ``out`` was completely generated with ``params``."""
    marker = out / ".done.json"
    try:
        return json.loads(marker.read_text()) == params
    except (OSError, ValueError):
        return False


def _finish(out: Path, params: dict, started: float) -> None:
    (out / ".done.json").write_text(json.dumps(params))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f} s")


def write_images(
    out: Path, *, count: int, size: int = 96, classes: int = 4, seed: int = SEED
) -> Path:
    """An image folder: ``out/class_<k>/img_<i>.png``; see the module docstring."""
    started = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    for k in range(classes):
        (out / f"class_{k}").mkdir(parents=True)
    for i, raw in _pngs(count, size=size, classes=classes, seed=seed):
        (out / f"class_{i % classes}" / f"img_{i:07d}.png").write_bytes(raw)
    _finish(out, _image_params("images", count, size, classes, seed), started)
    return out


def write_tfrecords(
    out: Path,
    *,
    count: int,
    size: int = 96,
    classes: int = 4,
    shards: int = 16,
    seed: int = SEED,
) -> Path:
    """``shards`` TFRecord files ``out/part-<s>-of-<n>.tfrecord``; record ``i`` is image ``i``."""
    import tensorflow as tf

    started = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    writer, current = None, -1
    for i, raw in _pngs(count, size=size, classes=classes, seed=seed):
        shard = i * shards // count
        if shard != current:
            if writer is not None:
                writer.close()
            current = shard
            writer = tf.io.TFRecordWriter(str(out / f"part-{shard:05d}-of-{shards:05d}.tfrecord"))
        example = tf.train.Example(
            features=tf.train.Features(
                feature={
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[raw])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % classes])),
                }
            )
        )
        assert writer is not None
        writer.write(example.SerializeToString())
    if writer is not None:
        writer.close()
    params = {**_image_params("tfrecord", count, size, classes, seed), "shards": shards}
    _finish(out, params, started)
    return out


def _image_params(kind: str, count: int, size: int, classes: int, seed: int) -> dict:
    return {"kind": kind, "count": count, "size": size, "classes": classes, "seed": seed}


def ensure_images(out: Path, *, count: int, size: int = 96, classes: int = 4) -> Path:
    """`write_images` unless ``out`` already holds exactly that folder."""
    if _fresh(out, _image_params("images", count, size, classes, SEED)):
        return out
    return write_images(out, count=count, size=size, classes=classes)


def ensure_tfrecords(
    out: Path, *, count: int, size: int = 96, classes: int = 4, shards: int = 16
) -> Path:
    """`write_tfrecords` unless ``out`` already holds exactly those shards."""
    params = {**_image_params("tfrecord", count, size, classes, SEED), "shards": shards}
    if _fresh(out, params):
        return out
    return write_tfrecords(out, count=count, size=size, classes=classes, shards=shards)


# ------------------------------------------------------------------ tables
def table_chunks(
    rows: int, *, cols: int = 50, classes: int = 4, chunk: int = 100_000, seed: int = SEED
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(features (n, cols) float32, labels (n,) int64)`` chunks of the table."""
    centres = np.random.default_rng(seed).normal(0.0, 0.5, size=(classes, cols)).astype("float32")
    for c, start in enumerate(range(0, rows, chunk)):
        n = min(chunk, rows - start)
        rng = np.random.default_rng([seed, c])
        labels = rng.integers(0, classes, size=n)
        x = rng.standard_normal((n, cols), dtype=np.float32) + centres[labels]
        yield x, labels.astype("int64")


def write_table(
    out: Path,
    *,
    rows: int,
    cols: int = 50,
    classes: int = 4,
    chunk: int = 100_000,
    seed: int = SEED,
) -> tuple[Path, Path]:
    """``out/table.csv`` and ``out/table.parquet`` with the same rows; returns both paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import csv

    started = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    names = [f"f{j:02d}" for j in range(cols)]
    schema = pa.schema([*(pa.field(n, pa.float32()) for n in names), pa.field("label", pa.int64())])
    csv_path, parquet_path = out / "table.csv", out / "table.parquet"
    with (
        csv.CSVWriter(csv_path, schema) as csv_writer,
        pq.ParquetWriter(parquet_path, schema) as pq_writer,
    ):
        for x, labels in table_chunks(rows, cols=cols, classes=classes, chunk=chunk, seed=seed):
            batch = pa.RecordBatch.from_arrays(
                [*(pa.array(x[:, j]) for j in range(cols)), labels], schema=schema
            )
            csv_writer.write_batch(batch)
            pq_writer.write_table(pa.Table.from_batches([batch]), row_group_size=chunk)
    params = _table_params(rows, cols, classes, chunk, seed)
    _finish(out, params, started)
    return csv_path, parquet_path


def _table_params(rows: int, cols: int, classes: int, chunk: int, seed: int) -> dict:
    return {
        "kind": "table",
        "rows": rows,
        "cols": cols,
        "classes": classes,
        "chunk": chunk,
        "seed": seed,
    }


def ensure_table(out: Path, *, rows: int, cols: int = 50, classes: int = 4) -> tuple[Path, Path]:
    """`write_table` unless ``out`` already holds exactly that table."""
    if _fresh(out, _table_params(rows, cols, classes, 100_000, SEED)):
        return out / "table.csv", out / "table.parquet"
    return write_table(out, rows=rows, cols=cols, classes=classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind in ("images", "tfrecord"):
        p = sub.add_parser(kind)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--count", type=int, default=24_000)
        p.add_argument("--size", type=int, default=96)
        p.add_argument("--classes", type=int, default=4)
        if kind == "tfrecord":
            p.add_argument("--shards", type=int, default=16)
    p = sub.add_parser("table")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rows", type=int, default=4_000_000)
    p.add_argument("--cols", type=int, default=50)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--chunk", type=int, default=100_000)
    args = parser.parse_args()
    if args.kind == "images":
        write_images(args.out, count=args.count, size=args.size, classes=args.classes)
    elif args.kind == "tfrecord":
        write_tfrecords(
            args.out, count=args.count, size=args.size, classes=args.classes, shards=args.shards
        )
    else:
        write_table(
            args.out, rows=args.rows, cols=args.cols, classes=args.classes, chunk=args.chunk
        )


if __name__ == "__main__":
    main()
