"""Load generators: the clients that drive requests, and what one run of them saw.

Two ways to load a server, both closed-loop (each client keeps one request in flight):

* `ThreadClients`: ``concurrency`` Python threads in this process, each with its own
  connection: the stock ``tensorflow_serving.apis`` gRPC stub (`GrpcClient`) or
  keep-alive HTTP/1.1 (`RestClient`). About 0.4 ms of this process's CPU per request.
* `H2LoadClients`: nghttp2's ``h2load`` (C; HTTP/1.1 for REST, HTTP/2 gRPC frames of the
  same serialized ``PredictRequest`` the stub sends). About 0.07 ms of CPU per request.

`paired_latency` alternates single calls of several kinds in one thread, so load drift on
a shared machine reaches all of them alike.
"""

from __future__ import annotations

import http.client
import json
import resource
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

MODEL_NAME = "digits"
GRPC_PREDICT = "/tensorflow.serving.PredictionService/Predict"

Client = Callable[[], bool]
"""One request, made and answered; True when it succeeded."""

ClientFactory = Callable[[], Client]
"""Opens one client (its own connection); called once per client thread."""


@dataclass
class Sample:
    """What one load run saw: measured latencies, plus all calls including warm-up.

    Attributes:
        latencies: seconds per request in the measured window.
        errors: failed requests in the measured window.
        seconds: length of the measured window (s).
        calls: every call made, warm-up included (for CPU per request).
        wall: the whole run, warm-up included (s).
        client_cpu: CPU seconds the load generator spent.
    """

    latencies: list[float]
    errors: int
    seconds: float
    calls: int
    wall: float
    client_cpu: float = 0.0


class LoadGenerator(Protocol):
    """Drives one server (or the in-process call) with closed-loop clients."""

    def run(self, concurrency: int, seconds: float) -> Sample:
        """Run ``concurrency`` clients for a ``seconds``-long measured window."""
        ...


# ------------------------------------------------------------------ requests


def predict_request(x: np.ndarray) -> Any:
    """The stock stub's ``PredictRequest`` for model ``digits`` with ``x`` as ``image``.

    Args:
        x: the images, float32 ``[batch, 8, 8, 1]``.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(x))
    return request


def grpc_frame(x: np.ndarray) -> bytes:
    """A gRPC message frame (uncompressed flag, length, bytes) of the stub's PredictRequest."""
    message = predict_request(x).SerializeToString()
    return b"\x00" + struct.pack(">I", len(message)) + message


@dataclass(frozen=True)
class Requests:
    """One request in every form the clients send: one image, as JSON and as a gRPC frame.

    Attributes:
        x: the image, float32 ``[1, 8, 8, 1]``.
        rest_body: ``{"instances": [...]}`` as bytes.
        rest_file: ``rest_body`` on disk (for ``h2load -d``).
        grpc_file: the gRPC frame of the ``PredictRequest`` on disk (for ``h2load -d``).
    """

    x: np.ndarray
    rest_body: bytes
    rest_file: Path
    grpc_file: Path


def write_requests(workdir: Path, x: np.ndarray) -> Requests:
    """Serialize the one-image request ``x`` (``[1, 8, 8, 1]``) into ``workdir``."""
    body = json.dumps({"instances": x.tolist()}).encode()
    rest_file, grpc_file = workdir / "request.json", workdir / "request.grpc"
    rest_file.write_bytes(body)
    grpc_file.write_bytes(grpc_frame(x))
    return Requests(x=x, rest_body=body, rest_file=rest_file, grpc_file=grpc_file)


# ------------------------------------------------------------------ clients


class GrpcClient:
    """The stock ``PredictionServiceStub`` on its own channel, sending one request."""

    def __init__(self, address: str, request: Any) -> None:
        """Open a channel to ``address`` (``host:port``); ``request``: a PredictRequest."""
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self._rpc_error = grpc.RpcError
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(address)
        )
        self._request = request

    def __call__(self) -> bool:
        """One ``Predict`` call (30 s deadline); False when it failed."""
        try:
            self._stub.Predict(self._request, timeout=30)
            return True
        except self._rpc_error:
            return False


def grpc_clients(address: str, x: np.ndarray) -> ClientFactory:
    """gRPC clients of ``address`` (``host:port``) predicting the first image of ``x``."""
    return partial(GrpcClient, address, predict_request(x[:1]))


class RestClient:
    """One keep-alive HTTP/1.1 connection POSTing the same JSON body; reconnects on failure."""

    def __init__(self, host: str, port: int, path: str, body: bytes) -> None:
        """Args: ``host``/``port`` of the server, ``path`` to POST to, the JSON ``body``."""
        self._host, self._port, self._path, self._body = host, port, path, body
        self._headers = {"Content-Type": "application/json"}
        self._conn = http.client.HTTPConnection(host, port, timeout=60)

    def __call__(self) -> bool:
        """One POST (60 s timeout); True on HTTP 200."""
        try:
            self._conn.request("POST", self._path, body=self._body, headers=self._headers)
            response = self._conn.getresponse()
            response.read()
            return response.status == 200
        except (OSError, http.client.HTTPException):
            self._conn.close()
            self._conn = http.client.HTTPConnection(self._host, self._port, timeout=60)
            return False


def rest_clients(host: str, port: int, path: str, body: bytes) -> ClientFactory:
    """REST clients POSTing ``body`` to ``http://host:port/path``, one connection each."""
    return partial(RestClient, host, port, path, body)


# ------------------------------------------------------------------ Python threads


@dataclass
class _Window:
    """When the clients stop counting warm-up and stop calling (``perf_counter`` s)."""

    warm_until: float = 0.0
    stop_at: float = 0.0


