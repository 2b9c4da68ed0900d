"""Tensor conversions with TensorFlow Serving's rules.

* JSON (REST) -> numpy, following ``tensorflow_serving/util/json_tensor.cc``: a tensor's
  shape is read from the first element at each nesting level, every list at a level
  must have that size, values must match the input's dtype (JSON numbers for floats,
  whole numbers for ints, ``true``/``false`` for bools, strings or ``{"b64": ...}`` for
  DT_STRING), and the error messages are upstream's.
* numpy -> JSON for the ``predictions`` (row) and ``outputs`` (columnar) answers;
  DT_STRING outputs whose name ends in ``_bytes`` are written as ``{"b64": ...}``.
* ``TensorProto`` (gRPC) <-> numpy; answers use the typed ``*_val`` fields, as
  TensorFlow Serving does by default.

Numbers only: nothing here imports TensorFlow except the rare dtypes that numpy
cannot hold natively (bfloat16 and friends), which fall back to ``tf.make_ndarray``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from serving.errors import invalid_argument

# DataType enum number -> (name, numpy dtype). DT_STRING tensors are object arrays of bytes.
DTYPES: dict[int, tuple[str, Any]] = {
    1: ("DT_FLOAT", np.float32),
    2: ("DT_DOUBLE", np.float64),
    3: ("DT_INT32", np.int32),
    4: ("DT_UINT8", np.uint8),
    5: ("DT_INT16", np.int16),
    6: ("DT_INT8", np.int8),
    7: ("DT_STRING", np.object_),
    9: ("DT_INT64", np.int64),
    10: ("DT_BOOL", np.bool_),
    17: ("DT_UINT16", np.uint16),
    19: ("DT_HALF", np.float16),
    22: ("DT_UINT32", np.uint32),
    23: ("DT_UINT64", np.uint64),
}
DT_FLOAT, DT_DOUBLE, DT_STRING, DT_INT64, DT_BOOL = 1, 2, 7, 9, 10
_FLOATS = {1, 2, 19}
_INT_RANGES = {
    3: (-(2**31), 2**31 - 1),
    4: (0, 255),
    5: (-(2**15), 2**15 - 1),
    6: (-(2**7), 2**7 - 1),
    9: (-(2**63), 2**63 - 1),
    17: (0, 2**16 - 1),
    22: (0, 2**32 - 1),
    23: (0, 2**64 - 1),
}
# Which TensorProto field holds each dtype's values (AsProtoField).
_VAL_FIELD = {
    1: "float_val",
    2: "double_val",
    3: "int_val",
    4: "int_val",
    5: "int_val",
    6: "int_val",
    7: "string_val",
    9: "int64_val",
    10: "bool_val",
    17: "int_val",
    19: "half_val",
    22: "uint32_val",
    23: "uint64_val",
}
_NUMPY_TO_DT = {np.dtype(v[1]): k for k, v in DTYPES.items() if v[1] is not np.object_}
_MAX_DEBUG = 256
BYTES_SUFFIX = "_bytes"


def dtype_name(dtype: int) -> str:
    """``DT_FLOAT`` for 1, and so on; ``DT_<n>`` for ones we do not know by name."""
    entry = DTYPES.get(dtype)
    if entry is not None:
        return entry[0]
    try:
        from tensorflow.core.framework import types_pb2

        return str(types_pb2.DataType.Name(dtype))
    except (ImportError, ValueError):
        return f"DT_{dtype}"


def dtype_of(array: np.ndarray) -> int:
    """The DataType enum number for a numpy array (object arrays are DT_STRING)."""
    if array.dtype.kind in "OSU":
        return DT_STRING
    try:
        return _NUMPY_TO_DT[array.dtype]
    except KeyError:
        import tensorflow as tf

        return int(tf.as_dtype(array.dtype).as_datatype_enum)


def shape_text(shape) -> str:
    """``[-1,8,8,1]``: TensorFlow Serving's way of printing a shape (-1 for unknown)."""
    if shape is None:
        return "[?]"
    return "[" + ",".join(str(-1 if d is None else int(d)) for d in shape) + "]"


