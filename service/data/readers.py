"""Row readers: how the examples of one source are read while the model consumes them.

A source's index (`service.data.sources.Dataset`) holds only what the split needs
(labels, row identities, groups); its `Reader` turns a list of row numbers into
examples, as a `tf.data` pipeline for training and evaluation (`records`) or as
NumPy blocks for the one streaming pass that checks rows and fits statistics
(`blocks`). Memory stays flat in the data's size: files are opened, decoded and
dropped as the pipeline moves on; only the small built-in sets (and ``.npz``
archives, which cannot be read by row) live in memory, behind the same interface.

Every reader yields ``(row, x)``: the row number in the index (so labels are looked
up in the index, never read twice) and the raw features (float32 numbers in the
data's own units, or a string for text).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import UserError

# Rows per NumPy block of the checking pass: big enough to keep tf.data busy, small
# enough that a block of 224x224 RGB images stays near 150 MB.
BLOCK_ROWS = 256
# Records per block when a TFRecord file's records are numbered and masked to a part;
# each of the (up to 8) files read at once holds about two blocks of encoded records.
RECORD_BLOCK = 64


def _autotune():
    import tensorflow as tf

    return tf.data.AUTOTUNE


def _mask(n: int, rows: np.ndarray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return mask


def _blocks_of(ds, size: int = BLOCK_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for ids, x in ds.batch(size).prefetch(2).as_numpy_iterator():
        yield np.asarray(ids), np.asarray(x)


class Reader:
    """Reads the examples of given rows; see the module docstring."""

    #: True when the examples are read from files as they are consumed.
    streamed = True
    #: True when rows can be read in any order at no extra cost (one file per row,
    #: or memory): the train part is then shuffled whole, each epoch, before reading.
    random_access = True

    def records(self, rows: np.ndarray, *, shuffle_seed: int | None, buffer: int):
        """A `tf.data.Dataset` of ``(row, x)`` over ``rows``.

        Args:
            rows: row numbers to read (each once).
            shuffle_seed: None reads in a fixed order; otherwise the order changes each
                epoch (random-access readers shuffle ``rows`` whole; sequential readers
                shuffle their files and a ``buffer`` of records before decoding).
            buffer: records in the shuffle buffer of a sequential reader.
        """
        raise NotImplementedError

    def blocks(self, rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(rows, x)`` NumPy blocks over ``rows`` (any order). A row that cannot be
        read is left out (the caller reports rows it did not get back)."""
        ds = self.records(np.sort(rows), shuffle_seed=None, buffer=0)
        yield from _blocks_of(ds.ignore_errors())

    def describe(self, row: int) -> str:
        """Where row ``row`` comes from, for error messages."""
        return f"row {row}"


# ----------------------------------------------------------------- memory
@dataclass
class ArrayReader(Reader):
    """Examples held in memory (built-in sets, ``.npz``): small by construction."""

    x: np.ndarray
    where: str = ""
    streamed = False

    def records(self, rows, *, shuffle_seed, buffer):
        import tensorflow as tf

        x = self.x[rows]
        ds = tf.data.Dataset.from_tensor_slices(
            (rows.astype("int64"), x.astype(str) if x.dtype == object else x)
        )
        if shuffle_seed is not None:
            ds = ds.shuffle(len(rows), seed=shuffle_seed, reshuffle_each_iteration=True)
        return ds

    def blocks(self, rows):
        rows = np.sort(rows)
        for start in range(0, len(rows), 4096):
            chunk = rows[start : start + 4096]
            yield chunk, self.x[chunk]

    def describe(self, row):
        return f"{self.where}: row {row}" if self.where else f"row {row}"


@dataclass
class WindowReader(Reader):
    """Sliding windows over one in-memory series: row ``i`` is ``series[i : i + window]``.

    Only the series is kept (one value per time step), not ``window`` copies of it.
    """

    series: np.ndarray
    window: int
    where: str = ""
    streamed = False

    def records(self, rows, *, shuffle_seed, buffer):
        import tensorflow as tf

        series = tf.constant(self.series.astype("float32"))
        window = self.window
        ds = tf.data.Dataset.from_tensor_slices(rows.astype("int64"))
        if shuffle_seed is not None:
            ds = ds.shuffle(len(rows), seed=shuffle_seed, reshuffle_each_iteration=True)
        return ds.map(lambda i: (i, series[i : i + window][:, None]))

    def window_array(self, rows: np.ndarray) -> np.ndarray:
        idx = rows[:, None] + np.arange(self.window)[None, :]
        return self.series[idx][..., None].astype("float32")

    def blocks(self, rows):
        rows = np.sort(rows)
        for start in range(0, len(rows), 4096):
            chunk = rows[start : start + 4096]
            yield chunk, self.window_array(chunk)


