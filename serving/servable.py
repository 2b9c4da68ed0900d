"""One loaded model version: its signatures, checks on requests, and warm-up.

A `Servable` wraps ``tf.saved_model.load(BASE/NAME/VERSION)``. Its SignatureDefs are
read from ``saved_model.pb`` itself, so metadata answers are exactly what TensorFlow
Serving would return. Requests are checked before they reach TensorFlow, and every
error names what the signature expects (input names, dtypes and shapes) next to what
was received -- the message upstream users asked for in tensorflow/serving#435.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving import compat, errors
from serving.batching import Batcher
from serving.config import BatchingParameters
from serving.errors import ServingError, failed_precondition, invalid_argument
from serving.tensors import DT_STRING, DTYPES, dtype_name, dtype_of, proto_to_array, shape_text

log = logging.getLogger("kts.serving")
DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_INPUTS, CLASSIFY_CLASSES, CLASSIFY_SCORES = "inputs", "classes", "scores"
REGRESS_INPUTS, REGRESS_OUTPUTS = "inputs", "outputs"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000
INIT_OP_SIGNATURE = "__saved_model_init_op"


@dataclass(frozen=True)
class TensorSpec:
    """A signature input or output: dtype enum and shape (None for unknown dims)."""

    name: str
    dtype: int
    shape: tuple[int | None, ...] | None

    def describe(self) -> str:
        return f"{self.name}: {dtype_name(self.dtype)} {shape_text(self.shape)}"

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, shape, strict=True)
        )


def _spec_from_tensor_info(name: str, info: Any) -> TensorSpec:
    shape_proto = info.tensor_shape
    shape = (
        None
        if shape_proto.unknown_rank
        else tuple(None if d.size < 0 else int(d.size) for d in shape_proto.dim)
    )
    return TensorSpec(name, int(info.dtype), shape)


class Signature:
    """One SignatureDef and the function that runs it."""

    def __init__(self, name: str, signature_def: Any, function: Any):
        self.name = name
        self.signature_def = signature_def
        self.function = function
        self.method_name = signature_def.method_name
        self.inputs = {k: _spec_from_tensor_info(k, v) for k, v in signature_def.inputs.items()}
        self.outputs = {k: _spec_from_tensor_info(k, v) for k, v in signature_def.outputs.items()}
        self.input_dtypes = {k: s.dtype for k, s in self.inputs.items()}
        self.hint = ""
        self._flat = compat.flat_call(function)
        self._flat_order = (
            _flat_input_order(function, self.inputs) if self._flat is not None else None
        )

    def describe_inputs(self) -> str:
        return "; ".join(self.inputs[k].describe() for k in sorted(self.inputs))

    def expected(self) -> str:
        text = f"Signature {self.name!r} expects inputs {{{self.describe_inputs()}}}."
        return f"{text} {self.hint}" if self.hint else text

    def explain(self, message: str) -> str:
        """``message`` followed by what this signature expects."""
        message = message.rstrip()
        if not message.endswith((".", ":")):
            message += "."
        return f"{message} {self.expected()}"

    def call(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the function; TensorFlow errors become ServingErrors with their code."""
        import tensorflow as tf

        try:
            result = self._call_by_position(inputs) if self._flat_order is not None else None
            if result is None:
                result = self.function(**inputs)
        except tf.errors.OpError as err:
            code = _TF_CODES.get(err.error_code, errors.UNKNOWN)
            raise ServingError(code, self.explain(clean_tf_message(err.message))) from None
        except (TypeError, ValueError) as err:
            raise invalid_argument(self.explain(str(err))) from None
        return {name: tensor.numpy() for name, tensor in result.items()}

    def _call_by_position(self, inputs: Mapping[str, np.ndarray]) -> Any:
        """The same function run without the keyword-binding layer, or None to go the usual way.

        ``function(**inputs)`` spends about 0.2 ms of Python per call binding keywords to
        the structured signature and converting each array (measured on the digits CNN,
        where the whole call is 0.6-0.9 ms). Inputs whose dtype and shape fit the
        signature can go straight to the concrete function's flat call, the step that
        binding ends in -- the same graph with the same tensors, so the same answers.
        Anything else (a dtype or shape the signature does not take, so the usual call
        can word the error; a TensorFlow outside `serving.compat.FLAT_CALL_RANGE`) takes
        the usual way.
        """
        import tensorflow as tf

        order = self._flat_order
        assert order is not None
        args = []
        for name in order:
            array = inputs.get(name)
            spec = self.inputs[name]
            if (
                array is None
                or dtype_of(array) != spec.dtype
                or not spec.accepts_shape(array.shape)
            ):
                return None
            args.append(tf.constant(array))
        if len(args) != len(inputs):
            return None
        try:
            result = self._flat(args)  # type: ignore[misc]
        except (AttributeError, TypeError):
            log.warning("Signature %r: flat call failed; using the keyword call", self.name)
            self._flat_order = None
            return None
        if not isinstance(result, Mapping):
            self._flat_order = None
            return None
        return result


