"""``tf.Example`` inputs for Classify and Regress.

Turns the gRPC ``Input`` message and the REST ``examples``/``context`` JSON into the
serialized ``tf.Example`` strings a classification or regression signature reads, with
TensorFlow Serving's rules (``json_tensor.cc``: whole JSON numbers go to ``int64_list``,
decimals to ``float_list``, strings and ``{"b64": ...}`` to ``bytes_list``, ``true`` and
``false`` to int64 1/0; one feature keeps one kind).
"""

from __future__ import annotations

from typing import Any

from serving.errors import invalid_argument
from serving.tensors import decode_b64, is_b64_object, json_debug, json_type


def serialized_examples(input_proto: Any) -> list[bytes]:
    """The serialized examples of a ``tensorflow.serving.Input``.

    With ``example_list_with_context`` the context's bytes are prepended to each
    example's, which parses as the merge of the two (upstream does the same).
    """
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        out = [e.SerializeToString() for e in input_proto.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = input_proto.example_list_with_context
        context = with_context.context.SerializeToString()
        out = [context + e.SerializeToString() for e in with_context.examples]
    else:
        out = []
    if not out:
        raise invalid_argument("Input is empty.")
    return out


def _kind_name(feature: Any) -> str:
    return {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(
        feature.WhichOneof("kind") or "", "UNKNOWN"
    )


def _check_kind(feature: Any, name: str, kind: str) -> None:
    current = feature.WhichOneof("kind")
    if current is not None and current != kind:
        raise invalid_argument(
            f"Unexpected element type in feature: {name} expecting type: {_kind_name(feature)}"
        )


def _add_value(feature: Any, name: str, value: Any) -> None:
    if value is None or isinstance(value, list):
        raise invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {json_type(value)}"
        )
    if isinstance(value, bool):
        _check_kind(feature, name, "int64_list")
        feature.int64_list.value.append(1 if value else 0)
    elif isinstance(value, dict):
        if not is_b64_object(value):
            raise invalid_argument(
                f"Feature: {name} has element with unexpected JSON type: {json_type(value)}"
            )
        _check_kind(feature, name, "bytes_list")
        feature.bytes_list.value.append(decode_b64(value))
    elif isinstance(value, str):
        _check_kind(feature, name, "bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, float):
        _check_kind(feature, name, "float_list")
        feature.float_list.value.append(value)
    elif isinstance(value, int):
        _check_kind(feature, name, "int64_list")
        if value >= 2**63:
            raise invalid_argument(
                f"Feature: {name} has uint64_t element. Only int64_t is supported."
            )
        if value < -(2**63):
            raise invalid_argument(f"Feature: {name} has an integer out of the int64 range.")
        feature.int64_list.value.append(value)
    else:  # pragma: no cover - json.loads yields no other types
        raise invalid_argument(f"Feature: {name} has element of unexpected type")


def example_from_json(value: Any, example: Any) -> None:
    """Fill a ``tf.train.Example`` from one JSON object of features."""
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type(value)}")
    features = example.features.feature
    for name, content in value.items():
        feature = features[name]
        feature.Clear()
        for item in content if isinstance(content, list) else [content]:
            _add_value(feature, name, item)


def request_input_from_json(document: dict, input_proto: Any, *, method: str) -> None:
    """Fill a ``tensorflow.serving.Input`` from a REST classify/regress body."""
    has_context = "context" in document
    if has_context:
        example_from_json(document["context"], input_proto.example_list_with_context.context)
    if "examples" not in document:
        raise invalid_argument(
            f"JSON Value: {json_debug(document)} When method is {method}, key 'examples' is "
            "expected and was not found"
        )
    examples = document["examples"]
    if not isinstance(examples, list):
        raise invalid_argument(
            f"JSON Value: {json_debug(document)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise invalid_argument(
            f"JSON Value: {json_debug(document)} 'examples' value is an empty array"
        )
    target = (
        input_proto.example_list_with_context.examples
        if has_context
        else input_proto.example_list.examples
    )
    for item in examples:
        example_from_json(item, target.add())
