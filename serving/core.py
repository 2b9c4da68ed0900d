"""Request handling shared by the gRPC and REST front ends.

`ServingCore` answers the ``PredictionService`` and ``ModelService`` calls with the
request and response messages of ``tensorflow_serving.apis``; the REST front end reuses
its lookups, model-status and metadata answers, and its metrics bookkeeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from serving import errors
from serving.config import settings_from_proto
from serving.errors import ServingConfigError, ServingError, invalid_argument
from serving.examples import serialized_examples
from serving.manager import Manager
from serving.metrics import Metrics
from serving.tensors import array_to_proto, proto_to_array

SIGNATURE_DEF_FIELD = "signature_def"


class Call:
    """Times one request and records it in the metrics when it ends."""

    __slots__ = (
        "_metrics",
        "api",
        "code",
        "entrypoint",
        "model",
        "signature",
        "started",
        "version",
    )

    def __init__(self, metrics: Metrics, api: str, entrypoint: str, model: str = ""):
        self._metrics = metrics
        self.api, self.entrypoint, self.model = api, entrypoint, model
        self.version, self.signature, self.code = "", "", errors.OK
        self.started = time.perf_counter()

    def served_by(self, servable: Any, signature: str = "") -> None:
        self.version = str(servable.version)
        self.signature = signature

    def finish(self, code: str = errors.OK) -> None:
        self._metrics.observe_request(
            model=self.model,
            version=self.version,
            signature=self.signature,
            api=self.api,
            entrypoint=self.entrypoint,
            code=code,
            seconds=time.perf_counter() - self.started,
        )


def model_spec_choice(spec: Any) -> tuple[int | None, str | None]:
    """(version, label) from a ModelSpec's ``version_choice`` oneof."""
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return int(spec.version.value), None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


