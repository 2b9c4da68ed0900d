"""The gRPC front end: ``PredictionService`` and ``ModelService`` of ``tensorflow_serving.apis``.

Any client built on the stock stubs (``prediction_service_pb2_grpc.PredictionServiceStub``,
``model_service_pb2_grpc.ModelServiceStub``) works unchanged. Failures abort the call
with the canonical status code and message TensorFlow Serving would send.

Two servers behind one set of handlers. Without batching, grpcio's threaded server: each
call runs whole on a pool thread, one thread hand-off, the lowest latency. With
batching, ``grpc.aio`` on an event loop of its own thread (uvloop's where installed):
Predict is handled on the loop (request -> arrays -> batch queue -> response) and a
waiting request holds no thread (`serving.batching.Batcher.call_async`); the other calls
run in the executor. The threaded server blocked a thread per waiting request, and
waking them cost more than the batched model call saved: at concurrency 32 on two CPUs
batched gRPC stopped near 1,100-1,300 req/s (~1 ms of CPU per request); on the loop it
served ~1,300-1,750 (~0.7-0.95 ms). The loop costs a second hand-off per unbatched call
(~0.2 ms at c=1), which is why the unbatched server stays threaded.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
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


def _serve_threaded(
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


def _handlers(core: ServingCore) -> dict[str, Callable[[Any, Call], Any]]:
    """Each RPC's handler: request and Call in, response out (ServingError on failure)."""
    return {
        "Predict": core.predict,
        "Classify": core.classify,
        "Regress": core.regress,
        "MultiInference": core.multi_inference,
        "GetModelMetadata": lambda r, c: core.metadata(r),
        "GetModelStatus": lambda r, c: core.status(r),
        "HandleReloadConfigRequest": lambda r, c: core.reload_config(r),
    }


class ThreadedPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore):
        self.core, self.handlers = core, _handlers(core)

    def _call(self, api: str, request: Any, context: Any) -> Any:
        return _serve_threaded(self.core, api, self.handlers[api], request, context)

    def Predict(self, request, context):
        return self._call("Predict", request, context)

    def Classify(self, request, context):
        return self._call("Classify", request, context)

    def Regress(self, request, context):
        return self._call("Regress", request, context)

    def MultiInference(self, request, context):
        return self._call("MultiInference", request, context)

    def GetModelMetadata(self, request, context):
        return self._call("GetModelMetadata", request, context)


class ThreadedModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore):
        self.core, self.handlers = core, _handlers(core)

    def GetModelStatus(self, request, context):
        return _serve_threaded(
            self.core, "GetModelStatus", self.handlers["GetModelStatus"], request, context
        )

    def HandleReloadConfigRequest(self, request, context):
        api = "HandleReloadConfigRequest"
        return _serve_threaded(self.core, api, self.handlers[api], request, context)


