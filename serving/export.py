"""Export a trained Keras model in TensorFlow Serving's layout.

``BASE/NAME/VERSION/`` holds a SavedModel whose ``serving_default`` signature has
named inputs and outputs (``probabilities`` and ``class_ids`` for classifiers,
``predictions`` for regressors). VERSION is an integer, strictly increasing; the
SavedModel is written to a hidden temporary folder first and renamed into place,
so a server polling BASE/NAME never sees a half-written version.

This module imports nothing else of ours: the inference side stays lean.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Exported:
    """Where an export went: ``path`` is ``BASE/NAME/VERSION``."""

    path: Path
    version: int


def versions(model_dir: str | Path) -> list[int]:
    """Integer version folders under ``model_dir``, ascending (others are ignored)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_dir: str | Path) -> int:
    """One more than the highest existing version (1 for an empty folder)."""
    existing = versions(model_dir)
    return existing[-1] + 1 if existing else 1


def export_saved_model(
    model,
    *,
    base_path: str | Path,
    model_name: str,
    input_name: str,
    task: str,
    class_names: Sequence[str] = (),
) -> Exported:
    """Write ``model`` as the next version of ``model_name`` under ``base_path``.

    Args:
        model: a Keras model mapping raw inputs to probabilities (classifiers) or
            values (regressors); preprocessing must already be inside it.
        base_path: the serving base folder (``--model_base_path`` is BASE/NAME).
        model_name: the served model's name.
        input_name: the name of the signature's single input tensor.
        task: ``multiclass``, ``binary``, ``multilabel`` or ``regression``.
        class_names: one label per class id, written to ``assets.extra/class_names.txt``.

    Returns:
        The version folder and its number.
    """
    import keras
    import tensorflow as tf

    model_dir = Path(base_path) / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=input_name)

    def serve(inputs):
        outputs = tf.cast(model(inputs, training=False), tf.float32)
        if task == "regression":
            return {"predictions": outputs}
        if task == "multiclass":
            class_ids = tf.argmax(outputs, axis=-1)
        else:
            class_ids = tf.cast(outputs > 0.5, tf.int64)
        return {"probabilities": outputs, "class_ids": class_ids}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=serve, input_signature=[spec])

    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=model_dir))
    try:
        archive.write_out(str(staging / "saved_model"), verbose=False)
        if class_names:
            extra = staging / "saved_model" / "assets.extra"
            extra.mkdir(exist_ok=True)
            (extra / "class_names.txt").write_text("\n".join(class_names) + "\n", encoding="utf-8")
        # Claim the version number atomically: rename fails if another writer won.
        while True:
            version = next_version(model_dir)
            target = model_dir / str(version)
            try:
                os.rename(staging / "saved_model", target)
                break
            except OSError:
                if not target.exists():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Exported(path=target, version=version)