class ServingCore:
    """The model server's request logic, independent of the transport."""

    def __init__(
        self,
        manager: Manager,
        metrics: Metrics,
        *,
        on_reload: Callable[[Any], None] | None = None,
    ):
        self.manager = manager
        self.metrics = metrics
        self._on_reload = on_reload
        from tensorflow_serving.apis import (
            classification_pb2,
            get_model_metadata_pb2,
            get_model_status_pb2,
            model_management_pb2,
            predict_pb2,
            regression_pb2,
        )

        self.pb = {
            "predict": predict_pb2,
            "classification": classification_pb2,
            "regression": regression_pb2,
            "metadata": get_model_metadata_pb2,
            "status": get_model_status_pb2,
            "management": model_management_pb2,
        }

    def call(self, api: str, entrypoint: str, model: str = "") -> Call:
        return Call(self.metrics, api, entrypoint, model)

    def servable_for(self, spec: Any) -> Any:
        version, label = model_spec_choice(spec)
        return self.manager.servable(spec.name, version, label)

    @staticmethod
    def _fill_spec(target: Any, servable: Any, signature: str | None) -> None:
        target.name = servable.name
        target.version.value = servable.version
        if signature is not None:
            target.signature_name = signature

    # -------------------------------------------------------------------- Predict

    def predict(self, request: Any, call: Call) -> Any:
        servable, inputs = self._predict_inputs(request, call)
        signature, outputs = servable.predict(
            request.model_spec.signature_name, inputs, list(request.output_filter)
        )
        return self._predict_response(servable, signature, outputs)

    async def predict_async(self, request: Any, call: Call, executor: Executor) -> Any:
        """`predict` on an asyncio event loop; the model call runs in ``executor``."""
        servable, inputs = self._predict_inputs(request, call)
        signature, outputs = await servable.predict_async(
            request.model_spec.signature_name, inputs, list(request.output_filter), executor
        )
        return self._predict_response(servable, signature, outputs)

    def _predict_inputs(self, request: Any, call: Call) -> tuple[Any, dict[str, Any]]:
        servable = self.servable_for(request.model_spec)
        call.served_by(servable, request.model_spec.signature_name or "serving_default")
        inputs = {}
        for key, proto in request.inputs.items():
            try:
                inputs[key] = proto_to_array(proto)
            except (ValueError, TypeError) as err:
                raise invalid_argument(f"tensor parsing error: {key} ({err})") from None
        return servable, inputs

    def _predict_response(self, servable: Any, signature: str, outputs: dict[str, Any]) -> Any:
        response = self.pb["predict"].PredictResponse()
        self._fill_spec(response.model_spec, servable, signature)
        for name, array in outputs.items():
            array_to_proto(array, response.outputs[name])
        return response

    # ---------------------------------------------------------- Classify / Regress

    def classify(self, request: Any, call: Call) -> Any:
        servable = self.servable_for(request.model_spec)
        call.served_by(servable, request.model_spec.signature_name or "serving_default")
        examples = serialized_examples(request.input)
        signature, classes, scores = servable.classify(request.model_spec.signature_name, examples)
        response = self.pb["classification"].ClassificationResponse()
        self._fill_spec(response.model_spec, servable, signature)
        fill_classification_result(response.result, classes, scores, len(examples))
        return response

    def regress(self, request: Any, call: Call) -> Any:
        servable = self.servable_for(request.model_spec)
        call.served_by(servable, request.model_spec.signature_name or "serving_default")
        examples = serialized_examples(request.input)
        signature, values = servable.regress(request.model_spec.signature_name, examples)
        response = self.pb["regression"].RegressionResponse()
        self._fill_spec(response.model_spec, servable, signature)
        for value in values.tolist():
            response.result.regressions.add().value = value
        return response

    def multi_inference(self, request: Any, call: Call) -> Any:
        from tensorflow_serving.apis import inference_pb2

        if not request.tasks:
            raise invalid_argument("Tasks is empty")
        names = {t.model_spec.name for t in request.tasks}
        if len(names) != 1:
            raise invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name"
            )
        examples = serialized_examples(request.input)
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            servable = self.servable_for(task.model_spec)
            call.served_by(servable, "multi_inference")
            result = response.results.add()
            sig_name = task.model_spec.signature_name
            if task.method_name == "tensorflow/serving/classify":
                signature, classes, scores = servable.classify(sig_name, examples)
                fill_classification_result(
                    result.classification_result, classes, scores, len(examples)
                )
            elif task.method_name == "tensorflow/serving/regress":
                signature, values = servable.regress(sig_name, examples)
                for value in values.tolist():
                    result.regression_result.regressions.add().value = value
            else:
                raise invalid_argument(f"Unsupported signature method_name: {task.method_name}")
            self._fill_spec(result.model_spec, servable, signature)
        return response

    # ------------------------------------------------------------------- metadata

    def metadata(self, request: Any) -> Any:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        if not request.metadata_field:
            raise invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field_name in request.metadata_field:
            if field_name != SIGNATURE_DEF_FIELD:
                raise invalid_argument(
                    f"Metadata field {field_name} is not supported (supported: {SIGNATURE_DEF_FIELD})"
                )
        servable = self.servable_for(request.model_spec)
        return self.metadata_response(servable)

    def metadata_response(self, servable: Any) -> Any:
        pb = self.pb["metadata"]
        response = pb.GetModelMetadataResponse()
        self._fill_spec(response.model_spec, servable, None)
        signature_map = pb.SignatureDefMap()
        for key, sig_def in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(sig_def)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response

    # --------------------------------------------------------------------- status

    def status(self, request: Any) -> Any:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        version, label = model_spec_choice(request.model_spec)
        return self.status_response(request.model_spec.name, version, label)

    def status_response(self, name: str, version: int | None, label: str | None) -> Any:
        pb = self.pb["status"]
        response = pb.GetModelStatusResponse()
        for record in self.manager.status(name, version, label):
            entry = response.model_version_status.add()
            entry.version = record.version
            entry.state = pb.ModelVersionStatus.State.Value(record.state)
            entry.status.error_code = errors.CODE_NUMBER.get(record.error_code, 2)
            entry.status.error_message = record.error_message
        return response

    # --------------------------------------------------------------------- reload

    def reload_config(self, request: Any) -> Any:
        """``HandleReloadConfigRequest``: serve exactly the models in the new config."""
        response = self.pb["management"].ReloadConfigResponse()
        try:
            if request.config.WhichOneof("config") != "model_config_list":
                raise invalid_argument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                    "ModelConfigList is currently supported"
                )
            try:
                settings = settings_from_proto(request.config, source="ReloadConfigRequest")
            except ServingConfigError as err:
                raise invalid_argument(str(err)) from None
            self.manager.configure(settings)
            if self._on_reload is not None:
                self._on_reload(request.config)
        except ServingError as err:
            response.status.error_code = errors.CODE_NUMBER.get(err.code, 2)
            response.status.error_message = err.message
            raise
        for name in request.metric_names:
            response.metric.add(name=name, int64_value_increase=0)
        return response


def fill_classification_result(result: Any, classes: Any, scores: Any, count: int) -> None:
    """ClassificationResult: per example, one (label, score) per class."""
    num = (classes if classes is not None else scores).shape[1]
    labels = classes.tolist() if classes is not None else None
    values = scores.tolist() if scores is not None else None
    for i in range(count):
        classifications = result.classifications.add()
        for c in range(num):
            entry = classifications.classes.add()
            if labels is not None:
                label = labels[i][c]
                entry.label = (
                    label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
                )
            if values is not None:
                entry.score = values[i][c]
