"""Small clients for TensorFlow Serving's REST and gRPC APIs (``kts serve`` or the official image).

Example:
    >>> rest = RestClient("localhost:8501")
    >>> rest.predict("digits", instances=images.tolist())["predictions"][0]["class_ids"]
    >>> grpc_client = GrpcClient("localhost:8500")
    >>> grpc_client.predict("digits", {"image": images})["probabilities"].shape
    (n, 10)

Both raise `ServingClientError` carrying the server's status code and message. The
REST client needs only ``requests``; the gRPC one imports TensorFlow (for the stubs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class ServingClientError(Exception):
    """The server answered with an error (or could not be reached).

    Attributes:
        code: the canonical status name (``INVALID_ARGUMENT``...) for gRPC, the HTTP
            status as text for REST, or ``UNAVAILABLE`` when nothing answered.
        message: the server's error message.
    """

    def __init__(self, code: str, message: str, *, http_status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status


def _model_path(model: str, version: int | None, label: str | None) -> str:
    from urllib.parse import quote

    if version is not None and label is not None:
        raise ValueError("pass either `version` or `label`, not both")
    path = f"/v1/models/{quote(model, safe='')}"
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label is not None:
        path += f"/labels/{quote(label, safe='')}"
    return path


class RestClient:
    """JSON over HTTP, one keep-alive session.

    Args:
        address: ``host:port`` of the REST API (or a full ``http://`` URL).
        timeout: seconds per request.
    """

    def __init__(self, address: str, *, timeout: float = 30.0):
        import requests

        self.base = address if address.startswith(("http://", "https://")) else f"http://{address}"
        self.timeout = timeout
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def request(self, method: str, path: str, body: bytes | None = None) -> Any:
        """Send one request; returns the decoded JSON answer or raises `ServingClientError`."""
        import requests

        try:
            response = self.session.request(
                method,
                self.base + path,
                data=body,
                headers={"Content-Type": "application/json"} if body is not None else None,
                timeout=self.timeout,
            )
        except requests.RequestException as err:
            raise ServingClientError("UNAVAILABLE", f"cannot reach {self.base}: {err}") from None
        try:
            document = json.loads(response.content) if response.content else {}
        except ValueError:
            document = {"error": response.text}
        if response.status_code != 200:
            message = (
                document.get("error", response.text)
                if isinstance(document, dict)
                else response.text
            )
            raise ServingClientError(
                str(response.status_code), str(message), http_status=response.status_code
            )
        return document

    def status(self, model: str, *, version: int | None = None, label: str | None = None) -> Any:
        return self.request("GET", _model_path(model, version, label))

    def metadata(self, model: str, *, version: int | None = None, label: str | None = None) -> Any:
        return self.request("GET", _model_path(model, version, label) + "/metadata")

    def post(
        self,
        model: str,
        verb: str,
        document: Mapping[str, Any],
        *,
        version: int | None = None,
        label: str | None = None,
    ) -> Any:
        body = json.dumps(document, allow_nan=True).encode("utf-8")
        return self.request("POST", f"{_model_path(model, version, label)}:{verb}", body)

    def predict(
        self,
        model: str,
        *,
        instances: Any = None,
        inputs: Any = None,
        signature_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
    ) -> Any:
        """``instances`` (row format) or ``inputs`` (columnar); numpy arrays are fine."""
        if (instances is None) == (inputs is None):
            raise ValueError("pass exactly one of `instances` or `inputs`")
        document: dict[str, Any] = {}
        if signature_name:
            document["signature_name"] = signature_name
        if instances is not None:
            document["instances"] = _to_json(instances)
        else:
            document["inputs"] = _to_json(inputs)
        return self.post(model, "predict", document, version=version, label=label)

    def classify(
        self,
        model: str,
        examples: Sequence[Mapping[str, Any]],
        *,
        context: Mapping[str, Any] | None = None,
        signature_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
    ) -> Any:
        return self.post(
            model,
            "classify",
            _examples_document(examples, context, signature_name),
            version=version,
            label=label,
        )

    def regress(
        self,
        model: str,
        examples: Sequence[Mapping[str, Any]],
        *,
        context: Mapping[str, Any] | None = None,
        signature_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
    ) -> Any:
        return self.post(
            model,
            "regress",
            _examples_document(examples, context, signature_name),
            version=version,
            label=label,
        )


def _to_json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def _examples_document(
    examples: Sequence[Mapping[str, Any]],
    context: Mapping[str, Any] | None,
    signature_name: str | None,
) -> dict[str, Any]:
    document: dict[str, Any] = {"examples": [_to_json(dict(e)) for e in examples]}
    if context is not None:
        document["context"] = _to_json(dict(context))
    if signature_name:
        document["signature_name"] = signature_name
    return document


class GrpcClient:
    """The stock ``tensorflow_serving.apis`` stubs behind a few plain methods.

    Args:
        address: ``host:port`` of the gRPC API.
        timeout: seconds per call.
        max_message_bytes: largest answer accepted.
    """

    def __init__(
        self, address: str, *, timeout: float = 30.0, max_message_bytes: int = 256 * 1024 * 1024
    ):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.address = address
        self.timeout = timeout
        self.channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def _call(self, method: Any, request: Any) -> Any:
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            code = err.code().name if hasattr(err, "code") else "UNKNOWN"
            details = err.details() if hasattr(err, "details") else str(err)
            raise ServingClientError(code, details or "") from None

    @staticmethod
    def _spec(
        spec: Any,
        model: str,
        version: int | None,
        label: str | None,
        signature_name: str | None = None,
    ) -> None:
        if version is not None and label is not None:
            raise ValueError("pass either `version` or `label`, not both")
        spec.name = model
        if version is not None:
            spec.version.value = int(version)
        if label is not None:
            spec.version_label = label
        if signature_name:
            spec.signature_name = signature_name

    def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        signature_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Named numpy inputs in, named numpy outputs out."""
        from tensorflow_serving.apis import predict_pb2

        from serving.tensors import array_to_proto, proto_to_array

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, model, version, label, signature_name)
        for name, value in inputs.items():
            array = value if isinstance(value, np.ndarray) else np.asarray(value)
            if array.dtype.kind == "U":
                array = np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(array)
            array_to_proto(array, request.inputs[name])
        request.output_filter.extend(output_filter)
        response = self._call(self.prediction.Predict, request)
        return {name: proto_to_array(proto) for name, proto in response.outputs.items()}

    def predict_json(
        self,
        model: str,
        document: Mapping[str, Any],
        *,
        version: int | None = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        """A REST-shaped predict body sent over gRPC; answers in the REST shape too.

        The signature's input dtypes come from GetModelMetadata, so the JSON is read
        exactly as the REST API would read it.
        """
        from serving.errors import ServingError
        from serving.tensors import columnar_json, inputs_to_arrays, instances_to_arrays, row_json

        signature_name = str(document.get("signature_name", "") or "serving_default")
        signatures = self.metadata(model, version=version, label=label)
        if signature_name not in signatures:
            raise ServingClientError(
                "INVALID_ARGUMENT",
                f'Serving signature name: "{signature_name}" not found in signature def',
            )
        dtypes = {k: int(v.dtype) for k, v in signatures[signature_name].inputs.items()}
        try:
            if "instances" in document:
                if not isinstance(document["instances"], list) or not document["instances"]:
                    raise ServingClientError(
                        "INVALID_ARGUMENT", "Expecting 'instances' to be a non-empty list/array"
                    )
                arrays = instances_to_arrays(document["instances"], dtypes)
                row = True
            elif "inputs" in document:
                arrays = inputs_to_arrays(document["inputs"], dtypes)
                row = False
            else:
                raise ServingClientError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key")
        except ServingError as err:
            raise ServingClientError(err.code, err.message) from None
        outputs = self.predict(
            model, arrays, signature_name=signature_name, version=version, label=label
        )
        return row_json(outputs) if row else columnar_json(outputs)

    def _examples_request(self, request: Any, examples: Sequence[Any], context: Any) -> None:
        import tensorflow as tf

        def as_example(value: Any) -> Any:
            if isinstance(value, tf.train.Example):
                return value
            example = tf.train.Example()
            from serving.examples import example_from_json

            example_from_json(_to_json(dict(value)), example)
            return example

        if context is not None:
            request.input.example_list_with_context.context.CopyFrom(as_example(context))
            target = request.input.example_list_with_context.examples
        else:
            target = request.input.example_list.examples
        for value in examples:
            target.add().CopyFrom(as_example(value))

    def classify(
        self,
        model: str,
        examples: Sequence[Any],
        *,
        context: Any = None,
        signature_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Examples (``tf.train.Example`` or feature dicts) -> per example [(label, score), ...]."""
        from tensorflow_serving.apis import classification_pb2

        request = classification_pb2.ClassificationRequest()
        self._spec(request.model_spec, model, version, label, signature_name)
        self._examples_request(request, examples, context)
        response = self._call(self.prediction.Classify, request)
        return [
            [(c.label, c.score) for c in item.classes] for item in response.result.classifications
        ]

    def regress(
        self,
        model: str,
        examples: Sequence[Any],
        *,
        context: Any = None,
        signature_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
    ) -> list[float]:
        from tensorflow_serving.apis import regression_pb2

        request = regression_pb2.RegressionRequest()
        self._spec(request.model_spec, model, version, label, signature_name)
        self._examples_request(request, examples, context)
        response = self._call(self.prediction.Regress, request)
        return [r.value for r in response.result.regressions]

    def metadata(
        self, model: str, *, version: int | None = None, label: str | None = None
    ) -> dict[str, Any]:
        """Signature name -> ``SignatureDef``."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._spec(request.model_spec, model, version, label)
        request.metadata_field.append("signature_def")
        response = self._call(self.prediction.GetModelMetadata, request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return dict(signatures.signature_def)

    def status(
        self, model: str, *, version: int | None = None, label: str | None = None
    ) -> list[dict[str, Any]]:
        """[{"version", "state", "error_code", "error_message"}], newest first."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model, version, label)
        response = self._call(self.models.GetModelStatus, request)
        states = get_model_status_pb2.ModelVersionStatus.State
        codes = (
            get_model_status_pb2.ModelVersionStatus.DESCRIPTOR.fields_by_name["status"]
            .message_type.fields_by_name["error_code"]
            .enum_type
        )

        return [
            {
                "version": int(s.version),
                "state": states.Name(s.state),
                "error_code": codes.values_by_number[s.status.error_code].name,
                "error_message": s.status.error_message,
            }
            for s in response.model_version_status
        ]

    def reload_config(self, config: Any) -> Any:
        """``HandleReloadConfigRequest`` with a ``ModelServerConfig`` message."""
        from tensorflow_serving.apis import model_management_pb2

        request = model_management_pb2.ReloadConfigRequest()
        request.config.CopyFrom(config)
        return self._call(self.models.HandleReloadConfigRequest, request)