async def _serve(
    core: ServingCore,
    executor: Executor,
    api: str,
    handler: Callable[[Any, Call], Any],
    request: Any,
    context: grpc.aio.ServicerContext,
    *,
    on_loop: bool = False,
) -> Any:
    """Answer one call: ``handler`` is a coroutine function when ``on_loop``, else it runs
    in ``executor``; ServingErrors abort with their code, anything else with INTERNAL."""
    call = core.call(api, "GRPC", _model_name(request))
    try:
        if on_loop:
            response = await handler(request, call)
        else:
            loop = asyncio.get_running_loop()
            response = await loop.run_in_executor(executor, handler, request, call)
    except ServingError as err:
        call.finish(err.code)
        code = getattr(grpc.StatusCode, err.code, grpc.StatusCode.UNKNOWN)
        await context.abort(code, err.message)
    except Exception as err:  # a bug of ours answers INTERNAL, the server stays up
        log.exception("gRPC %s failed", api)
        call.finish(errors.INTERNAL)
        await context.abort(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}")
    call.finish()
    return response


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """The event-loop server's PredictionService: Predict on the loop, the rest in ``executor``."""

    def __init__(self, core: ServingCore, executor: Executor):
        self.core, self.executor, self.handlers = core, executor, _handlers(core)

    async def _call(self, api: str, request: Any, context: Any) -> Any:
        return await _serve(self.core, self.executor, api, self.handlers[api], request, context)

    async def _predict(self, request: Any, call: Call) -> Any:
        return await self.core.predict_async(request, call, self.executor)

    async def Predict(self, request, context):
        return await _serve(
            self.core, self.executor, "Predict", self._predict, request, context, on_loop=True
        )

    async def Classify(self, request, context):
        return await self._call("Classify", request, context)

    async def Regress(self, request, context):
        return await self._call("Regress", request, context)

    async def MultiInference(self, request, context):
        return await self._call("MultiInference", request, context)

    async def GetModelMetadata(self, request, context):
        return await self._call("GetModelMetadata", request, context)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore, executor: Executor):
        self.core, self.executor, self.handlers = core, executor, _handlers(core)

    async def GetModelStatus(self, request, context):
        api = "GetModelStatus"
        return await _serve(self.core, self.executor, api, self.handlers[api], request, context)

    async def HandleReloadConfigRequest(self, request, context):
        api = "HandleReloadConfigRequest"
        return await _serve(self.core, self.executor, api, self.handlers[api], request, context)


class ThreadedGrpcServer:
    """A running threaded grpcio server."""

    def __init__(self, server: grpc.Server):
        self._server = server

    def stop(self, grace: float) -> None:
        self._server.stop(grace=grace).wait(grace + 3)


class GrpcServer:
    """A running ``grpc.aio`` server, its event-loop thread and its executor."""

    def __init__(
        self,
        server: grpc.aio.Server,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
        executor: ThreadPoolExecutor,
    ):
        self._server, self._loop, self._thread, self._executor = server, loop, thread, executor

    def stop(self, grace: float) -> None:
        """Refuse new calls, give those in flight ``grace`` seconds, then end the loop."""
        try:
            asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop).result(grace + 5)
        finally:
            _end_loop(self._loop, self._thread)
            self._executor.shutdown(wait=False, cancel_futures=True)


def _end_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 0),
    ]


def _cannot_bind(host: str, port: int) -> ServingConfigError:
    return ServingConfigError(
        f"Invalid value for `--port`: received {port}; expected a free TCP port (cannot bind {host}:{port})."
    )


def start_grpc_server(
    core: ServingCore,
    *,
    host: str,
    port: int,
    max_workers: int,
    max_message_bytes: int,
    event_loop: bool = False,
) -> GrpcServer | ThreadedGrpcServer:
    """Start serving both services on ``host:port``: on an event loop (for batching) or threaded.

    Raises:
        ServingConfigError: the port cannot be bound.
    """
    if event_loop:
        return _start_event_loop_server(core, host, port, max_workers, max_message_bytes)
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=_options(max_message_bytes),
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        ThreadedPredictionService(core), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ThreadedModelService(core), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise _cannot_bind(host, port)
    server.start()
    return ThreadedGrpcServer(server)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (a dependency off Windows), else asyncio's.

    grpc.aio runs on any asyncio loop; on uvloop's the batched gRPC front end served
    ~12% more calls per second in a paired comparison (five rounds at concurrency 32,
    each won by uvloop).
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _start_event_loop_server(
    core: ServingCore, host: str, port: int, max_workers: int, max_message_bytes: int
) -> GrpcServer:
    loop = _new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="grpc-loop", daemon=True)
    thread.start()
    executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc")

    async def start() -> grpc.aio.Server | None:
        server = grpc.aio.server(options=_options(max_message_bytes))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(core, executor), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(core, executor), server
        )
        try:
            bound = server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            bound = 0
        if not bound:
            return None
        await server.start()
        return server

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    if server is None:
        _end_loop(loop, thread)
        executor.shutdown(wait=False)
        raise _cannot_bind(host, port)
    return GrpcServer(server, loop, thread, executor)
