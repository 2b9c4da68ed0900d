"""Export a trained Keras model in TensorFlow Serving's layout.

``BASE/NAME/VERSION/`` holds a SavedModel with these signatures:

* ``serving_default`` (predict): one named input (``input_name``, the model's dtype and
  shape with a leading batch dimension; raw values, preprocessing is in the graph) ->
  ``probabilities`` float32 ``[batch, classes]`` and ``class_ids`` int64 ``[batch]``
  for classifiers (``[batch, labels]`` for multilabel), ``predictions`` float32 for
  regressors. Outputs are float32 even under mixed precision.
* ``classification`` (classifiers): ``inputs`` = serialized ``tf.Example`` strings
  ``[batch]`` with the feature ``input_name`` -> ``classes`` string ``[batch, classes]``
  (the class names) and ``scores`` float32 ``[batch, classes]``, the layout
  TensorFlow Serving's Classify API reads.
* ``regression`` (single-output regressors): ``inputs`` -> ``outputs`` float32 ``[batch]``
  for the Regress API.
* Autoencoders (task ``reconstruction``) have only ``serving_default``: the input ->
  ``reconstructions`` float32, the input's shape, in the input's units.
  for the Regress API.

``assets.extra/`` holds ``tf_serving_warmup_requests`` (a TFRecord of ``PredictionLog``,
replayed by the server at load time so the first request is not slow; one record per
warm-up example and signature, at most 1,000), ``class_names.txt`` (one name per
class id) and ``kts_metadata.json`` (task, input, outputs, signatures, class names).

VERSION is an integer, strictly increasing; the SavedModel is written to a hidden
temporary folder first and renamed into place, so a server polling BASE/NAME never sees
a half-written version. ``BASE/models.config`` (a text ``ModelServerConfig``) then
records the version under a label (``canary`` by default; ``stable`` too for a model's
first version) -- see `serving.config.register_version` and `serving.config.move_label`.

This module imports nothing else of ours outside ``serving``: the inference side stays lean.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from serving.config import CANARY, register_version

TASKS = ("multiclass", "binary", "multilabel", "regression", "reconstruction")
VALUE_OUTPUTS = {"regression": "predictions", "reconstruction": "reconstructions"}
MAX_WARMUP_EXAMPLES = 100
MODEL_CONFIG_NAME = "models.config"
CLASSIFICATION_SIGNATURE = "classification"
REGRESSION_SIGNATURE = "regression"


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


def find_version(model_dir: str | Path, key: str, value: str) -> Exported | None:
    """The version whose ``kts_metadata.json`` has ``key`` == ``value`` (e.g. the run that
    wrote it, see ``export_saved_model(metadata=...)``), or None."""
    for version in versions(model_dir):
        path = Path(model_dir) / str(version)
        try:
            meta = json.loads((path / "assets.extra" / "kts_metadata.json").read_text())
        except (OSError, ValueError):
            continue
        if meta.get(key) == value:
            return Exported(path=path, version=version)
    return None


def next_version(model_dir: str | Path) -> int:
    """One more than the highest existing version (1 for an empty folder)."""
    existing = versions(model_dir)
    return existing[-1] + 1 if existing else 1


def _input_spec(model: Any, input_name: str) -> Any:
    import tensorflow as tf

    dtype = tf.as_dtype(getattr(model.inputs[0], "dtype", "float32") or "float32")
    if dtype.is_floating:
        dtype = tf.float32  # clients send float32 even when the model computes in float16
    return tf.TensorSpec((None, *model.input_shape[1:]), dtype, name=input_name)


def _example_feature(spec: Any) -> tuple[Any, Any]:
    """(tf.io feature spec, the dtype to cast parsed values to) for the model's input."""
    import tensorflow as tf

    shape = list(spec.shape[1:])
    if spec.dtype == tf.string:
        return tf.io.FixedLenFeature(shape, tf.string), tf.string
    if spec.dtype.is_integer or spec.dtype == tf.bool:
        return tf.io.FixedLenFeature(shape, tf.int64), spec.dtype
    return tf.io.FixedLenFeature(shape, tf.float32), spec.dtype


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(
            f"Invalid value for `task`: received {task!r}; expected one of "
            + ", ".join(repr(t) for t in TASKS)
            + "."
        )


