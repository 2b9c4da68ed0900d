"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import free_port, wait_until

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Strict mode (`service.strict`): tracking and report failures are raised, here and in
# every `kts` process the tests start (they inherit it), so they get fixed. A test of
# the forgiving path passes KTS_STRICT=0 to its process.
os.environ["KTS_STRICT"] = "1"


@pytest.fixture(autouse=True)
def _fixed_seeds():
    """Every test starts from the same Python and NumPy seeds."""
    random.seed(1234)
    np.random.seed(1234)


@pytest.fixture
def keras_seed():
    """Seed Keras/TensorFlow too (imports TensorFlow, so only on request)."""
    import keras

    keras.utils.set_random_seed(1234)
    return 1234


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with a SQLite backend; yields its URI."""
    import requests

    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow_bin = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    proc = subprocess.Popen(
        [
            mlflow_bin,
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
    )
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError((root / "server.log").read_text()[-3000:])
        try:
            return requests.get(uri + "/health", timeout=1).ok
        except requests.RequestException:
            return False

    wait_until(healthy, timeout=120, what="mlflow server")
    yield uri
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
