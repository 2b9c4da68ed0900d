"""Shared test helpers: free ports, running `kts` as a real process, waiting for servers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "pipelines" / "configs"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kts_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a `kts` subprocess: quiet TF, no stray tracking URI."""
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.update(extra or {})
    return env


def kts(
    args: Sequence[str],
    *,
    cwd: str | Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``kts ARGS`` as a real process and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=cwd,
        env=kts_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def mlflow_bin() -> str:
    """The `mlflow` command of this interpreter's environment."""
    import shutil

    return shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"


def start_mlflow_server(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A real `mlflow server` on 127.0.0.1 with its SQLite store and artifacts in ``root``,
    in a process group of its own (`stop_process_group` ends it with its workers);
    (process, URI) once its ``/health`` answers. The log is ``root/server.log``."""
    import requests

    port = free_port()
    proc = subprocess.Popen(
        [
            mlflow_bin(),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--workers",
            "1",
        ],
        cwd=root,
        stdout=open(root / "server.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError((root / "server.log").read_text()[-3000:])
        try:
            return requests.get(uri + "/health", timeout=1).ok
        except requests.RequestException:
            return False

    try:
        wait_until(healthy, timeout=120, what="mlflow server")
    except BaseException:
        stop_process_group(proc, signal.SIGKILL)
        raise
    return proc, uri


def stop_process_group(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to the process group ``proc`` leads and reap it (SIGKILL after 20 s)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


def assert_user_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, exactly one line on stderr, no traceback, mentioning every needle."""
    err = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], err[-2000:])
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.2):
    """Poll ``check`` until it returns True or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def python_c(
    code: str,
    *,
    check: bool = False,
    timeout: float = 120,
    cwd: str | Path = REPO,
    env: Mapping[str, str] | None = None,
):
    """Run ``python -c CODE`` as a fresh process (in the repository unless ``cwd``)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=kts_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


_CLI_PROBE = """
import sys
from pipelines.cli import main
code = None
try:
    code = main({argv!r})
finally:
    heavy = sorted(m for m in ("tensorflow", "keras", "mlflow") if m in sys.modules)
    print("HEAVY=" + ",".join(heavy))
sys.exit(code)
"""


def kts_probe(
    argv: Sequence[str],
    *,
    cwd: str | Path = REPO,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
):
    """``kts ARGV`` in a fresh process whose stdout ends with ``HEAVY=<modules>``: the
    heavy libraries (tensorflow, keras, mlflow) it imported, empty when none."""
    return python_c(_CLI_PROBE.format(argv=list(argv)), cwd=cwd, env=env, timeout=timeout)


def heavy_imports(result: subprocess.CompletedProcess[str]) -> str:
    """What a `kts_probe` process imported of tensorflow, keras and mlflow ("" for none)."""
    last = result.stdout.rstrip().splitlines()[-1] if result.stdout.strip() else ""
    assert last.startswith("HEAVY="), result.stdout[-2000:]
    return last.removeprefix("HEAVY=")


# A pipeline run as small as it gets: tests about what happens around training.
TINY = [
    "--set",
    "tuning.enabled=false",
    "--set",
    "training.epochs=1",
    "--set",
    "model.filters=[8]",
    "--set",
    "model.dense_units=16",
    "--set",
    "tracking.reports=false",
]