def _warmup_array(spec: Any, warmup_inputs: Any) -> np.ndarray:
    """A few raw examples, batch first, checked against the serving input."""
    shape = tuple(spec.shape[1:])
    if warmup_inputs is None:
        fill: Any = b"" if spec.dtype.name == "string" else 0
        return np.full(
            (1, *shape), fill, dtype=object if fill == b"" else spec.dtype.as_numpy_dtype
        )
    array = np.asarray(warmup_inputs)
    if spec.dtype.name == "string":
        array = np.vectorize(lambda v: v if isinstance(v, bytes) else str(v).encode())(
            array
        ).astype(object)
    else:
        array = array.astype(spec.dtype.as_numpy_dtype)
    if array.ndim != len(shape) + 1 or any(
        want is not None and want != got for want, got in zip(shape, array.shape[1:], strict=True)
    ):
        raise ValueError(
            f"Invalid value for `warmup_inputs`: received shape {list(array.shape)}; expected "
            f"[examples, {', '.join('?' if d is None else str(d) for d in shape)}] raw inputs for "
            f"{spec.name!r}."
        )
    if len(array) == 0:
        raise ValueError(
            "Invalid value for `warmup_inputs`: received 0 examples; expected at least 1."
        )
    return array[:MAX_WARMUP_EXAMPLES]


def _example_bytes(feature_name: str, row: np.ndarray) -> bytes:
    import tensorflow as tf

    flat = np.asarray(row).reshape(-1)
    if flat.dtype == object or flat.dtype.kind in "SU":
        feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[bytes(v) for v in flat]))
    elif flat.dtype.kind in "iub":
        feature = tf.train.Feature(
            int64_list=tf.train.Int64List(value=flat.astype(np.int64).tolist())
        )
    else:
        feature = tf.train.Feature(
            float_list=tf.train.FloatList(value=flat.astype(np.float32).tolist())
        )
    example = tf.train.Example(features=tf.train.Features(feature={feature_name: feature}))
    return bytes(example.SerializeToString())