# ---------------------------------------------------------------------------- JSON in


def json_debug(value: Any) -> str:
    """A JSON value as text for an error message, cut at 256 characters like upstream."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text[:_MAX_DEBUG]


def json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def is_b64_object(value: Any) -> bool:
    """``{"b64": "<string>"}`` and nothing else."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _type_error(value: Any, dtype: int):
    return invalid_argument(
        f"JSON Value: {json_debug(value)} Type: {json_type(value)} is not of expected type: "
        f"{dtype_name(dtype)}"
    )


def decode_b64(value: Any) -> bytes:
    if not is_b64_object(value):
        raise invalid_argument(
            f"JSON Value: {json_debug(value)} not formatted correctly for base64 data"
        )
    text = value["b64"]
    try:
        data = text.encode("ascii")
        # Upstream (absl::Base64Unescape) also takes the URL-safe alphabet and no padding.
        data = data.replace(b"-", b"+").replace(b"_", b"/")
        return base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise invalid_argument("Unable to base64 decode") from None


def _scalar(value: Any, dtype: int) -> Any:
    kind = type(value)
    if dtype in _FLOATS:
        if kind is float:
            return value
        if kind is int:
            try:
                return float(value)
            except OverflowError:
                raise _type_error(value, dtype) from None
        raise _type_error(value, dtype)
    if dtype == DT_STRING:
        if kind is str:
            return value.encode("utf-8", "surrogatepass")
        if kind is dict:
            return decode_b64(value)
        raise _type_error(value, dtype)
    if dtype == DT_BOOL:
        if kind is bool:
            return value
        raise _type_error(value, dtype)
    bounds = _INT_RANGES.get(dtype)
    if bounds is None:
        raise invalid_argument(
            f"Conversion of JSON Value: {json_debug(value)} to type: {dtype_name(dtype)}"
        )
    if kind is not int or not bounds[0] <= value <= bounds[1]:
        raise _type_error(value, dtype)
    return value