_TF_CODES = {number: name for name, number in errors.CODE_NUMBER.items()}
_TF_NOISE = ("Graph execution error", "Detected at node", "<stack traces unavailable>", "[[{{node")


def clean_tf_message(message: str) -> str:
    """A TensorFlow runtime error without its graph-location noise, on one line."""
    lines = [line.strip() for line in message.splitlines()]
    kept = [line for line in lines if line and not line.startswith(_TF_NOISE)]
    text = " ".join(kept) or message.strip()
    return text.split(" [Op:", 1)[0].strip()


def _flat_input_order(function: Any, inputs: Mapping[str, TensorSpec]) -> tuple[str, ...] | None:
    """The input names in the order ``function`` takes them flat, or None if it cannot.

    Only for functions whose every parameter is one tensor named like its signature
    input, with the SignatureDef's dtype; the keyword call handles everything else.
    """
    try:
        import tensorflow as tf

        parameters = function.function_type.parameters
        captured = function.captured_inputs
        flat_inputs = function.inputs
    except (AttributeError, TypeError):
        return None
    names = tuple(parameters)
    if set(names) != set(inputs) or len(flat_inputs) != len(names) + len(captured):
        return None
    for name, parameter in parameters.items():
        constraint = parameter.type_constraint
        if not isinstance(constraint, tf.TensorSpec):
            return None
        if constraint.dtype.as_datatype_enum != inputs[name].dtype:
            return None
    return names


def _read_signature_defs(path: Path) -> dict[str, Any]:
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    pb = path / "saved_model.pb"
    if pb.is_file():
        saved_model.ParseFromString(pb.read_bytes())
    else:
        from google.protobuf import text_format

        text_format.Parse((path / "saved_model.pbtxt").read_text(encoding="utf-8"), saved_model)
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{path}: no MetaGraphDef with tag 'serve'")


