"""Serving benchmark: in-process call vs `kts serve` (gRPC, REST; batching off/on) vs `mlflow models serve`.

One process run, side by side, on the digits CNN (``service.models.build("simple_cnn")``
behind the train-split normalization, exported with `serving.export`):

* ``in-process``: ``tf.saved_model.load(...).signatures["serving_default"]`` called
  directly -- the limit any server can approach;
* ``kts serve`` over gRPC (stock ``tensorflow_serving.apis`` stub) and REST (keep-alive
  HTTP/1.1, ``{"instances": [...]}``), with ``--enable_batching`` off and on;
* ``mlflow models serve --env-manager local`` of the same trained Keras model (MLflow's
  Keras flavor, ``POST /invocations`` with the same body), and of a pyfunc that calls
  the same exported SavedModel signature (MLflow's best case).

Every request carries one digit image (online serving), at concurrency 1, 8 and 32, one
connection per client. The load comes from ``h2load`` (nghttp2's load generator, C;
HTTP/1.1 for REST, HTTP/2 gRPC frames of the same serialized ``PredictRequest`` the stock
stub sends) when it is installed (Debian: ``apt-get install nghttp2-client``), else from
client threads in this process (``--load python``). Client and servers share the
machine's cores: the Python clients spend about 0.4 ms of CPU per request, h2load about
0.07 ms, so with Python clients the servers' ratios are diluted by the load generator's
own work. Compare ratios within one run, not absolute numbers across machines. The
in-process cells and the c=1 paired latencies always use Python (the stock gRPC stub).

The two ``kts serve`` processes (batching off and on) and the MLflow pyfunc server run
side by side, and each (protocol, concurrency) cell is measured in ``--rounds`` slices
that take turns between them: on a shared machine the load drifts over a run, and
measuring all "off" cells before all "on" cells (and MLflow last) turned that drift
into the ratios the targets are about (batching on/off swung 0.7x-3.5x between runs).
Taking turns spreads the drift over all of them; the per-round ratios are printed so
their spread shows. The MLflow Keras flavor, seconds per answer at c=32, is measured on
its own. Each kts cell also reports the CPU the server process and this (client)
process spent per request, and for batching on the mean rows per model call from the
server's ``kts_serving_batch_size`` metric.

Run:
    .venv/bin/python bench/serving.py [--seconds 3] [--rounds 3] [--load auto|h2load|python]
        [--batch-timeout-micros 10000] [--json results.json] [--skip-mlflow]

The batching-on server waits up to ``--batch-timeout-micros`` for a batch to fill, as
upstream's batcher does: 10 ms lets the c=32 batches reach 17-25 rows here (1 ms: 3-9),
and costs the light loads (c=1 answers in ~13 ms; at c=8 batching on is slower than off).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CONCURRENCY = (1, 8, 32)


def batching_parameters(timeout_micros: int) -> str:
    """The ``--batching_parameters_file`` text for the batching-on server."""
    return (
        "max_batch_size { value: 32 }\n"
        f"batch_timeout_micros {{ value: {timeout_micros} }}\n"
        "max_enqueued_batches { value: 100 }\n"
        "num_batch_threads { value: 2 }\n"
    )


@dataclass
class Cell:
    target: str
    protocol: str
    batching: str
    concurrency: int
    requests: int
    errors: int
    throughput: float  # requests per second
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float | None = None  # server process CPU per request (all its threads)
    client_cpu_ms: float | None = None  # this process's CPU per request (the client threads)
    rows_per_batch: float | None = None  # mean rows per batched model call


@dataclass
class Sample:
    """What one `load` run saw: measured latencies, plus all calls including warm-up."""

    latencies: list[float]
    errors: int
    seconds: float  # measured window
    calls: int  # every call made, warm-up included (for CPU per request)
    wall: float  # the whole run, warm-up included
    client_cpu: float = 0.0  # CPU seconds the load generator spent


Runner = Callable[[int, float], Sample]  # (concurrency, seconds) -> what one run saw


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_clients(
    make_caller: Callable[[], Callable[[], bool]], concurrency: int, seconds: float
) -> Sample:
    """Run ``concurrency`` closed-loop clients for ``seconds``; each call returns success."""
    start_gate = threading.Barrier(concurrency + 1)
    stop_at = [0.0]
    warm_until = [0.0]
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    calls = [0] * concurrency

    def client(i: int) -> None:
        call = make_caller()
        start_gate.wait()
        own = latencies[i]
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at[0]:
                return
            ok = call()
            t1 = time.perf_counter()
            calls[i] += 1
            if t0 >= warm_until[0]:
                own.append(t1 - t0)
                if not ok:
                    errors[i] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    cpu0 = time.process_time()
    for t in threads:
        t.start()
    now = time.perf_counter()
    warm_until[0] = now + min(1.0, seconds / 3)
    stop_at[0] = warm_until[0] + seconds
    start_gate.wait()
    for t in threads:
        t.join()
    return Sample(
        latencies=[x for own in latencies for x in own],
        errors=int(sum(errors)),
        seconds=seconds,
        calls=int(sum(calls)),
        wall=time.perf_counter() - now,
        client_cpu=time.process_time() - cpu0,
    )


def python_runner(make_caller: Callable[[], Callable[[], bool]]) -> Runner:
    return lambda concurrency, seconds: run_clients(make_caller, concurrency, seconds)


@dataclass(frozen=True)
class H2Load:
    """One ``h2load`` command line's target: URL, body file, headers."""

    url: str
    body: Path
    headers: tuple[str, ...]
    http1: bool