def _dense_shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], dtype: int, out: list) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {json_debug(value)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {rank}"
            )
        if isinstance(value, dict) and dtype != DT_STRING:
            raise _type_error(value, dtype)
        out.append(_scalar(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _fast_numeric(value: Any, dtype: int) -> np.ndarray | None:
    """numpy's own parse of a regular nested list of numbers, or None to go the slow way.

    The caller guarantees the request had no ``true``/``false`` token, so numpy
    cannot have turned a bool into a number behind our back.
    """
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        return None
    kind = array.dtype.kind
    if dtype in _FLOATS:
        if kind not in "if":
            return None
        return array.astype(DTYPES[dtype][1], copy=False)
    bounds = _INT_RANGES.get(dtype)
    if bounds is None or kind != "i":
        return None
    if array.size and (array.min() < bounds[0] or array.max() > bounds[1]):
        return None
    return array.astype(DTYPES[dtype][1], copy=False)


def json_to_array(value: Any, dtype: int, *, may_have_bools: bool = True) -> np.ndarray:
    """One input tensor from its JSON value, by TensorFlow Serving's rules.

    Raises:
        ServingError: INVALID_ARGUMENT with upstream's message when the value is ragged,
            nested too deep or shallow, or holds a value of the wrong type.
    """
    if not may_have_bools and (dtype in _FLOATS or dtype in _INT_RANGES):
        fast = _fast_numeric(value, dtype)
        if fast is not None:
            return fast
    shape = _dense_shape(value)
    flat: list = []
    _fill(value, 0, shape, dtype, flat)
    if dtype == DT_STRING:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    if dtype not in DTYPES:
        raise invalid_argument(f"Conversion of JSON to type: {dtype_name(dtype)}")
    return np.asarray(flat, dtype=DTYPES[dtype][1]).reshape(shape)


def instances_to_arrays(
    instances: Any, input_dtypes: Mapping[str, int], *, may_have_bools: bool = True
) -> dict[str, np.ndarray]:
    """The row format (``"instances": [...]``) into one batched array per named input."""
    first = instances[0]
    if not isinstance(first, dict) and len(input_dtypes) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    objects = isinstance(first, dict) and not is_b64_object(first)
    names = sorted(input_dtypes)
    if not objects:
        name = names[0]
        for index, item in enumerate(instances):
            if isinstance(item, dict) and not is_b64_object(item):
                raise invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
        try:
            array = json_to_array(instances, input_dtypes[name], may_have_bools=may_have_bools)
        except Exception as err:
            # Redo element by element for upstream's per-element message.
            _check_elements(instances, name, input_dtypes[name])
            raise err
        return {name: array}
    expected = set(names)
    columns: dict[str, list] = {name: [] for name in names}
    for index, item in enumerate(instances):
        if not isinstance(item, dict) or is_b64_object(item):
            raise invalid_argument(f"Expecting object but got list at item {index} of input list")
        for key in item:
            if key not in expected:
                raise invalid_argument(
                    f"Failed to process element: {index} key: {key} of 'instances' list. "
                    f"Error: INVALID_ARGUMENT: JSON object: does not have named input: {key}"
                )
        if len(item) != len(expected):
            raise invalid_argument(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{json_debug(item)} keys must be equal to: {','.join(names)}"
            )
        for key, value in item.items():
            columns[key].append(value)
    out = {}
    for name in names:
        try:
            out[name] = json_to_array(
                columns[name], input_dtypes[name], may_have_bools=may_have_bools
            )
        except Exception as err:
            _check_elements(columns[name], name, input_dtypes[name], keyed=True)
            raise err
    return out


def _check_elements(items: list, name: str, dtype: int, *, keyed: bool = False) -> None:
    """Raise upstream's per-element error for the first element that does not fit."""
    first_shape: list[int] | None = None
    for index, item in enumerate(items):
        where = f"{index} key: {name}" if keyed else f"{index}"
        shape = _dense_shape(item)
        try:
            _fill(item, 0, shape, dtype, [])
        except Exception as err:
            text = getattr(err, "message", str(err))
            raise invalid_argument(
                f"Failed to process element: {where} of 'instances' list. "
                f"Error: INVALID_ARGUMENT: {text}"
            ) from None
        if first_shape is None:
            first_shape = shape
        elif shape != first_shape:
            size, first_size = int(np.prod(shape)), int(np.prod(first_shape))
            detail = (
                f"Expecting tensor size: {first_size} but got: {size}"
                if size != first_size
                else f"Expecting shape {shape_text(first_shape)} but got: {shape_text(shape)}"
            )
            raise invalid_argument(
                f"Failed to process element: {where} of 'instances' list. "
                f"Error: INVALID_ARGUMENT: {detail}"
            )


def inputs_to_arrays(
    inputs: Any, input_dtypes: Mapping[str, int], *, may_have_bools: bool = True
) -> dict[str, np.ndarray]:
    """The columnar format (``"inputs": ...``) into one array per named input."""
    names = sorted(input_dtypes)
    if not isinstance(inputs, dict) or is_b64_object(inputs):
        if len(names) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        name = names[0]
        return {name: json_to_array(inputs, input_dtypes[name], may_have_bools=may_have_bools)}
    out = {}
    for name in names:
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        out[name] = json_to_array(inputs[name], input_dtypes[name], may_have_bools=may_have_bools)
    return out


# --------------------------------------------------------------------------- JSON out


def _jsonable(name: str, array: np.ndarray) -> Any:
    if array.dtype.kind in "OSU":
        if name.endswith(BYTES_SUFFIX):
            encode = np.frompyfunc(lambda b: {"b64": base64.b64encode(_as_bytes(b)).decode()}, 1, 1)
        else:
            encode = np.frompyfunc(lambda b: _as_bytes(b).decode("utf-8", "replace"), 1, 1)
        return encode(array).tolist() if array.ndim else encode(array)
    if array.dtype.kind == "f" and array.dtype.itemsize < 4:
        array = array.astype(np.float32)
    return array.tolist()


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def row_json(outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``{"predictions": ...}``: one entry per batch row (objects when several outputs)."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    batch = -1
    for name, array in outputs.items():
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and array.shape[0] != batch:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}"
            )
        batch = array.shape[0]
    if len(outputs) == 1:
        ((name, array),) = outputs.items()
        return {"predictions": _jsonable(name, array)}
    names = sorted(outputs)
    columns = [_jsonable(name, outputs[name]) for name in names]
    return {
        "predictions": [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    }


def columnar_json(outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``{"outputs": ...}``: the tensor itself, or an object of named tensors."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    if len(outputs) == 1:
        ((name, array),) = outputs.items()
        return {"outputs": _jsonable(name, array)}
    return {"outputs": {name: _jsonable(name, outputs[name]) for name in sorted(outputs)}}


# One encoder for every response: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(allow_nan=True, separators=(",", ":"))


def dumps(document: Any) -> bytes:
    """JSON text as TensorFlow Serving writes it: NaN and Infinity allowed as tokens."""
    return _ENCODER.encode(document).encode("utf-8")


# ------------------------------------------------------------------------ TensorProto


def proto_to_array(proto: Any) -> np.ndarray:
    """A ``TensorProto`` as a numpy array (bytes objects for DT_STRING).

    Raises:
        ValueError: the proto's values do not fill its shape.
    """
    dtype = proto.dtype
    shape = [d.size for d in proto.tensor_shape.dim]
    entry = DTYPES.get(dtype)
    if entry is None or dtype == 19:
        import tensorflow as tf

        return np.asarray(tf.make_ndarray(proto))
    np_dtype = entry[1]
    count = math.prod(shape)  # a Python int; np.prod cost a tenth of this handler's time
    if any(d < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {shape_text(shape)}")
    if proto.tensor_content and dtype != DT_STRING:
        array = np.frombuffer(proto.tensor_content, dtype=np_dtype)
        if array.size != count:
            raise ValueError(f"{array.size} values in tensor_content for shape {shape_text(shape)}")
        return array.reshape(shape)
    values = getattr(proto, _VAL_FIELD[dtype])
    if dtype == DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
    else:
        array = np.asarray(values, dtype=np_dtype)
    if array.size == count:
        return array.reshape(shape)
    if array.size and array.size < count:
        # TensorFlow fills a short value list with its last value.
        padded = np.empty(count, dtype=array.dtype)
        padded[: array.size] = array
        padded[array.size :] = array[-1]
        return padded.reshape(shape)
    if array.size == 0 and count == 0:
        return array.reshape(shape)
    if array.size == 0:
        return (
            np.zeros(shape, dtype=np_dtype) if dtype != DT_STRING else np.full(shape, b"", object)
        )
    raise ValueError(f"{array.size} values for shape {shape_text(shape)}")


def array_to_proto(array: np.ndarray, proto: Any) -> Any:
    """Fill ``proto`` (a ``TensorProto``) from ``array`` using the typed value field."""
    dtype = dtype_of(array)
    proto.dtype = dtype
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add().size = int(size)
    field = _VAL_FIELD.get(dtype)
    if field is None or dtype == 19:
        import tensorflow as tf

        proto.CopyFrom(tf.make_tensor_proto(array))
        return proto
    flat = array.ravel()
    if dtype == DT_STRING:
        getattr(proto, field).extend(_as_bytes(v) for v in flat)
    else:
        getattr(proto, field).extend(flat.tolist())
    return proto
