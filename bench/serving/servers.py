"""The servers under test and the in-process baseline.

* `InProcess`: ``tf.saved_model.load(...).signatures["serving_default"]`` called in this
  process -- the limit any server can approach.
* ``kts serve`` (`start_kts`), this checkout's ``python -m pipelines.cli serve`` with
  ``--enable_batching`` off or on; its ``/metrics`` page gives failed requests and rows
  per batched model call (`failed_requests`, `batch_totals`).
* ``mlflow models serve --env-manager local`` (`start_mlflow`) of the models
  `save_mlflow_models` writes: MLflow's Keras flavor of the trained model, and a pyfunc
  calling the same exported SavedModel signature (MLflow's best case). ``local`` serves
  from this interpreter's environment: nothing is installed or downloaded.

Every server listens on 127.0.0.1 on free ports, in its own process group, with its
output in a log file under the benchmark's working folder.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench._kts import ROOT, env
from bench.serving.load import MODEL_NAME, Client

HOST = "127.0.0.1"
KTS_PREDICT = f"/v1/models/{MODEL_NAME}:predict"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Target:
    """A server under test: ``kts serve`` (batching off or on) or ``mlflow models serve``.

    Attributes:
        name: the name in the report (``"kts serve"``, ``"mlflow models serve (...)"``).
        batching: ``"off"`` / ``"on"`` for kts serve, ``"-"`` otherwise.
        proc: the server process (leader of its own process group).
        log: the server's stdout and stderr.
        ready_path: answers HTTP 200 on the REST port once the server is ready.
        rest_port: the REST port.
        rest_path: the path predictions are POSTed to.
        grpc_port: the gRPC port (kts serve only; 0 otherwise).
        metrics_port: the Prometheus port (kts serve only; 0 otherwise): the server's CPU
            and batch sizes are read for these.
    """

    name: str
    batching: str
    proc: subprocess.Popen[bytes]
    log: Path
    ready_path: str
    rest_port: int
    rest_path: str
    grpc_port: int = 0
    metrics_port: int = 0

    @property
    def key(self) -> tuple[str, str]:
        """(name, batching): one target in per-round tables."""
        return self.name, self.batching


def wait_ready(target: Target, timeout: float = 300) -> None:
    """Poll ``GET ready_path`` every 0.5 s until HTTP 200, for up to ``timeout`` s.

    Raises:
        RuntimeError: the server exited or did not come up; the message ends with its log.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.proc.poll() is not None:
            raise RuntimeError(f"server exited: {target.log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection(HOST, target.rest_port, timeout=2)
            conn.request("GET", target.ready_path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server did not come up: {target.log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group of ``proc``; SIGKILL it after 30 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _spawn(
    args: list[str], *, cwd: Path, log: Path, bin_first: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own session, output to ``log``, this checkout first on
    PYTHONPATH (`bench._kts.env`), and with ``bin_first`` this interpreter's bin folder
    first on PATH."""
    environ = env()
    if bin_first:
        environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + environ.get("PATH", "")
    with open(log, "w") as out:
        return subprocess.Popen(
            args, cwd=cwd, env=environ, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


# ------------------------------------------------------------------ kts serve


def batching_parameters(timeout_micros: int) -> str:
    """The ``--batching_parameters_file`` text for the batching-on server.

    Args:
        timeout_micros: how long (µs) a batch may wait to fill.
    """
    return (
        "max_batch_size { value: 32 }\n"
        f"batch_timeout_micros {{ value: {timeout_micros} }}\n"
        "max_enqueued_batches { value: 100 }\n"
        "num_batch_threads { value: 2 }\n"
    )


def start_kts(workdir: Path, model_dir: Path, *, batching: bool, timeout_micros: int) -> Target:
    """Start ``kts serve`` of ``model_dir`` (``BASE/digits``); returns before it is ready.

    It runs as ``python -m pipelines.cli serve`` from this checkout (cwd and PYTHONPATH),
    so it serves this checkout's code whatever ``kts`` is installed.

    Args:
        workdir: the benchmark's working folder (log, batching parameters).
        model_dir: the model's folder holding its integer versions.
        batching: start with ``--enable_batching``.
        timeout_micros: ``batch_timeout_micros`` when batching (µs).
    """
    grpc_port, rest_port, metrics_port = free_port(), free_port(), free_port()
    args = [
        sys.executable, "-m", "pipelines.cli", "serve",
        f"--port={grpc_port}", f"--rest_api_port={rest_port}", f"--metrics_port={metrics_port}",
        f"--model_name={MODEL_NAME}", f"--model_base_path={model_dir}",
    ]  # fmt: skip
    if batching:
        (workdir / "batching.txt").write_text(batching_parameters(timeout_micros))
        args += ["--enable_batching", f"--batching_parameters_file={workdir / 'batching.txt'}"]
    tag = "on" if batching else "off"
    log = workdir / f"kts-serve-{tag}.log"
    proc = _spawn(args, cwd=ROOT, log=log)
    return Target(
        "kts serve", tag, proc, log, f"/v1/models/{MODEL_NAME}", rest_port, KTS_PREDICT,
        grpc_port, metrics_port,
    )  # fmt: skip


def metrics_text(metrics_port: int) -> str:
    """kts serve's Prometheus page (``GET /metrics``)."""
    conn = http.client.HTTPConnection(HOST, metrics_port, timeout=10)
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


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) of process ``pid``; None off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# ------------------------------------------------------------------ mlflow models serve

KERAS_FLAVOR, PYFUNC_FLAVOR = "keras flavor", "pyfunc+signature"


def mlflow_name(flavor: str) -> str:
    """The report's name of the MLflow server of ``flavor``."""
    return f"mlflow models serve ({flavor})"


def save_mlflow_models(
    workdir: Path, model: Any, x: np.ndarray, saved_model: Path, *, flavors: tuple[str, ...]
) -> dict[str, Path]:
    """Save the MLflow models of ``flavors`` under ``workdir``; returns flavor -> model folder.

    Both carry the same signature, inferred from two images of ``x`` and ``model``'s
    answers to them.

    Args:
        workdir: where the model folders go.
        model: the trained Keras model (the Keras flavor saves it).
        x: images, float32 ``[n, 8, 8, 1]``.
        saved_model: the exported SavedModel version folder (the pyfunc's artifact).
        flavors: some of `KERAS_FLAVOR`, `PYFUNC_FLAVOR`.
    """
    from importlib.metadata import version

    import cloudpickle
    import mlflow.pyfunc
    import mlflow.tensorflow
    from mlflow.models import infer_signature

    from bench.serving import mlflow_model

    # By value, as the script's own classes were: the serving process needs no bench code.
    cloudpickle.register_pickle_by_value(mlflow_model)
    # Listed, not inferred: inference loads each model in a subprocess (about 25 s on a
    # loaded 2-CPU box), and `--env-manager local` serves from this environment anyway.
    requirements = [f"{name}=={version(name)}" for name in ("tensorflow", "cloudpickle")]
    out = {}
    signature = infer_signature(x[:2], np.asarray(model(x[:2])))
    if KERAS_FLAVOR in flavors:
        out[KERAS_FLAVOR] = workdir / "mlflow-keras"
        mlflow.tensorflow.save_model(
            model, str(out[KERAS_FLAVOR]), signature=signature, pip_requirements=requirements
        )
    if PYFUNC_FLAVOR in flavors:
        out[PYFUNC_FLAVOR] = workdir / "mlflow-pyfunc"
        mlflow.pyfunc.save_model(
            str(out[PYFUNC_FLAVOR]),
            python_model=mlflow_model.SavedModelSignature(),
            artifacts={"saved_model": str(saved_model)},
            signature=signature,
            pip_requirements=requirements,
        )
    return out


def start_mlflow(workdir: Path, model_path: Path, flavor: str) -> Target:
    """Start ``mlflow models serve --env-manager local`` of ``model_path``; returns before
    it is ready. Predictions are POSTed to ``/invocations``."""
    port = free_port()
    tag = flavor.split()[0].replace("+", "-")
    mlflow_bin = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    args = [
        mlflow_bin, "models", "serve", "-m", str(model_path), "--env-manager", "local",
        "-p", str(port), "-h", HOST,
    ]  # fmt: skip
    log = workdir / f"mlflow-serve-{tag}.log"
    # mlflow starts `uvicorn` by name: this interpreter's bin folder goes first on PATH.
    proc = _spawn(args, cwd=workdir, log=log, bin_first=True)
    return Target(mlflow_name(flavor), "-", proc, log, "/ping", port, "/invocations")


# ------------------------------------------------------------------ in-process baseline


class InProcess:
    """The baseline: the exported ``serving_default`` signature called in this process.

    Also holds the same signature as ``kts serve`` calls it (`serving.servable`'s flat
    ``Signature.call``), to split a server's overhead into transport and the call.
    """

    def __init__(self, export_path: Path, version: int, one: np.ndarray) -> None:
        """Load the SavedModel at ``export_path`` and call it once on ``one`` (``[1, 8, 8, 1]``)."""
        import tensorflow as tf

        from serving.servable import Servable

        self._one = one
        self._signature = tf.saved_model.load(str(export_path)).signatures["serving_default"]
        self._signature(image=one)
        servable = Servable(MODEL_NAME, version, export_path)
        self._kts_signature = servable.signatures["serving_default"]

    def call(self) -> bool:
        """One keyword call of the signature, answer converted to NumPy; always True."""
        self._signature(image=self._one)["probabilities"].numpy()
        return True

    def kts_call(self) -> bool:
        """One call as kts serve makes it (``Signature.call``); always True."""
        self._kts_signature.call({"image": self._one})
        return True

    def client(self) -> Client:
        """A `load.ClientFactory`: every client thread calls the same signature."""
        return self.call