@dataclass
class _Tally:
    """One client thread's own counts (no lock: each thread writes only its own)."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    calls: int = 0


def _client_loop(
    make_client: ClientFactory, gate: threading.Barrier, window: _Window, tally: _Tally
) -> None:
    """One closed-loop client: open, wait for the gate, call until the window ends."""
    call = make_client()
    gate.wait()
    record = tally.latencies.append
    while True:
        t0 = time.perf_counter()
        if t0 >= window.stop_at:
            return
        ok = call()
        t1 = time.perf_counter()
        tally.calls += 1
        if t0 >= window.warm_until:
            record(t1 - t0)
            if not ok:
                tally.errors += 1


def run_clients(make_client: ClientFactory, concurrency: int, seconds: float) -> Sample:
    """Run ``concurrency`` closed-loop client threads for ``seconds`` after a warm-up.

    The warm-up lasts ``min(1, seconds / 3)`` s; calls that start in it are made but not
    measured. The window opens once every thread has its connection.
    """
    gate = threading.Barrier(concurrency + 1)
    window = _Window()
    tallies = [_Tally() for _ in range(concurrency)]
    threads = [
        threading.Thread(target=_client_loop, args=(make_client, gate, window, t), daemon=True)
        for t in tallies
    ]
    cpu0 = time.process_time()
    for t in threads:
        t.start()
    now = time.perf_counter()
    window.warm_until = now + min(1.0, seconds / 3)
    window.stop_at = window.warm_until + seconds
    gate.wait()
    for t in threads:
        t.join()
    return Sample(
        latencies=[x for t in tallies for x in t.latencies],
        errors=sum(t.errors for t in tallies),
        seconds=seconds,
        calls=sum(t.calls for t in tallies),
        wall=time.perf_counter() - now,
        client_cpu=time.process_time() - cpu0,
    )


@dataclass(frozen=True)
class ThreadClients:
    """Load from client threads in this process (`run_clients`)."""

    make_client: ClientFactory

    def run(self, concurrency: int, seconds: float) -> Sample:
        """See `LoadGenerator.run`."""
        return run_clients(self.make_client, concurrency, seconds)


# ------------------------------------------------------------------ h2load


@dataclass(frozen=True)
class H2Load:
    """One ``h2load`` command line's target: URL, body file, headers, HTTP/1.1 or 2."""

    url: str
    body: Path
    headers: tuple[str, ...]
    http1: bool


def grpc_h2load(host: str, port: int, body: Path) -> H2Load:
    """h2load's target for gRPC ``Predict`` on ``host:port`` (HTTP/2 frames from ``body``)."""
    return H2Load(
        f"http://{host}:{port}{GRPC_PREDICT}", body,
        ("content-type: application/grpc", "te: trailers"), http1=False,
    )  # fmt: skip


def rest_h2load(host: str, port: int, path: str, body: Path) -> H2Load:
    """h2load's target for a JSON POST to ``http://host:port/path`` over HTTP/1.1."""
    return H2Load(
        f"http://{host}:{port}{path}", body, ("content-type: application/json",), http1=True
    )


@dataclass(frozen=True)
class H2LoadClients:
    """Closed-loop load from ``h2load``: ``concurrency`` connections, one request in flight each.

    Latencies come from h2load's per-request log. gRPC answers are HTTP 200 whatever the
    call's status, so for kts serve the failed calls are also read from the server's own
    ``:tensorflow:serving:request_count`` (``errors_now``); elsewhere HTTP statuses other
    than 200 are the errors.

    Attributes:
        spec: what h2load sends where.
        workdir: where its log goes.
        errors_now: the server's count of failed requests so far, or None.
    """

    spec: H2Load
    workdir: Path
    errors_now: Callable[[], float] | None = None

    def run(self, concurrency: int, seconds: float) -> Sample:
        """See `LoadGenerator.run`; h2load's own CPU counts as the client's."""
        spec, log = self.spec, self.workdir / "h2load.log"
        log.unlink(missing_ok=True)
        before = self.errors_now() if self.errors_now else 0.0
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(
            ["h2load", *(["--h1"] if spec.http1 else []), f"-c{concurrency}", "-m1", "-t1",
             "-D", f"{seconds:g}", "--log-file", str(log), "-d", str(spec.body),
             *(f"-H{h}" for h in spec.headers), spec.url],
            check=True, capture_output=True, timeout=seconds + 60,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        rows = [line.split("\t") for line in log.read_text().splitlines() if line]
        failed = sum(status != "200" for _, status, _ in rows)
        if self.errors_now:  # a failed REST call shows in both counts: take the larger
            failed = max(failed, int(self.errors_now() - before))
        cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
        return Sample(
            latencies=[int(us) / 1e6 for _, _, us in rows],
            errors=failed,
            seconds=seconds,
            calls=len(rows),
            wall=wall,
            client_cpu=cpu,
        )


# ------------------------------------------------------------------ paired calls


def paired_latency(calls: Mapping[str, Client], rounds: int) -> dict[str, float]:
    """p50 latency (ms) of each call, measured in alternation in this thread.

    Each call is made 20 times to warm up, then ``rounds`` times in a shuffled order per
    round (seeded), so load drift hits all of them alike.
    """
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(20):
        for call in calls.values():
            call()
    rng = np.random.default_rng(0)
    names = list(calls)
    for _ in range(rounds):
        for name in rng.permutation(names):
            call = calls[name]
            t0 = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - t0)
    return {name: float(np.percentile(v, 50) * 1e3) for name, v in samples.items()}