def write_warmup_requests(
    path: str | Path,
    *,
    input_name: str,
    examples: np.ndarray,
    example_signature: str | None,
) -> int:
    """Write ``assets.extra/tf_serving_warmup_requests``; returns the number of records.

    One ``predict_log`` per example (batch of 1) plus one with all of them (so the
    batched path warms up too), and, when ``example_signature`` is set, one
    ``classify_log``/``regress_log`` per example for that signature.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import (
        classification_pb2,
        predict_pb2,
        prediction_log_pb2,
        regression_pb2,
    )

    records = []
    batches = [examples[i : i + 1] for i in range(len(examples))]
    if len(examples) > 1:
        batches.append(examples)
    for batch in batches:
        request = predict_pb2.PredictRequest()
        request.model_spec.signature_name = "serving_default"
        request.inputs[input_name].CopyFrom(tf.make_tensor_proto(batch))
        records.append(
            prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
        )
    if example_signature is not None:
        for row in examples:
            serialized = _example_bytes(input_name, row)
            if example_signature == CLASSIFICATION_SIGNATURE:
                c_request = classification_pb2.ClassificationRequest()
                c_request.model_spec.signature_name = example_signature
                c_request.input.example_list.examples.add().ParseFromString(serialized)
                log = prediction_log_pb2.PredictionLog(
                    classify_log=prediction_log_pb2.ClassifyLog(request=c_request)
                )
            else:
                r_request = regression_pb2.RegressionRequest()
                r_request.model_spec.signature_name = example_signature
                r_request.input.example_list.examples.add().ParseFromString(serialized)
                log = prediction_log_pb2.PredictionLog(
                    regress_log=prediction_log_pb2.RegressLog(request=r_request)
                )
            records.append(log)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record.SerializeToString())
    return len(records)


def export_saved_model(
    model,
    *,
    base_path: str | Path,
    model_name: str,
    input_name: str,
    task: str,
    class_names: Sequence[str] = (),
    warmup_inputs: Any = None,
    update_model_config: bool = True,
    label: str = CANARY,
    metadata: dict[str, Any] | None = None,
) -> Exported:
    """Write ``model`` as the next version of ``model_name`` under ``base_path``.

    Args:
        model: a Keras model mapping raw inputs to probabilities (classifiers) or
            values (regressors); preprocessing must already be inside it.
        base_path: the serving base folder (``--model_base_path`` is BASE/NAME).
        model_name: the served model's name.
        input_name: the name of the signature's single input tensor.
        task: ``multiclass``, ``binary``, ``multilabel``, ``regression`` or
            ``reconstruction`` (an autoencoder: output shaped as the input).
        class_names: one label per class id, written to ``assets.extra/class_names.txt``
            and used as the ``classes`` of the classification signature (default: the ids).
        warmup_inputs: a few raw examples, shape ``(n, *input_shape)`` (e.g. validation
            rows), recorded as warm-up requests; None records one all-zeros example.
        update_model_config: also record the version in ``BASE/models.config``.
        label: the version label given to the new version there.
        metadata: more keys for ``kts_metadata.json`` (e.g. which run wrote it, so a
            run started again after a kill finds its export with `find_version`).

    Returns:
        The version folder and its number.
    """
    import keras
    import tensorflow as tf

    _check_task(task)
    model_dir = Path(base_path) / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    spec = _input_spec(model, input_name)
    output_width = int(model.output_shape[-1]) if model.output_shape[-1] is not None else 1
    if task == "binary" and output_width == 1:
        num_classes = 2
    else:
        num_classes = output_width
    names = [str(n) for n in class_names] or [str(i) for i in range(num_classes)]
    if task in VALUE_OUTPUTS:
        names = []
    elif len(names) != num_classes:
        raise ValueError(
            f"Invalid value for `class_names`: received {len(names)} names; expected "
            f"{num_classes} (the model's classes)."
        )

    def serve(inputs):
        outputs = tf.cast(model(inputs, training=False), tf.float32)
        if task in VALUE_OUTPUTS:
            return {VALUE_OUTPUTS[task]: outputs}
        if task == "multiclass" or (task == "binary" and output_width > 1):
            class_ids = tf.argmax(outputs, axis=-1)  # softmax over the classes
        else:
            class_ids = tf.cast(outputs > 0.5, tf.int64)  # sigmoid per class
        return {"probabilities": outputs, "class_ids": class_ids}

    feature, cast_to = _example_feature(spec)
    example_spec = tf.TensorSpec([None], tf.string, name="inputs")

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, {input_name: feature})[input_name]
        return tf.cast(parsed, cast_to) if parsed.dtype != cast_to else parsed

    def classify(serialized):
        scores = tf.cast(model(parse(serialized), training=False), tf.float32)
        if task == "binary" and output_width == 1:
            scores = tf.concat([1.0 - scores, scores], axis=-1)
        classes = tf.tile(tf.constant([names]), [tf.shape(scores)[0], 1])
        return {"classes": classes, "scores": scores}

    def regress(serialized):
        values = tf.cast(model(parse(serialized), training=False), tf.float32)
        return {"outputs": tf.reshape(values, [-1])}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=serve, input_signature=[spec])
    example_signature: str | None = None
    if task == "regression":
        if output_width == 1:
            archive.add_endpoint(
                name=REGRESSION_SIGNATURE, fn=regress, input_signature=[example_spec]
            )
            example_signature = REGRESSION_SIGNATURE
    elif task != "reconstruction":
        archive.add_endpoint(
            name=CLASSIFICATION_SIGNATURE, fn=classify, input_signature=[example_spec]
        )
        example_signature = CLASSIFICATION_SIGNATURE
    warmup = _warmup_array(spec, warmup_inputs)

    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=model_dir))
    try:
        saved = staging / "saved_model"
        archive.write_out(str(saved), verbose=False)
        extra = saved / "assets.extra"
        extra.mkdir(exist_ok=True)
        records = write_warmup_requests(
            extra / "tf_serving_warmup_requests",
            input_name=input_name,
            examples=warmup,
            example_signature=example_signature,
        )
        if names:
            (extra / "class_names.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
        metadata = {
            "model_name": model_name,
            "task": task,
            "input": {
                "name": input_name,
                "dtype": spec.dtype.name,
                "shape": [None if d is None else int(d) for d in spec.shape],
            },
            "outputs": (
                [VALUE_OUTPUTS[task]] if task in VALUE_OUTPUTS else ["class_ids", "probabilities"]
            ),
            "signatures": ["serving_default"] + ([example_signature] if example_signature else []),
            "class_names": names,
            "warmup_records": records,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tensorflow": tf.__version__,
            **(metadata or {}),
        }
        (extra / "kts_metadata.json").write_text(
            json.dumps(metadata, indent=2) + "\n", encoding="utf-8"
        )
        # Claim the version number atomically: rename fails if another writer won.
        while True:
            version = next_version(model_dir)
            target = model_dir / str(version)
            try:
                os.rename(saved, target)
                break
            except OSError:
                if not target.exists():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if update_model_config:
        register_version(
            Path(base_path) / MODEL_CONFIG_NAME,
            model_name=model_name,
            base_path=model_dir,
            version=version,
            label=label,
        )
    return Exported(path=target, version=version)
