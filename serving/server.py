"""``kts serve``: a TensorFlow-Serving-compatible model server in one process.

Takes TensorFlow Serving's flags (`ServerOptions` keeps their names and defaults),
loads and warms up the configured models, then serves gRPC on ``--port`` and REST on
``--rest_api_port`` until SIGTERM or SIGINT. Deliberate differences from the C++
server are listed in `ServerOptions`.

Example:
    kts serve --port=8500 --rest_api_port=8501 --model_name=digits \\
        --model_base_path=/models/digits --enable_batching
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving import errors
from serving.config import (
    BatchingParameters,
    ModelSettings,
    VersionPolicy,
    load_model_settings,
    read_batching_parameters,
    read_monitoring_config,
)
from serving.errors import ServingConfigError, ServingError

log = logging.getLogger("kts.serving")
DEFAULT_METRICS_PATH = "/metrics"


@dataclass(frozen=True)
class ServerOptions:
    """The model server's settings, named after TensorFlow Serving's flags.

    Differences from upstream, on purpose: ``grpc_max_threads`` defaults to at least 64
    (without batching each gRPC call holds a handler thread while the model runs);
    ``metrics_port`` serves Prometheus on a port of its own; ``max_request_bytes`` bounds
    REST bodies (413) and gRPC messages (RESOURCE_EXHAUSTED); ``host`` is the bind
    address (upstream always binds all interfaces).
    """

    port: int = 8500
    rest_api_port: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    enable_batching: bool = False
    batching_parameters_file: str = ""
    monitoring_config_file: str = ""
    metrics_port: int = 0
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60 * 1000 * 1000
    allow_version_labels_for_unavailable_models: bool = False
    rest_api_enable_cors_support: bool = False
    grpc_max_threads: int = max(64, 4 * (os.cpu_count() or 1))
    max_request_bytes: int = 64 * 1024 * 1024
    host: str = "0.0.0.0"


def _check_port(flag: str, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ServingConfigError(
            f"Invalid value for `{flag}`: received {value}; expected a TCP port 0..65535 (0 disables)."
        )


def model_settings_from_options(options: ServerOptions) -> list[ModelSettings]:
    """The models to serve: ``--model_config_file``, else ``--model_name``/``--model_base_path``."""
    if options.model_config_file:
        settings = load_model_settings(options.model_config_file)
    else:
        if not options.model_base_path:
            raise ServingConfigError(
                "Invalid value for `--model_base_path`: received ''; expected the folder holding "
                "the model's integer version folders (or pass --model_config_file)."
            )
        settings = [ModelSettings(options.model_name, options.model_base_path, VersionPolicy())]
    for s in settings:
        if not Path(s.base_path).is_dir():
            raise ServingConfigError(
                f"Invalid value for base path of model {s.name!r}: received {s.base_path!r}; "
                "expected an existing folder of integer version folders."
            )
    return settings


@dataclass(frozen=True)
class CheckedOptions:
    """What the flags resolve to, checked before anything heavy is imported."""

    settings: list[ModelSettings]
    batching: BatchingParameters | None
    metrics_path: str | None
    config_text: str


def check_options(options: ServerOptions) -> CheckedOptions:
    """Validate the flags and read the config files (no TensorFlow import).

    Raises:
        ServingConfigError: naming the flag, what it received and what is allowed.
    """
    _check_port("--port", options.port)
    _check_port("--rest_api_port", options.rest_api_port)
    _check_port("--metrics_port", options.metrics_port)
    if options.port == 0 and options.rest_api_port == 0:
        raise ServingConfigError(
            "Invalid value for `--port`: received 0 with --rest_api_port 0; expected at least "
            "one of the gRPC or REST ports to be set."
        )
    ports = [p for p in (options.port, options.rest_api_port, options.metrics_port) if p]
    if len(set(ports)) != len(ports):
        raise ServingConfigError(
            f"Invalid value for `--rest_api_port`: received {options.rest_api_port}; it must "
            f"differ from --port ({options.port}) and --metrics_port ({options.metrics_port})."
        )
    if options.max_request_bytes < 1:
        raise ServingConfigError(
            f"Invalid value for `--max_request_bytes`: received {options.max_request_bytes}; expected >= 1."
        )
    for flag in (
        "file_system_poll_wait_seconds",
        "model_config_file_poll_wait_seconds",
        "max_num_load_retries",
    ):
        if getattr(options, flag) < 0:
            raise ServingConfigError(
                f"Invalid value for `--{flag}`: received {getattr(options, flag)}; expected >= 0."
            )
    batching = None
    if options.enable_batching:
        batching = (
            read_batching_parameters(options.batching_parameters_file)
            if options.batching_parameters_file
            else BatchingParameters()
        )
    metrics_path = (
        read_monitoring_config(options.monitoring_config_file)
        if options.monitoring_config_file
        else None
    )
    settings = model_settings_from_options(options)
    config_text = (
        Path(options.model_config_file).read_text(encoding="utf-8")
        if options.model_config_file
        else ""
    )
    return CheckedOptions(settings, batching, metrics_path, config_text)


class ModelServer:
    """Everything ``kts serve`` runs: manager, gRPC and REST front ends, pollers."""

    def __init__(self, options: ServerOptions, checked: CheckedOptions | None = None):
        self.options = options
        checked = checked or check_options(options)
        self.batching = checked.batching
        self.metrics_path = checked.metrics_path
        self.settings = checked.settings
        self._config_text = checked.config_text

        from serving.core import ServingCore
        from serving.manager import Manager
        from serving.metrics import Metrics

        self.metrics = Metrics()
        self.manager = Manager(
            self._load,
            max_num_load_retries=options.max_num_load_retries,
            load_retry_interval=options.load_retry_interval_micros / 1e6,
            allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
        )
        self.core = ServingCore(self.manager, self.metrics)
        self._grpc: Any = None
        self._http: list[Any] = []
        self._stopped = threading.Event()

    # --------------------------------------------------------------------- loading

    def _load(self, name: str, version: int, path: Path) -> Any:
        from google.protobuf.message import DecodeError

        from serving.servable import Servable

        try:
            servable = Servable(
                name, version, path, batching=self.batching, on_batch=self.metrics.observe_batch
            )
        except FileNotFoundError as err:
            self.metrics.observe_load(name, version, errors.NOT_FOUND)
            raise ServingError(errors.NOT_FOUND, str(err)) from None
        except DecodeError as err:
            self.metrics.observe_load(name, version, errors.DATA_LOSS)
            raise ServingError(
                errors.DATA_LOSS, f"Can't parse {path}/saved_model.pb as binary proto: {err}"
            ) from None
        except Exception as err:
            code = _tf_code(err)
            self.metrics.observe_load(name, version, code)
            raise ServingError(
                code, f"Failed to load {path}: {type(err).__name__}: {err}"
            ) from None
        records = 0
        if self.options.enable_model_warmup:
            started = time.monotonic()
            try:
                records = servable.warmup(max(self.options.num_request_iterations_for_warmup, 1))
            except ServingError as err:
                servable.close()
                self.metrics.observe_load(name, version, err.code)
                raise ServingError(err.code, f"Warm-up of {path} failed: {err.message}") from None
            if records:
                log.info(
                    "Finished reading warmup data for model at %s. Number of warmup records read: "
                    "%d. Elapsed time (microseconds): %d.",
                    path,
                    records,
                    (time.monotonic() - started) * 1e6,
                )
        self.metrics.observe_load(name, version, errors.OK, records)
        return servable

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Load the models, then open the ports (as upstream: no traffic before the first load)."""
        options = self.options
        try:
            self.manager.configure(self.settings)
        except ServingError as err:  # e.g. a label pointing at a version that did not load
            raise ServingConfigError(f"model config: {err.message}") from None
        self._check_initial_load()
        if options.port:
            from serving.grpc_server import start_grpc_server

            self._grpc = start_grpc_server(
                self.core,
                host=options.host,
                port=options.port,
                max_workers=options.grpc_max_threads,
                max_message_bytes=options.max_request_bytes,
                event_loop=options.enable_batching,
            )
            log.info("Running gRPC ModelServer at %s:%d ...", options.host, options.port)
        if options.rest_api_port:
            from serving.rest import RestApi

            api = RestApi(
                self.core, metrics_path=self.metrics_path, cors=options.rest_api_enable_cors_support
            )
            self._serve_http(options.rest_api_port, api.handle, "--rest_api_port")
            log.info("Exporting HTTP/REST API at:%s:%d ...", options.host, options.rest_api_port)
        if options.metrics_port:
            from serving.rest import metrics_only

            paths = tuple(
                p for p in (self.metrics_path or DEFAULT_METRICS_PATH, DEFAULT_METRICS_PATH)
            )
            self._serve_http(options.metrics_port, metrics_only(self.core, paths), "--metrics_port")
            log.info("Prometheus metrics at %s:%d%s", options.host, options.metrics_port, paths[0])
        if options.file_system_poll_wait_seconds > 0:
            self.manager.start_polling(options.file_system_poll_wait_seconds)
        if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
            self.manager.run_periodically(
                self._poll_config_file, options.model_config_file_poll_wait_seconds, "config-poller"
            )

    def _check_initial_load(self) -> None:
        problems = []
        for s in self.settings:
            try:
                records = self.manager.status(s.name)
            except ServingError:
                log.warning(
                    "No versions of servable %s found under base path %s; waiting for one",
                    s.name,
                    s.base_path,
                )
                continue
            if not any(r.state == "AVAILABLE" for r in records):
                failed = [
                    f"version {r.version}: {r.error_message}" for r in records if r.error_message
                ]
                problems.append(f"{s.name} ({'; '.join(failed) or 'no version loaded'})")
        if problems:
            raise ServingConfigError(
                f"{len(problems)} model(s) did not become available: {', '.join(problems)}"
            )

    def _serve_http(self, port: int, handler: Any, flag: str) -> None:
        from serving.rest import HttpServer

        try:
            server = HttpServer(
                (self.options.host, port),
                handler,
                max_body_bytes=self.options.max_request_bytes,
                cors=self.options.rest_api_enable_cors_support,
            )
        except OSError as err:
            raise ServingConfigError(
                f"Invalid value for `{flag}`: received {port}; expected a free TCP port ({err.strerror})."
            ) from None
        thread = threading.Thread(target=server.serve_forever, name=f"http-{port}", daemon=True)
        thread.start()
        self._http.append(server)

    def _poll_config_file(self) -> None:
        path = Path(self.options.model_config_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            log.error("Cannot read --model_config_file %s: %s", path, err)
            return
        if text == self._config_text:
            return
        try:
            settings = load_model_settings(path)
            self.manager.configure(settings)
        except (ServingConfigError, ServingError) as err:
            log.error("Reloading %s failed: %s", path, err)
            return
        self._config_text = text
        log.info("Reloaded model config from %s", path)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        for server in self._http:
            server.shutdown()
            server.server_close()
        if self._grpc is not None:
            self._grpc.stop(grace=2)
        self.manager.stop()

    def wait(self) -> None:
        self._stopped.wait()


def _tf_code(err: BaseException) -> str:
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover
        return errors.UNKNOWN
    if isinstance(err, tf.errors.OpError):
        names = {n: c for c, n in errors.CODE_NUMBER.items()}
        return names.get(err.error_code, errors.UNKNOWN)
    return errors.UNKNOWN


def _freeze_imported_objects() -> None:
    """Keep the garbage collector off the objects that importing TensorFlow made.

    The imports leave ~400,000 objects that live as long as the process, and every full
    collection walked all of them: 130-450 ms with the GIL held on this 2-CPU box, every
    request waiting (one came within 12 s of load at concurrency 32). Frozen before any
    model loads, they are skipped; a model version's objects are not frozen, so an
    unloaded version is still collected. Throughput is unchanged (paired A/B); what goes
    is the pause.
    """
    import gc

    import tensorflow  # noqa: F401

    import serving.grpc_server  # noqa: F401
    import serving.rest  # noqa: F401
    import serving.servable  # noqa: F401

    gc.collect()
    gc.freeze()


def serve(options: ServerOptions, checked: CheckedOptions | None = None) -> None:
    """Run the server until SIGTERM/SIGINT (the ``kts serve`` command)."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname).1s kts serve] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    server = ModelServer(options, checked)
    _freeze_imported_objects()
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
    log.info("Server stopped")
