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

Every request carries one digit image (online serving). Clients are threads in this
process with one connection each, at concurrency 1, 8 and 32; each cell runs for
``--seconds`` after a short warm-up. Client and servers share the machine's cores, so
compare ratios within one run, not absolute numbers across machines.

Run:
    .venv/bin/python bench/serving.py [--seconds 3] [--json results.json] [--skip-mlflow]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
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
BATCHING = (
    "max_batch_size { value: 32 }\n"
    "batch_timeout_micros { value: 1000 }\n"
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load(
    name: str,
    make_caller: Callable[[], Callable[[], bool]],
    concurrency: int,
    seconds: float,
    *,
    protocol: str,
    batching: str,
) -> Cell:
    """Run ``concurrency`` closed-loop clients for ``seconds``; each call returns success."""
    start_gate = threading.Barrier(concurrency + 1)
    stop_at = [0.0]
    warm_until = [0.0]
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency

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
            if t0 >= warm_until[0]:
                own.append(t1 - t0)
                if not ok:
                    errors[i] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    now = time.perf_counter()
    warm_until[0] = now + min(1.0, seconds / 3)
    stop_at[0] = warm_until[0] + seconds
    start_gate.wait()
    for t in threads:
        t.join()
    flat = np.array([x for own in latencies for x in own]) if any(latencies) else np.zeros(1)
    return Cell(
        target=name,
        protocol=protocol,
        batching=batching,
        concurrency=concurrency,
        requests=int(sum(len(o) for o in latencies)),
        errors=int(sum(errors)),
        throughput=sum(len(o) for o in latencies) / seconds,
        p50_ms=float(np.percentile(flat, 50) * 1e3),
        p99_ms=float(np.percentile(flat, 99) * 1e3),
    )


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


def start_kts(workdir: Path, model_dir: Path, batching: bool) -> tuple[subprocess.Popen, int, int]:
    grpc_port, rest_port = free_port(), free_port()
    args = [
        sys.executable, "-m", "pipelines.cli", "serve",
        f"--port={grpc_port}", f"--rest_api_port={rest_port}",
        "--model_name=digits", f"--model_base_path={model_dir}",
    ]  # fmt: skip
    if batching:
        (workdir / "batching.txt").write_text(BATCHING)
        args += ["--enable_batching", f"--batching_parameters_file={workdir / 'batching.txt'}"]
    log = workdir / f"kts-serve-{'on' if batching else 'off'}.log"
    proc = subprocess.Popen(
        args, cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
    )  # noqa: SIM115
    wait_http("127.0.0.1", rest_port, "/v1/models/digits", proc, log)
    return proc, grpc_port, rest_port


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
    head = f"{'target':<34}{'proto':<7}{'batch':<7}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
    lines = [head, "-" * len(head)]
    for c in cells:
        lines.append(
            f"{c.target:<34}{c.protocol:<7}{c.batching:<7}{c.concurrency:>5}{c.throughput:>10.1f}"
            f"{c.p50_ms:>9.2f}{c.p99_ms:>9.2f}{c.errors:>8}"
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


def verdicts(cells: list[Cell]) -> list[str]:
    out = []
    base = find(cells, "in-process signature call", "-", "-", 1)
    grpc1 = find(cells, "kts serve", "grpc", "off", 1)
    if base and grpc1:
        overhead = grpc1.p50_ms - base.p50_ms
        out.append(
            f"gRPC p50 overhead over in-process at c=1: {overhead:.2f} ms (target < 2 ms): {'met' if overhead < 2 else 'NOT met'}"
        )
    for proto in ("grpc", "rest"):
        off, on = (
            find(cells, "kts serve", proto, "off", 32),
            find(cells, "kts serve", proto, "on", 32),
        )
        if off and on:
            gain = on.throughput / off.throughput
            out.append(
                f"{proto} throughput at c=32, batching on/off: {gain:.2f}x (target >= 2x): {'met' if gain >= 2 else 'NOT met'}"
            )
    for flavor in ("keras flavor", "pyfunc+signature"):
        for conc in CONCURRENCY:
            ml = find(cells, f"mlflow models serve ({flavor})", "rest", "-", conc)
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
                out.append(
                    f"REST throughput vs mlflow ({flavor}) at c={conc}: {ratio:.1f}x "
                    f"(kts batching {best.batching}; target >= 3x): {'met' if ratio >= 3 else 'NOT met'}"
                )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell")
    parser.add_argument("--json", type=Path, default=None, help="also write the cells as JSON here")
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="kts-bench-serving-"))
    cells: list[Cell] = []
    procs: list[subprocess.Popen] = []
    notes: list[str] = []
    paired: dict[str, float] = {}
    try:
        print(f"workdir {workdir}; training and exporting the digits CNN ...", flush=True)
        model, x, exported = train_and_export(workdir)
        import tensorflow as tf

        signature = tf.saved_model.load(str(exported.path)).signatures["serving_default"]
        one = x[:1]
        signature(image=one)

        def in_process() -> Callable[[], bool]:
            def call() -> bool:
                signature(image=one)["probabilities"].numpy()
                return True

            return call

        for conc in CONCURRENCY:
            cells.append(
                load(
                    "in-process signature call",
                    in_process,
                    conc,
                    args.seconds,
                    protocol="-",
                    batching="-",
                )
            )
            print(table(cells[-1:]).splitlines()[-1], flush=True)

        body = json.dumps({"instances": one.tolist()}).encode()
        for batching in (False, True):
            proc, grpc_port, rest_port = start_kts(workdir, exported.path.parent, batching)
            procs.append(proc)
            tag = "on" if batching else "off"
            if not batching:
                paired = paired_latency(
                    {
                        "in-process": in_process(),
                        "grpc": grpc_caller(f"127.0.0.1:{grpc_port}", x)(),
                        "rest": http_caller(
                            "127.0.0.1", rest_port, "/v1/models/digits:predict", body
                        )(),
                    },
                    rounds=int(150 * args.seconds),
                )
            for conc in CONCURRENCY:
                cells.append(
                    load(
                        "kts serve",
                        grpc_caller(f"127.0.0.1:{grpc_port}", x),
                        conc,
                        args.seconds,
                        protocol="grpc",
                        batching=tag,
                    )
                )
                print(table(cells[-1:]).splitlines()[-1], flush=True)
                path = "/v1/models/digits:predict"
                cells.append(
                    load(
                        "kts serve",
                        http_caller("127.0.0.1", rest_port, path, body),
                        conc,
                        args.seconds,
                        protocol="rest",
                        batching=tag,
                    )
                )
                print(table(cells[-1:]).splitlines()[-1], flush=True)
            stop(proc)

        if not args.skip_mlflow:
            try:
                flavors = save_mlflow_models(workdir, model, x, exported.path)
            except Exception as err:  # report why MLflow could not be measured
                notes.append(f"mlflow models could not be saved: {type(err).__name__}: {err}")
                flavors = {}
            for flavor, path in flavors.items():
                try:
                    proc, port = start_mlflow(workdir, path, flavor.split()[0].replace("+", "-"))
                except RuntimeError as err:
                    notes.append(f"mlflow models serve ({flavor}) did not start: {str(err)[-800:]}")
                    continue
                procs.append(proc)
                for conc in CONCURRENCY:
                    cells.append(
                        load(
                            f"mlflow models serve ({flavor})",
                            http_caller("127.0.0.1", port, "/invocations", body),
                            conc,
                            args.seconds,
                            protocol="rest",
                            batching="-",
                        )
                    )
                    print(table(cells[-1:]).splitlines()[-1], flush=True)
                stop(proc)
    finally:
        for proc in procs:
            stop(proc)

    print()
    print(
        f"Serving benchmark, digits CNN, one image per request, {args.seconds:.0f}s per cell, {os.cpu_count()} CPUs shared by clients and servers"
    )
    print(table(cells))
    print()
    if paired:
        print(
            "c=1 p50, calls alternated in one thread (load drift cancels): "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in paired.items())
        )
        overhead = paired["grpc"] - paired["in-process"]
        print(
            f"gRPC p50 overhead over in-process (paired): {overhead:.2f} ms (target < 2 ms): "
            f"{'met' if overhead < 2 else 'NOT met'}; REST: {paired['rest'] - paired['in-process']:.2f} ms"
        )
    for line in verdicts(cells) + notes:
        print(line)
    if args.json:
        args.json.write_text(
            json.dumps({"cells": [asdict(c) for c in cells], "notes": notes}, indent=2)
        )
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
