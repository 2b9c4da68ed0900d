"""The gRPC front end: ``PredictionService`` and ``ModelService`` of ``tensorflow_serving.apis``.

Any client built on the stock stubs (``prediction_service_pb2_grpc.PredictionServiceStub``,
``model_service_pb2_grpc.ModelServiceStub``) works unchanged. Failures abort the call
with the canonical status code and message TensorFlow Serving would send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving import errors
from serving.core import Call, ServingCore
from serving.errors import ServingConfigError, ServingError

log = logging.getLogger("kts.serving")


def _model_name(request: Any) -> str:
    spec = getattr(request, "model_spec", None)
    if spec is not None:
        return str(spec.name)
    tasks = getattr(request, "tasks", None)
    return str(tasks[0].model_spec.name) if tasks else ""


def _serve(
    core: ServingCore,
    api: str,
    handler: Callable[[Any, Call], Any],
    request: Any,
    context: grpc.ServicerContext,
) -> Any:
    call = core.call(api, "GRPC", _model_name(request))
    try:
        response = handler(request, call)
    except ServingError as err:
        call.finish(err.code)
        context.abort(getattr(grpc.StatusCode, err.code, grpc.StatusCode.UNKNOWN), err.message)
    except Exception as err:  # a bug of ours answers INTERNAL, the server stays up
        log.exception("gRPC %s failed", api)
        call.finish(errors.INTERNAL)
        context.abort(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}")
    call.finish()
    return response


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore):
        self.core = core

    def Predict(self, request, context):
        return _serve(self.core, "Predict", self.core.predict, request, context)

    def Classify(self, request, context):
        return _serve(self.core, "Classify", self.core.classify, request, context)

    def Regress(self, request, context):
        return _serve(self.core, "Regress", self.core.regress, request, context)

    def MultiInference(self, request, context):
        return _serve(self.core, "MultiInference", self.core.multi_inference, request, context)

    def GetModelMetadata(self, request, context):
        return _serve(
            self.core, "GetModelMetadata", lambda r, c: self.core.metadata(r), request, context
        )


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore):
        self.core = core

    def GetModelStatus(self, request, context):
        return _serve(
            self.core, "GetModelStatus", lambda r, c: self.core.status(r), request, context
        )

    def HandleReloadConfigRequest(self, request, context):
        return _serve(
            self.core,
            "HandleReloadConfigRequest",
            lambda r, c: self.core.reload_config(r),
            request,
            context,
        )


def start_grpc_server(
    core: ServingCore, *, host: str, port: int, max_workers: int, max_message_bytes: int
) -> grpc.Server:
    """Start serving both services on ``host:port``.

    Raises:
        ServingConfigError: the port cannot be bound.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise ServingConfigError(
            f"Invalid value for `--port`: received {port}; expected a free TCP port (cannot bind {host}:{port})."
        )
    server.start()
    return server