def h2load_runner(spec: H2Load, workdir: Path, errors_now: Callable[[], float] | None) -> Runner:
    """Closed-loop load from ``h2load``: ``concurrency`` connections, one request in flight each.

    Latencies come from h2load's per-request log. gRPC answers are HTTP 200 whatever the
    call's status, so for kts serve the failed calls are also read from the server's own
    ``:tensorflow:serving:request_count`` (``errors_now``); elsewhere HTTP statuses other
    than 200 are the errors.
    """
    log = workdir / "h2load.log"

    def run(concurrency: int, seconds: float) -> Sample:
        log.unlink(missing_ok=True)
        before = errors_now() if errors_now else 0.0
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
        if errors_now:  # a failed REST call shows in both counts: take the larger
            failed = max(failed, int(errors_now() - before))
        cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
        return Sample(
            latencies=[int(us) / 1e6 for _, _, us in rows],
            errors=failed,
            seconds=seconds,
            calls=len(rows),
            wall=wall,
            client_cpu=cpu,
        )

    return run


def cell_from(
    samples: list[Sample], name: str, *, protocol: str, batching: str, concurrency: int
) -> Cell:
    flat = np.array([x for s in samples for x in s.latencies] or [0.0])
    requests = sum(len(s.latencies) for s in samples)
    return Cell(
        target=name,
        protocol=protocol,
        batching=batching,
        concurrency=concurrency,
        requests=requests,
        errors=sum(s.errors for s in samples),
        throughput=requests / sum(s.seconds for s in samples),
        p50_ms=float(np.percentile(flat, 50) * 1e3),
        p99_ms=float(np.percentile(flat, 99) * 1e3),
    )


def load(
    name: str,
    run: Runner,
    concurrency: int,
    seconds: float,
    *,
    protocol: str,
    batching: str,
) -> Cell:
    """One cell: ``concurrency`` closed-loop clients for ``seconds``."""
    sample = run(concurrency, seconds)
    cell = cell_from([sample], name, protocol=protocol, batching=batching, concurrency=concurrency)
    cell.client_cpu_ms = sample.client_cpu / max(sample.calls, 1) * 1e3
    return cell


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) of process ``pid``; None off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def metrics_text(metrics_port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=10)
    conn.request("GET", "/metrics")
    return conn.getresponse().read().decode()


def failed_requests(metrics_port: int) -> float:
    """Requests kts serve answered with a status other than OK, so far."""
    total = 0.0
    for line in metrics_text(metrics_port).splitlines():
        if line.startswith(":tensorflow:serving:request_count{") and 'status="OK"' not in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def batch_totals(metrics_port: int) -> tuple[float, float]:
    """(rows, model calls) so far from kts serve's ``kts_serving_batch_size`` histogram."""
    from serving.metrics import histogram_totals

    return histogram_totals(metrics_text(metrics_port), "kts_serving_batch_size")


