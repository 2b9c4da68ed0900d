"""The input pipeline of one split part, as `model.fit`, `evaluate` and `predict` see it.

read (parallel) -> decode -> [cache] -> [shuffle buffer] -> batch -> targets ->
[augment: train only] -> prefetch. Labels come from the index by row number, one
gather per batch, so a part's targets are never read twice and never held as a
second copy of the data.

Example:
    >>> ds = part_dataset(data, split.train, data_cfg=cfg.data, batch_size=32,
    ...                   training=True, seed=cfg.seed)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Shard:
    """This worker's share of every part: rows ``index::count`` of it."""

    count: int
    index: int

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """This worker's rows; every worker gets the same number (collectives need
        equal steps), so up to ``count - 1`` rows of a part are left out each epoch."""
        per_worker = len(rows) // self.count
        return rows[self.index :: self.count][:per_worker]


def batch_fn(data: Any, *, one_hot: int | None, with_targets: bool, with_rows: bool):
    """``(rows, x) -> (x, target)`` of a batch (or ``x``, or ``(rows, x, target)``).

    Targets come from the index (reconstruction: ``x``), gathered once per batch:
    one function call per batch rather than two per row (tf.data runs every map
    function per element, and does not fuse maps that capture the index).
    """
    import tensorflow as tf

    if data.task == "reconstruction":

        def target(i, x):
            return x

    else:
        y = tf.constant(data.y)

        def target(i, x):
            t = tf.gather(y, i)
            return tf.one_hot(t, one_hot) if one_hot else t

    if with_rows:
        return lambda i, x: (i, x, target(i, x))
    if with_targets:
        return lambda i, x: (x, target(i, x))
    return lambda i, x: x


def augmenter(aug_cfg: Any, *, seed: int):
    """A Keras layer stack of `data.augmentation`, or None when nothing is enabled."""
    if aug_cfg is None or not aug_cfg.enabled:
        return None
    import keras

    layers = []
    if aug_cfg.flip != "none":
        layers.append(keras.layers.RandomFlip(aug_cfg.flip, seed=seed))
    if aug_cfg.rotation:
        layers.append(keras.layers.RandomRotation(aug_cfg.rotation, seed=seed))
    if aug_cfg.zoom:
        layers.append(keras.layers.RandomZoom(aug_cfg.zoom, seed=seed))
    if aug_cfg.translation:
        t = aug_cfg.translation
        layers.append(keras.layers.RandomTranslation(t, t, seed=seed))
    if aug_cfg.contrast:
        layers.append(keras.layers.RandomContrast(aug_cfg.contrast, seed=seed))
    if aug_cfg.brightness:
        # Pixel values are raw (0..255 for image files): the range is the data's.
        layers.append(
            keras.layers.RandomBrightness(aug_cfg.brightness, value_range=(0, 255), seed=seed)
        )
    return keras.Sequential(layers, name="augmentation")


def part_dataset(
    data: Any,
    rows: np.ndarray,
    *,
    data_cfg: Any,
    batch_size: int,
    training: bool,
    seed: int,
    one_hot: int | None = None,
    with_targets: bool = True,
    with_rows: bool = False,
    cache_dir: Path | None = None,
    shard: Shard | None = None,
    use_cache: bool = True,
):
    """A batched `tf.data.Dataset` of ``(x, target)`` (or ``x``) over ``rows``.

    Args:
        data: the `Dataset` (index and reader).
        rows: the part's row numbers (bad rows already left out).
        data_cfg: the `data` config section (shuffle_buffer, cache, deterministic,
            augmentation).
        batch_size: rows per batch (the global batch under a distribution strategy).
        training: shuffle each epoch and augment; otherwise a fixed order.
        seed: seed of the shuffle and the augmentation.
        one_hot: one-hot targets of this many classes.
        with_targets: False yields only ``x`` (for `predict`).
        with_rows: yield ``(rows, x, target)``: the row numbers of each batch. Table
            and TFRecord sources read in file order, not in the order of ``rows``.
        cache_dir: folder for ``cache: disk``.
        shard: read only this worker's rows (multi-worker training).
        use_cache: False ignores `data.cache` (a part read once, like the test part).
    """
    import tensorflow as tf

    rows = np.asarray(rows, dtype="int64")
    if shard is not None:
        rows = shard.rows(rows)
    cache = getattr(data_cfg, "cache", "none") if use_cache else "none"
    reader = data.reader
    # With a cache the files are read once in a fixed order; the buffer shuffles.
    read_shuffled = training and cache == "none"
    buffer = int(getattr(data_cfg, "shuffle_buffer", 10_000))
    ds = reader.records(rows, shuffle_seed=seed if read_shuffled else None, buffer=buffer)
    if cache == "memory":
        ds = ds.cache()
    elif cache == "disk":
        from service.data.scan import rows_digest

        assert cache_dir is not None, "cache: disk needs the run folder"
        cache_dir.mkdir(parents=True, exist_ok=True)
        ds = ds.cache(str(cache_dir / f"part-{rows_digest(rows)[:16]}"))
    if training and cache != "none":
        ds = ds.shuffle(min(buffer, max(len(rows), 1)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(
        batch_fn(data, one_hot=one_hot, with_targets=with_targets, with_rows=with_rows),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    augment = augmenter(getattr(data_cfg, "augmentation", None), seed=seed) if training else None
    if augment is not None and data.kind == "image":
        ds = ds.map(
            lambda x, t: (augment(x, training=True), t), num_parallel_calls=tf.data.AUTOTUNE
        )
    options = tf.data.Options()
    options.deterministic = bool(getattr(data_cfg, "deterministic", True))
    # Rows are sharded above (or the run has one worker): tf.distribute must not
    # shard again. In-memory data without an explicit shard keeps DATA sharding.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF
        if shard is not None
        else tf.data.experimental.AutoShardPolicy.DATA
    )
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def train_input(cfg: Any, data: Any, rows: np.ndarray):
    """The train part's input exactly as the pipeline's `fit` reads it (for benchmarks)."""
    return part_dataset(
        data,
        rows,
        data_cfg=cfg.data,
        batch_size=cfg.training.batch_size,
        training=True,
        seed=cfg.seed,
        cache_dir=cfg.run_dir / "cache",
    )