# ------------------------------------------------------------------ files
def decode_image_fn(image_size: tuple[int, int], channels: int) -> Callable:
    """Encoded bytes (PNG, JPEG, BMP, GIF) -> ``(H, W, C)`` float32 in 0..255.

    Resized bilinearly to ``image_size`` when the file has another size, as
    `keras.utils.image_dataset_from_directory` does.
    """
    import tensorflow as tf

    size = tf.constant(image_size, dtype=tf.int32)

    def decode(raw):
        img = tf.io.decode_image(raw, channels=channels, expand_animations=False)
        img.set_shape([None, None, channels])
        # Unconditionally: at the same size bilinear resizing returns the pixels
        # exactly (as float32), and costs less per image than a `tf.cond` choosing it.
        img = tf.image.resize(img, size)
        img.set_shape([*image_size, channels])
        return img

    return decode


@dataclass
class FileReader(Reader):
    """One example per file (image and text folders): rows are paths, read on demand."""

    paths: np.ndarray  # str, absolute
    root: Path
    decode: Callable | None = None  # None: the file's text

    def records(self, rows, *, shuffle_seed, buffer):
        import tensorflow as tf

        paths = tf.constant(self.paths.astype(str))
        decode = self.decode
        ds = tf.data.Dataset.from_tensor_slices(rows.astype("int64"))
        if shuffle_seed is not None:
            ds = ds.shuffle(len(rows), seed=shuffle_seed, reshuffle_each_iteration=True)

        def read(i):
            raw = tf.io.read_file(tf.gather(paths, i))
            return i, decode(raw) if decode is not None else raw

        return ds.map(read, num_parallel_calls=_autotune())

    def blocks(self, rows):
        for ids, x in super().blocks(rows):
            if self.decode is None:  # text: must be UTF-8 (TextVectorization needs it)
                for i, raw in zip(ids, x, strict=True):
                    try:
                        raw.decode("utf-8")
                    except UnicodeDecodeError:
                        raise UserError(
                            f"{self.paths[i]}: is not UTF-8 text; expected UTF-8 encoded .txt"
                        ) from None
            yield ids, x

    def describe(self, row):
        return str(self.paths[row])


# ------------------------------------------------------------------ tables
@dataclass
class TableReader(Reader):
    """CSV or Parquet, read in record batches (pyarrow), only the model's columns.

    Rows come in file order; the train part is shuffled through a buffer of
    ``buffer`` rows (and, for Parquet, row groups in a new order each epoch).
    """

    path: Path
    fmt: str  # "csv" | "parquet"
    columns: list[str]
    text: bool = False
    rows_total: int = 0
    # CSV column types by name ("number" or "text"); default: the model's columns,
    # numbers (or text for a text column).
    types: dict[str, str] | None = None
    random_access = False
    _epoch: itertools.count = field(default_factory=itertools.count, repr=False)

    def _batches(self, order_seed: int | None) -> Iterator[tuple[int, Any]]:
        """``(first row, pyarrow.RecordBatch)`` in file order (Parquet: shuffled row groups)."""
        import pyarrow as pa

        if self.fmt == "csv":
            from pyarrow import csv

            kinds = self.types or {c: "text" if self.text else "number" for c in self.columns}
            types = {c: pa.string() if k == "text" else pa.float64() for c, k in kinds.items()}
            reader = csv.open_csv(
                self.path,
                read_options=csv.ReadOptions(block_size=4 << 20),
                convert_options=csv.ConvertOptions(
                    include_columns=list(kinds), column_types=types, strings_can_be_null=True
                ),
            )
            start = 0
            for batch in reader:
                yield start, batch
                start += batch.num_rows
            return
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(self.path)
        starts = np.concatenate(
            [[0], np.cumsum([pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])]
        )
        groups = np.arange(pf.num_row_groups)
        if order_seed is not None:
            groups = np.random.default_rng(order_seed).permutation(groups)
        for g in groups:
            start = int(starts[g])
            columns = list(self.types) if self.types else self.columns
            for batch in pf.iter_batches(batch_size=65_536, row_groups=[int(g)], columns=columns):
                yield start, batch
                start += batch.num_rows

    def raw_batches(self) -> Iterator[tuple[int, Any]]:
        """Every record batch in file order, ``(first row, pyarrow.RecordBatch)``."""
        return self._batches(None)

    def _selected(self, rows: np.ndarray, order_seed: int | None):
        mask = _mask(self.rows_total, rows)
        left = len(np.unique(rows))  # a few rows near the top are read without the rest
        for start, batch in self._batches(order_seed):
            if left <= 0:
                return
            ids = np.arange(start, start + batch.num_rows)
            keep = mask[ids]
            if not keep.any():
                continue
            left -= int(keep.sum())
            if self.text:
                x = np.asarray(batch.column(0).to_pylist(), dtype=object)
            else:
                x = np.stack(
                    [
                        batch.column(c).to_numpy(zero_copy_only=False)
                        for c in range(batch.num_columns)
                    ],
                    axis=1,
                ).astype("float32")
            yield ids[keep], x[keep]

    def blocks(self, rows):
        import pyarrow as pa

        try:
            yield from self._selected(rows, None)
        except (pa.ArrowInvalid, OSError) as err:
            first = str(err).splitlines()[0]
            raise UserError(f"{self.path}: cannot read as {self.fmt}: {first}") from None

    def records(self, rows, *, shuffle_seed, buffer):
        import tensorflow as tf

        width = len(self.columns)
        spec = (
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None], tf.string)
            if self.text
            else tf.TensorSpec([None, width], tf.float32),
        )

        def gen():
            seed = None if shuffle_seed is None else shuffle_seed + next(self._epoch)
            for ids, x in self._selected(rows, seed):
                yield ids, x.astype(str) if self.text else x

        ds = tf.data.Dataset.from_generator(gen, output_signature=spec).unbatch()
        if shuffle_seed is not None and buffer > 1:
            ds = ds.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
        return ds

    def describe(self, row):
        return f"{self.path}: row {row}"


