"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from tests.helpers import start_mlflow_server, stop_process_group

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
    proc, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield uri
    stop_process_group(proc)