@dataclass
class Target:
    """A server under test: ``kts serve`` (batching off or on) or ``mlflow models serve``."""

    name: str
    batching: str  # "off" / "on" for kts serve, "-" otherwise
    proc: subprocess.Popen
    rest_port: int
    rest_path: str
    grpc_port: int = 0
    metrics_port: int = 0  # kts serve only: CPU and batch sizes are read for these

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.batching


def measure(
    targets: list[Target], make: Callable[[Target], Runner], *,
    protocol: str, concurrency: int, seconds: float, rounds: int,
) -> tuple[list[Cell], dict[tuple[str, str], list[float]]]:  # fmt: skip
    """One cell per target, measured in ``rounds`` slices of ``seconds / rounds`` each.

    The targets take turns (the order rotates every round), so load drift on a shared
    machine reaches all of them alike. Returns the cells and each target's per-round
    throughput.
    """
    samples: dict[tuple[str, str], list[Sample]] = {t.key: [] for t in targets}
    server_cpu: dict[tuple[str, str], float | None] = {t.key: 0.0 for t in targets}
    client_cpu = {t.key: 0.0 for t in targets}
    batches = {t.key: [0.0, 0.0] for t in targets}
    per_round: dict[tuple[str, str], list[float]] = {t.key: [] for t in targets}
    slice_seconds = seconds / rounds
    for r in range(rounds):
        shift = r % len(targets)
        for target in targets[shift:] + targets[:shift]:
            kts = target.metrics_port > 0
            cpu0 = process_cpu(target.proc.pid) if kts else None
            rows0, calls0 = batch_totals(target.metrics_port) if kts else (0.0, 0.0)
            sample = make(target)(concurrency, slice_seconds)
            rows1, calls1 = batch_totals(target.metrics_port) if kts else (0.0, 0.0)
            cpu1 = process_cpu(target.proc.pid) if kts else None
            key = target.key
            samples[key].append(sample)
            per_round[key].append(len(sample.latencies) / sample.seconds)
            used = server_cpu[key]
            server_cpu[key] = (
                None if used is None or cpu0 is None or cpu1 is None else used + cpu1 - cpu0
            )
            client_cpu[key] += sample.client_cpu
            batches[key][0] += rows1 - rows0
            batches[key][1] += calls1 - calls0
    cells = []
    for target in targets:
        key = target.key
        cell = cell_from(
            samples[key], target.name, protocol=protocol, batching=target.batching,
            concurrency=concurrency,
        )  # fmt: skip
        calls = sum(s.calls for s in samples[key]) or 1
        used = server_cpu[key]
        cell.server_cpu_ms = None if used is None else used / calls * 1e3
        cell.client_cpu_ms = client_cpu[key] / calls * 1e3
        rows, model_calls = batches[key]
        cell.rows_per_batch = rows / model_calls if model_calls else None
        cells.append(cell)
    return cells, per_round


# ------------------------------------------------------------------------------ model


def train_and_export(workdir: Path):
    """The digits CNN from the model zoo, one quick epoch, exported for serving."""
    import keras
    from sklearn.datasets import load_digits

    from service import models
    from service.data.preprocess import with_normalization
    from serving.export import export_saved_model

    keras.utils.set_random_seed(42)
    bunch = load_digits()
    x = bunch.images.astype("float32")[..., None]
    core = models.build("simple_cnn", input_shape=(8, 8, 1), num_classes=10)
    model = with_normalization(core, x[:1200], input_name="image")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:1200], bunch.target[:1200], epochs=1, batch_size=32, verbose=0)
    exported = export_saved_model(
        model,
        base_path=workdir / "models",
        model_name="digits",
        input_name="image",
        task="multiclass",
        class_names=[str(i) for i in range(10)],
        warmup_inputs=x[1200:1210],
    )
    return model, x, exported


# ------------------------------------------------------------------------------ clients