# ---------------------------------------------------------------- tfrecord
@dataclass
class TFRecordReader(Reader):
    """TFRecord files of `tf.train.Example`; rows numbered across files in name order.

    Files are read in parallel (interleaved); the train part shuffles the file order
    and a buffer of encoded records each epoch, then parses and decodes (images
    stored as encoded PNG/JPEG bytes are decoded like image files).
    """

    files: list[str]
    counts: list[int]
    spec: dict[str, Any]  # name -> FeatureSpec
    label: str
    image_size: tuple[int, int] = (64, 64)
    channels: int = 3
    random_access = False

    @property
    def features(self) -> list[str]:
        return [n for n in self.spec if n != self.label]

    @property
    def image_feature(self) -> str | None:
        found = [n for n in self.features if self.spec[n].dtype == "image"]
        return found[0] if found else None

    def parse_fn(self) -> Callable:
        import tensorflow as tf

        dtypes = {"float32": tf.float32, "int64": tf.int64, "string": tf.string, "image": tf.string}
        parse_spec = {
            n: tf.io.FixedLenFeature(
                self.spec[n].shape if self.spec[n].dtype != "image" else [],
                dtypes[self.spec[n].dtype],
            )
            for n in self.features
        }
        image = self.image_feature
        decode = decode_image_fn(self.image_size, self.channels) if image else None
        names = self.features

        def parse(raw):
            parsed = tf.io.parse_single_example(raw, parse_spec)
            if image:
                return decode(parsed[image])
            return tf.concat([tf.reshape(tf.cast(parsed[n], tf.float32), [-1]) for n in names], 0)

        return parse

    def records(self, rows, *, shuffle_seed, buffer):
        import tensorflow as tf

        counts = np.asarray(self.counts, dtype="int64")
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype("int64")
        mask = tf.constant(_mask(int(counts.sum()), rows))
        files = tf.data.Dataset.from_tensor_slices((self.files, offsets, counts))
        if shuffle_seed is not None:
            files = files.shuffle(len(self.files), seed=shuffle_seed, reshuffle_each_iteration=True)

        def numbered(path, offset, count):
            # A file's records with their row numbers, only those of ``rows``: numbered
            # and masked a block at a time (one function call per block, not per record;
            # 24,000 records in blocks of 256: 1.39 -> 0.69 s of CPU).
            ids = tf.data.Dataset.range(offset, offset + count).batch(RECORD_BLOCK)
            records = tf.data.TFRecordDataset(path).batch(RECORD_BLOCK)

            def keep(i, rec):
                wanted = tf.gather(mask, i)
                return tf.boolean_mask(i, wanted), tf.boolean_mask(rec, wanted)

            return tf.data.Dataset.zip((ids, records)).map(keep).unbatch()

        if len(self.files) > 1:
            ds = files.interleave(
                numbered, cycle_length=min(len(self.files), 8), num_parallel_calls=_autotune()
            )
        else:
            ds = files.flat_map(numbered)
        # take: a few rows are read without scanning the files to their end.
        ds = ds.take(len(np.unique(rows)))
        if shuffle_seed is not None and buffer > 1:
            ds = ds.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
        parse = self.parse_fn()
        return ds.map(lambda i, rec: (i, parse(rec)), num_parallel_calls=_autotune())

    def file_of(self, rows: np.ndarray) -> np.ndarray:
        """Index (into `files`) of the file holding each row."""
        return np.searchsorted(np.cumsum(self.counts), rows, side="right")

    def describe(self, row):
        f = int(self.file_of(np.array([row]))[0])
        first = int(sum(self.counts[:f]))
        return f"{self.files[f]}: record {row - first}"