class Servable:
    """A loaded version of a model.

    Args:
        name: the model's name.
        version: its version number.
        path: the version folder (``BASE/NAME/VERSION``).
        batching: batch Predict calls across requests with these parameters (None: off).
        on_batch: told (model, version, signature, size) for each batch run.
    """

    def __init__(
        self,
        name: str,
        version: int,
        path: str | Path,
        *,
        batching: BatchingParameters | None = None,
        on_batch: Callable[[str, int, str, int], None] | None = None,
    ):
        import tensorflow as tf

        self.name = name
        self.version = int(version)
        self.path = Path(path)
        if (
            not (self.path / "saved_model.pb").is_file()
            and not (self.path / "saved_model.pbtxt").is_file()
        ):
            raise FileNotFoundError(
                f"SavedModel file does not exist at: {self.path}/{{saved_model.pbtxt|saved_model.pb}}"
            )
        self.signature_defs = _read_signature_defs(self.path)
        self._loaded = tf.saved_model.load(str(self.path), tags=["serve"])
        functions = self._loaded.signatures
        self.signatures: dict[str, Signature] = {
            key: Signature(key, sig_def, functions[key])
            for key, sig_def in self.signature_defs.items()
            if key in functions
        }
        self.class_names = self._read_class_names()
        self.export_metadata = self._read_export_metadata()
        self._describe_example_inputs()
        self._batching = batching
        self._on_batch = on_batch
        self._batchers: dict[str, Batcher] = {}
        self._batchers_lock = threading.Lock()
        self._closed = False

    def _read_class_names(self) -> list[str]:
        names = self.path / "assets.extra" / "class_names.txt"
        if not names.is_file():
            return []
        return names.read_text(encoding="utf-8").splitlines()

    def _read_export_metadata(self) -> dict:
        path = self.path / "assets.extra" / "kts_metadata.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _describe_example_inputs(self) -> None:
        """Tell callers of tf.Example signatures which feature the examples must carry."""
        spec = self.export_metadata.get("input")
        if not isinstance(spec, dict) or "name" not in spec:
            return
        shape = [d for d in spec.get("shape", [])[1:] if isinstance(d, int)]
        count = int(np.prod(shape)) if shape else 1
        dtype = str(spec.get("dtype", "float32"))
        kind = (
            "bytes_list" if dtype == "string" else "int64_list" if "int" in dtype else "float_list"
        )
        hint = (
            f"Each serialized tf.Example needs the feature '{spec['name']}': a {kind} of {count} "
            f"value(s) (raw input of shape {shape})."
        )
        for sig in self.signatures.values():
            if sig.name != DEFAULT_SIGNATURE and set(sig.inputs) == {CLASSIFY_INPUTS}:
                sig.hint = hint

    def close(self) -> None:
        """Stop the batch threads; requests still holding this version run unbatched."""
        with self._batchers_lock:
            self._closed = True
            for batcher in self._batchers.values():
                batcher.close()
            self._batchers.clear()

    # ---------------------------------------------------------------- signatures

    def signature(self, name: str) -> Signature:
        """The named signature (``serving_default`` for ""); FAILED_PRECONDITION if absent."""
        key = name or DEFAULT_SIGNATURE
        sig = self.signatures.get(key)
        if sig is None:
            raise failed_precondition(
                f'Serving signature key "{key}" not found. Available signatures: '
                f"{', '.join(self.public_signatures()) or '(none)'}."
            )
        return sig

    def public_signatures(self) -> list[str]:
        return sorted(k for k in self.signatures if k != INIT_OP_SIGNATURE)

    # ------------------------------------------------------------------- predict

    def check_inputs(self, sig: Signature, inputs: Mapping[str, np.ndarray]) -> None:
        """Raise INVALID_ARGUMENT naming the expected inputs unless ``inputs`` fit ``sig``."""
        sent, wanted = set(inputs), set(sig.inputs)
        if sent != wanted:
            extra, missing = sorted(sent - wanted), sorted(wanted - sent)
            if len(sent) != len(wanted):
                raise invalid_argument(
                    sig.explain(
                        f"input size does not match signature: {len(sent)}!={len(wanted)} "
                        f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                        f"Sent extra: {{{','.join(extra)}}}. Missing but required: "
                        f"{{{','.join(missing)}}}."
                    )
                )
            raise invalid_argument(
                sig.explain(
                    f"input tensor alias not found in signature: {', '.join(extra)}. Inputs "
                    f"expected to be in the set {{{','.join(sorted(wanted))}}}."
                )
            )
        for name, array in inputs.items():
            spec = sig.inputs[name]
            got = dtype_of(array)
            if got != spec.dtype:
                raise invalid_argument(
                    sig.explain(
                        f"input '{name}': received dtype {dtype_name(got)}, expected "
                        f"{dtype_name(spec.dtype)}."
                    )
                )
            if not spec.accepts_shape(array.shape):
                raise invalid_argument(
                    sig.explain(
                        f"input '{name}': received shape {shape_text(array.shape)}, expected "
                        f"{shape_text(spec.shape)}."
                    )
                )

    def predict(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        *,
        batch: bool = True,
    ) -> tuple[str, dict[str, np.ndarray]]:
        """Run a signature on named input arrays; returns (signature key, outputs)."""
        sig = self._predict_signature(signature_name, inputs, output_filter)
        batcher = self._batcher(sig) if batch else None
        outputs = batcher(inputs) if batcher is not None else sig.call(inputs)
        return sig.name, _filtered(outputs, output_filter)

    async def predict_async(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str],
        executor: Executor,
    ) -> tuple[str, dict[str, np.ndarray]]:
        """`predict` for a caller on an asyncio event loop: the model runs in ``executor``."""
        sig = self._predict_signature(signature_name, inputs, output_filter)
        batcher = self._batcher(sig)
        if batcher is not None:
            outputs = await batcher.call_async(inputs, executor)
        else:
            outputs = await asyncio.get_running_loop().run_in_executor(executor, sig.call, inputs)
        return sig.name, _filtered(outputs, output_filter)

    def _predict_signature(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str]
    ) -> Signature:
        """The signature to run, once the inputs and the output filter are checked against it."""
        sig = self.signature(signature_name)
        self.check_inputs(sig, inputs)
        for alias in output_filter:
            if alias not in sig.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be "
                    f"in the set {{{','.join(sorted(sig.outputs))}}}."
                )
        if len(set(output_filter)) != len(output_filter):
            raise invalid_argument(f"duplicate output tensor alias: {list(output_filter)}")
        return sig

    def _batcher(self, sig: Signature) -> Batcher | None:
        """The signature's batcher; None when batching is off or this version is closing."""
        if self._batching is None or self._closed:
            return None
        batcher = self._batchers.get(sig.name)
        if batcher is not None:
            return batcher
        with self._batchers_lock:
            if self._closed:
                return None
            batcher = self._batchers.get(sig.name)
            if batcher is None:
                on_batch = self._on_batch
                report = (
                    (lambda size: on_batch(self.name, self.version, sig.name, size))
                    if on_batch is not None
                    else None
                )
                batcher = Batcher(
                    sig.call,
                    self._batching,
                    on_batch=report,
                    name=f"batch-{self.name}-{self.version}-{sig.name}",
                )
                self._batchers[sig.name] = batcher
        return batcher

    # ---------------------------------------------------------- classify / regress

    def _example_signature(self, signature_name: str, kind: str) -> Signature:
        key = signature_name or DEFAULT_SIGNATURE
        sig = self.signatures.get(key)
        if sig is None:
            raise invalid_argument(
                f"No signature was found with the name: {key}. Available signatures: "
                f"{', '.join(self.public_signatures()) or '(none)'}."
            )
        hint = (
            f" Signature {key!r} has inputs {{{sig.describe_inputs()}}} and outputs "
            f"{{{', '.join(sorted(sig.outputs))}}}; a {kind} signature takes serialized "
            f"tf.Example strings as 'inputs'. {self._kind_hint(kind)}"
        )
        if len(sig.inputs) != 1:
            raise invalid_argument("Expected one input Tensor." + hint)
        if kind == "classification":
            if len(sig.outputs) not in (1, 2):
                raise invalid_argument(
                    f"Expected one or two output Tensors, found {len(sig.outputs)}." + hint
                )
            if CLASSIFY_INPUTS not in sig.inputs:
                raise invalid_argument("No classification inputs found in SignatureDef." + hint)
            if CLASSIFY_CLASSES not in sig.outputs and CLASSIFY_SCORES not in sig.outputs:
                raise invalid_argument(
                    "Expected classification signature outputs to contain classes and/or "
                    "scores." + hint
                )
        else:
            if len(sig.outputs) != 1:
                raise invalid_argument("Expected one output Tensor." + hint)
            if REGRESS_INPUTS not in sig.inputs:
                raise invalid_argument("No regression inputs found in SignatureDef." + hint)
            if REGRESS_OUTPUTS not in sig.outputs:
                raise invalid_argument("No regression outputs found in SignatureDef." + hint)
        return sig

    def _kind_hint(self, kind: str) -> str:
        names = [
            key
            for key, sig in self.signatures.items()
            if CLASSIFY_INPUTS in sig.inputs
            and (
                (
                    kind == "classification"
                    and ({CLASSIFY_CLASSES, CLASSIFY_SCORES} & set(sig.outputs))
                )
                or (kind == "regression" and REGRESS_OUTPUTS in sig.outputs)
            )
        ]
        if names:
            return f"This model's {kind} signatures: {', '.join(sorted(names))}."
        return f"This model has no {kind} signature."

    def _run_examples(self, sig: Signature, serialized: Sequence[bytes]) -> dict[str, np.ndarray]:
        examples = np.empty(len(serialized), dtype=object)
        examples[:] = list(serialized)
        return sig.call({CLASSIFY_INPUTS: examples})

    def classify(
        self, signature_name: str, serialized: Sequence[bytes]
    ) -> tuple[str, np.ndarray | None, np.ndarray | None]:
        """(signature key, classes [batch, n] bytes or None, scores [batch, n] or None)."""
        sig = self._example_signature(signature_name, "classification")
        outputs = self._run_examples(sig, serialized)
        classes, scores = outputs.get(CLASSIFY_CLASSES), outputs.get(CLASSIFY_SCORES)
        n = len(serialized)
        for label, tensor, want in (
            (CLASSIFY_CLASSES, classes, DT_STRING),
            (CLASSIFY_SCORES, scores, 1),
        ):
            if tensor is None:
                continue
            if tensor.ndim != 2:
                raise invalid_argument(
                    f"Expected Tensor shape: [batch_size num_classes] but got {shape_text(tensor.shape)}"
                )
            if dtype_of(tensor) != want:
                raise invalid_argument(
                    f"Expected {label} Tensor of {dtype_name(want)}. Got: {dtype_name(dtype_of(tensor))}"
                )
            if tensor.shape[0] != n:
                raise invalid_argument(
                    f"Expected {label} output batch size of {n}. Got: {tensor.shape[0]}"
                )
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise invalid_argument(
                "Tensors class and score should match in dim_size(1). Got "
                f"{classes.shape[1]} vs. {scores.shape[1]}"
            )
        return sig.name, classes, scores

    def regress(self, signature_name: str, serialized: Sequence[bytes]) -> tuple[str, np.ndarray]:
        """(signature key, one float per example)."""
        sig = self._example_signature(signature_name, "regression")
        out = self._run_examples(sig, serialized)[REGRESS_OUTPUTS]
        if not (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)):
            raise invalid_argument(
                "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
                f"got {shape_text(out.shape)}"
            )
        if out.shape[0] != len(serialized):
            raise invalid_argument(
                f"Input batch size did not match output batch size: {len(serialized)} vs. "
                f"{out.shape[0]}"
            )
        if dtype_of(out) != 1:
            raise invalid_argument(
                f"Expected output Tensor of DT_FLOAT.  Got: {dtype_name(dtype_of(out))}"
            )
        return sig.name, out.reshape(-1)

    # -------------------------------------------------------------------- warm-up

    def warmup(self, iterations: int = 1) -> int:
        """Replay ``assets.extra/tf_serving_warmup_requests``; returns the records read.

        Raises:
            ServingError: a record is malformed, fails, or there are more than 1,000.
        """
        path = self.path / "assets.extra" / WARMUP_FILE
        if not path.is_file():
            return 0
        from tensorflow_serving.apis import prediction_log_pb2

        from serving.examples import serialized_examples

        count = 0
        for record in read_tfrecords(path):
            log = prediction_log_pb2.PredictionLog()
            try:
                log.ParseFromString(record)
            except Exception:  # protobuf raises its own DecodeError
                raise invalid_argument(f"Failed to parse warmup record from {path}") from None
            kind = log.WhichOneof("log_type")
            for _ in range(max(iterations, 1)):
                if kind == "predict_log":
                    request = log.predict_log.request
                    inputs = {}
                    for key, proto in request.inputs.items():
                        try:
                            inputs[key] = proto_to_array(proto)
                        except ValueError as err:
                            raise invalid_argument(f"warmup tensor {key!r}: {err}") from None
                    self.predict(
                        request.model_spec.signature_name,
                        inputs,
                        list(request.output_filter),
                        batch=False,
                    )
                elif kind == "classify_log":
                    request = log.classify_log.request
                    self.classify(
                        request.model_spec.signature_name, serialized_examples(request.input)
                    )
                elif kind == "regress_log":
                    request = log.regress_log.request
                    self.regress(
                        request.model_spec.signature_name, serialized_examples(request.input)
                    )
                elif kind == "multi_inference_log":
                    request = log.multi_inference_log.request
                    examples = serialized_examples(request.input)
                    for task in request.tasks:
                        if task.method_name.endswith("regress"):
                            self.regress(task.model_spec.signature_name, examples)
                        else:
                            self.classify(task.model_spec.signature_name, examples)
                else:
                    raise invalid_argument(f"Unsupported log_type for warmup: {kind}")
            count += 1
            if count > MAX_WARMUP_RECORDS:
                raise invalid_argument(
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
                )
        return count


def read_tfrecords(path: str | Path):
    """Yield the records of a TFRecord file (length- and data-CRCs are checked by TF)."""
    import tensorflow as tf

    try:
        for record in tf.data.TFRecordDataset(str(path)):
            yield record.numpy()
    except tf.errors.OpError as err:
        raise invalid_argument(f"{path}: {err.message}") from None


def numpy_dtype(dtype: int) -> Any:
    """The numpy dtype for a DataType enum number."""
    return DTYPES[dtype][1]


def _filtered(
    outputs: dict[str, np.ndarray], output_filter: Sequence[str]
) -> dict[str, np.ndarray]:
    return {k: outputs[k] for k in output_filter} if output_filter else outputs