def grpc_caller(address: str, x: np.ndarray) -> Callable[[], Callable[[], bool]]:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(x[:1]))

    def make() -> Callable[[], bool]:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))

        def call() -> bool:
            try:
                stub.Predict(request, timeout=30)
                return True
            except grpc.RpcError:
                return False

        return call

    return make


GRPC_PREDICT = "/tensorflow.serving.PredictionService/Predict"


def grpc_frame(x: np.ndarray) -> bytes:
    """A gRPC message frame (uncompressed flag, length, bytes) of the stub's PredictRequest."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(x))
    message = request.SerializeToString()
    return b"\x00" + struct.pack(">I", len(message)) + message


def http_caller(host: str, port: int, path: str, body: bytes) -> Callable[[], Callable[[], bool]]:
    headers = {"Content-Type": "application/json"}

    def make() -> Callable[[], bool]:
        conn = http.client.HTTPConnection(host, port, timeout=60)

        def call() -> bool:
            nonlocal conn
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                return response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=60)
                return False

        return call

    return make


def paired_latency(calls: dict[str, Callable[[], bool]], rounds: int) -> dict[str, float]:
    """p50 ms of each call, measured in alternation so load drift hits all of them alike."""
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


# ------------------------------------------------------------------------------ servers


def wait_http(
    url_host: str, port: int, path: str, proc: subprocess.Popen, log: Path, timeout: float = 300
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection(url_host, port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server did not come up: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_kts(
    workdir: Path, model_dir: Path, batching: bool, timeout_micros: int = 10_000
) -> Target:
    grpc_port, rest_port, metrics_port = free_port(), free_port(), free_port()
    args = [
        sys.executable, "-m", "pipelines.cli", "serve",
        f"--port={grpc_port}", f"--rest_api_port={rest_port}", f"--metrics_port={metrics_port}",
        "--model_name=digits", f"--model_base_path={model_dir}",
    ]  # fmt: skip
    if batching:
        (workdir / "batching.txt").write_text(batching_parameters(timeout_micros))
        args += ["--enable_batching", f"--batching_parameters_file={workdir / 'batching.txt'}"]
    log = workdir / f"kts-serve-{'on' if batching else 'off'}.log"
    proc = subprocess.Popen(
        args, cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
    )  # noqa: SIM115
    wait_http("127.0.0.1", rest_port, "/v1/models/digits", proc, log)
    tag = "on" if batching else "off"
    return Target(
        "kts serve", tag, proc, rest_port, "/v1/models/digits:predict", grpc_port, metrics_port
    )


def save_mlflow_models(workdir: Path, model, x: np.ndarray, saved_model: Path) -> dict[str, Path]:
    import mlflow
    import mlflow.pyfunc
    import mlflow.tensorflow
    from mlflow.models import infer_signature

    out = {}
    signature = infer_signature(x[:2], np.asarray(model(x[:2])))
    out["keras flavor"] = workdir / "mlflow-keras"
    mlflow.tensorflow.save_model(model, str(out["keras flavor"]), signature=signature)

    out["pyfunc+signature"] = workdir / "mlflow-pyfunc"
    mlflow.pyfunc.save_model(
        str(out["pyfunc+signature"]),
        python_model=SavedModelSignature(),
        artifacts={"saved_model": str(saved_model)},
        signature=signature,
    )
    return out


class _Base:  # imported lazily so the module loads without mlflow
    pass


try:
    import mlflow.pyfunc as _pyfunc

    class SavedModelSignature(_pyfunc.PythonModel):  # type: ignore[misc]
        """MLflow's best case: call the exported SavedModel's serving signature directly."""

        def load_context(self, context):
            import tensorflow as tf

            self.fn = tf.saved_model.load(context.artifacts["saved_model"]).signatures[
                "serving_default"
            ]

        def predict(self, context, model_input, params=None):
            return self.fn(image=np.asarray(model_input, dtype=np.float32))["probabilities"].numpy()

except ImportError:  # pragma: no cover
    SavedModelSignature = _Base  # type: ignore[misc,assignment]


def start_mlflow(workdir: Path, model_path: Path, tag: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    log = workdir / f"mlflow-serve-{tag}.log"
    mlflow_bin = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    # mlflow starts `uvicorn` by name: put this interpreter's bin folder first on PATH.
    env = dict(
        os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    )
    proc = subprocess.Popen(
        [
            mlflow_bin,
            "models",
            "serve",
            "-m",
            str(model_path),
            "--env-manager",
            "local",
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
        ],
        cwd=workdir,
        env=env,
        stdout=open(log, "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_http("127.0.0.1", port, "/ping", proc, log)
    return proc, port


# ------------------------------------------------------------------------------ report


def table(cells: list[Cell]) -> str:
    head = (
        f"{'target':<40}{'proto':<7}{'batch':<7}{'conc':>5}{'req/s':>10}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'errors':>8}{'srv cpu':>9}{'cli cpu':>9}{'rows/b':>8}"
    )
    lines = [head, "-" * len(head)]

    def opt(value: float | None, width: int, digits: int) -> str:
        return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

    for c in cells:
        lines.append(
            f"{c.target:<40}{c.protocol:<7}{c.batching:<7}{c.concurrency:>5}{c.throughput:>10.1f}"
            f"{c.p50_ms:>9.2f}{c.p99_ms:>9.2f}{c.errors:>8}{opt(c.server_cpu_ms, 9, 3)}"
            f"{opt(c.client_cpu_ms, 9, 3)}{opt(c.rows_per_batch, 8, 1)}"
        )
    return "\n".join(lines)


def find(
    cells: list[Cell], target: str, protocol: str, batching: str, concurrency: int
) -> Cell | None:
    for c in cells:
        if (c.target, c.protocol, c.batching, c.concurrency) == (
            target,
            protocol,
            batching,
            concurrency,
        ):
            return c
    return None


Rounds = dict[tuple[str, int], dict[tuple[str, str], list[float]]]
KTS_OFF, KTS_ON = ("kts serve", "off"), ("kts serve", "on")


def _per_round(top: list[float], bottom: list[float]) -> str:
    return ", ".join(f"{a / b:.2f}" if b else "-" for a, b in zip(top, bottom, strict=False))


def verdicts(cells: list[Cell], per_round: Rounds) -> list[str]:
    out = []
    base = find(cells, "in-process signature call", "-", "-", 1)
    grpc1 = find(cells, "kts serve", "grpc", "off", 1)
    if base and grpc1:
        overhead = grpc1.p50_ms - base.p50_ms
        out.append(
            f"gRPC p50 overhead over in-process at c=1 (separate cells): {overhead:.2f} ms (target < 2 ms): {'met' if overhead < 2 else 'NOT met'}"
        )
    for proto in ("grpc", "rest"):
        off, on = (
            find(cells, "kts serve", proto, "off", 32),
            find(cells, "kts serve", proto, "on", 32),
        )
        if off and on:
            gain = on.throughput / off.throughput
            rounds = per_round.get((proto, 32), {})
            spread = _per_round(rounds.get(KTS_ON, []), rounds.get(KTS_OFF, []))
            out.append(
                f"{proto} throughput at c=32, batching on/off: {gain:.2f}x (per round: {spread}) "
                f"(target >= 2x): {'met' if gain >= 2 else 'NOT met'}"
            )
    for flavor in ("keras flavor", "pyfunc+signature"):
        name = f"mlflow models serve ({flavor})"
        for conc in CONCURRENCY:
            ml = find(cells, name, "rest", "-", conc)
            best = max(
                (
                    c
                    for c in (find(cells, "kts serve", "rest", b, conc) for b in ("off", "on"))
                    if c
                ),
                key=lambda c: c.throughput,
                default=None,
            )
            if ml and best and ml.throughput > 0:
                ratio = best.throughput / ml.throughput
                rounds = per_round.get(("rest", conc), {})
                spread = ""
                if (name, "-") in rounds:
                    kts_best = [
                        max(a, b) for a, b in zip(rounds[KTS_OFF], rounds[KTS_ON], strict=False)
                    ]
                    spread = f", per round: {_per_round(kts_best, rounds[(name, '-')])}"
                out.append(
                    f"REST throughput vs mlflow ({flavor}) at c={conc}: {ratio:.1f}x "
                    f"(kts batching {best.batching}{spread}; target >= 3x): "
                    f"{'met' if ratio >= 3 else 'NOT met'}"
                )
    return out


def paired_lines(paired: dict[str, float]) -> list[str]:
    base, same = paired["in-process"], paired["in-process (kts call)"]
    overhead = paired["grpc"] - base
    return [
        "c=1 p50, calls alternated in one thread (load drift cancels): "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in paired.items()),
        f"gRPC p50 overhead over in-process (paired): {overhead:.2f} ms (target < 2 ms): "
        f"{'met' if overhead < 2 else 'NOT met'}; REST: {paired['rest'] - base:.2f} ms",
        # kts serve calls the signature flat (serving.servable.Signature.call), which is
        # cheaper than the keyword call above; against that same call made in-process,
        # what remains is transport, request/response conversion and bookkeeping.
        f"  of which transport and handling (vs the same Signature.call in-process): "
        f"gRPC {paired['grpc'] - same:.2f} ms, REST {paired['rest'] - same:.2f} ms",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell")
    parser.add_argument(
        "--rounds", type=int, default=3, help="slices per cell, the servers taking turns"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the cells as JSON here")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument(
        "--load", choices=("auto", "h2load", "python"), default="auto",
        help="load generator for the server cells (auto: h2load when installed)",
    )  # fmt: skip
    parser.add_argument(
        "--batch-timeout-micros", type=int, default=10_000,
        help="batch_timeout_micros of the batching-on server",
    )  # fmt: skip
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.load == "auto":
        args.load = "h2load" if shutil.which("h2load") else "python"
    elif args.load == "h2load" and not shutil.which("h2load"):
        parser.error(
            "--load h2load: h2load is not on PATH (Debian: apt-get install nghttp2-client)"
        )

    workdir = Path(tempfile.mkdtemp(prefix="kts-bench-serving-"))
    cells: list[Cell] = []
    procs: list[subprocess.Popen] = []
    notes: list[str] = []
    paired: dict[str, float] = {}
    per_round: Rounds = {}
    try:
        print(f"workdir {workdir}; training and exporting the digits CNN ...", flush=True)
        model, x, exported = train_and_export(workdir)
        import tensorflow as tf

        from serving.servable import Servable

        signature = tf.saved_model.load(str(exported.path)).signatures["serving_default"]
        one = x[:1]
        signature(image=one)
        servable = Servable("digits", exported.version, exported.path)
        kts_signature = servable.signatures["serving_default"]

        def in_process() -> Callable[[], bool]:
            def call() -> bool:
                signature(image=one)["probabilities"].numpy()
                return True

            return call

        def kts_call() -> bool:
            kts_signature.call({"image": one})
            return True

        for conc in CONCURRENCY:
            cells.append(
                load(
                    "in-process signature call",
                    python_runner(in_process),
                    conc,
                    args.seconds,
                    protocol="-",
                    batching="-",
                )
            )
            print(table(cells[-1:]).splitlines()[-1], flush=True)

        body = json.dumps({"instances": one.tolist()}).encode()
        rest_body, grpc_body = workdir / "request.json", workdir / "request.grpc"
        rest_body.write_bytes(body)
        grpc_body.write_bytes(grpc_frame(one))
        servers = [
            start_kts(workdir, exported.path.parent, batching, args.batch_timeout_micros)
            for batching in (False, True)
        ]
        procs += [k.proc for k in servers]
        off = servers[0]
        paired = paired_latency(
            {
                "in-process": in_process(),
                "in-process (kts call)": kts_call,
                "grpc": grpc_caller(f"127.0.0.1:{off.grpc_port}", x)(),
                "rest": http_caller("127.0.0.1", off.rest_port, off.rest_path, body)(),
            },
            rounds=int(150 * args.seconds),
        )

        mlflow_servers: list[Target] = []
        if not args.skip_mlflow:
            try:
                flavors = save_mlflow_models(workdir, model, x, exported.path)
            except Exception as err:  # report why MLflow could not be measured
                notes.append(f"mlflow models could not be saved: {type(err).__name__}: {err}")
                flavors = {}
            for flavor, saved in flavors.items():
                try:
                    proc, port = start_mlflow(workdir, saved, flavor.split()[0].replace("+", "-"))
                except RuntimeError as err:
                    notes.append(f"mlflow models serve ({flavor}) did not start: {str(err)[-800:]}")
                    continue
                procs.append(proc)
                name = f"mlflow models serve ({flavor})"
                mlflow_servers.append(Target(name, "-", proc, port, "/invocations"))
        # The pyfunc flavor (MLflow's best case, the close competitor) takes turns with kts
        # serve over REST; the Keras flavor answers in seconds at c=32, too slow to measure
        # in slices, and is measured on its own afterwards.
        rivals = [t for t in mlflow_servers if "pyfunc" in t.name]
        slow = [t for t in mlflow_servers if t not in rivals]

        def make(t: Target, proto: str) -> Runner:
            if args.load == "python":
                if proto == "grpc":
                    return python_runner(grpc_caller(f"127.0.0.1:{t.grpc_port}", x))
                return python_runner(http_caller("127.0.0.1", t.rest_port, t.rest_path, body))
            errors_now = (lambda: failed_requests(t.metrics_port)) if t.metrics_port else None
            if proto == "grpc":
                spec = H2Load(
                    f"http://127.0.0.1:{t.grpc_port}{GRPC_PREDICT}", grpc_body,
                    ("content-type: application/grpc", "te: trailers"), http1=False,
                )  # fmt: skip
            else:
                spec = H2Load(
                    f"http://127.0.0.1:{t.rest_port}{t.rest_path}", rest_body,
                    ("content-type: application/json",), http1=True,
                )  # fmt: skip
            return h2load_runner(spec, workdir, errors_now)

        measured: list[Cell] = []
        for conc in CONCURRENCY:
            for proto in ("grpc", "rest"):
                group = servers + (rivals if proto == "rest" else [])
                got, per_round[(proto, conc)] = measure(
                    group, lambda t, proto=proto: make(t, proto), protocol=proto,
                    concurrency=conc, seconds=args.seconds, rounds=args.rounds,
                )  # fmt: skip
                measured += got
                for line in table(got).splitlines()[2:]:
                    print(line, flush=True)
        for target in slow:
            for conc in CONCURRENCY:
                measured.append(
                    load(target.name, make(target, "rest"), conc, args.seconds,
                         protocol="rest", batching="-")
                )  # fmt: skip
                print(table(measured[-1:]).splitlines()[-1], flush=True)
        names = {"kts serve": 0, **{t.name: 1 + i for i, t in enumerate(slow + rivals)}}
        order = {"off": 0, "on": 1, "-": 2}
        cells += sorted(
            measured,
            key=lambda c: (names[c.target], order[c.batching], c.concurrency, c.protocol),
        )
    finally:
        for proc in procs:
            stop(proc)

    print()
    print(
        f"Serving benchmark, digits CNN, one image per request, {args.seconds:.0f}s per cell "
        f"(kts serve off/on and mlflow pyfunc take turns in {args.rounds} slices), "
        f"load from {'h2load' if args.load == 'h2load' else 'Python client threads'}, "
        f"batching on: batch_timeout_micros {args.batch_timeout_micros}, "
        f"{os.cpu_count()} CPUs shared by "
        "clients and servers; srv/cli cpu = CPU ms per request of the server / load generator, "
        "rows/b = mean rows per batched model call"
    )
    print(table(cells))
    print()
    lines = paired_lines(paired) if paired else []
    for line in lines + verdicts(cells, per_round) + notes:
        print(line)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cells": [asdict(c) for c in cells],
                    "paired_p50_ms": paired,
                    "per_round_req_per_s": {
                        f"{p} c={c}": {f"{n} [{b}]": v for (n, b), v in got.items()}
                        for (p, c), got in per_round.items()
                    },
                    "notes": notes,
                },
                indent=2,
            )
        )
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
