"""Creating the local MLflow store is kill-safe; a store half-created by an older version
is rebuilt when it holds nothing, and explained (exit 2) when it holds runs."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.helpers import CONFIGS, TINY, assert_user_error, kts, kts_env, python_c

# What `kts run` does to the store before training: open it (creating it when
# missing), create the experiment and a run, end the run.
START = """
from pathlib import Path
from service.tracking import Tracker
tracker = Tracker.start(uri="sqlite:///mlflow.db", experiment="e", run_name=None,
                        required=True, fallback_dir=Path("."))
tracker.end()
print("RUN", tracker.run_id)
"""

CREATE_ONLY = (
    "from mlflow.tracking import MlflowClient; "
    "MlflowClient(tracking_uri='sqlite:///mlflow.db').search_experiments()"
)


def _runs(folder) -> list[tuple[str, str]]:
    con = sqlite3.connect(folder / "mlflow.db")
    try:
        return list(con.execute("SELECT run_uuid, status FROM runs"))
    finally:
        con.close()


@pytest.mark.slow
def test_a_kill_during_first_store_creation_leaves_a_store_the_next_run_can_use(tmp_path):
    timing = tmp_path / "timing"
    timing.mkdir()
    began = time.monotonic()
    python_c(START, cwd=timing, check=True, timeout=300)
    took = time.monotonic() - began  # imports, then the schema migrations, then the run

    # SIGKILL at points spread over that time (most of it inside the migrations).
    mid_creation = []
    for i, fraction in enumerate((0.3, 0.45, 0.55, 0.65, 0.75, 0.85)):
        folder = tmp_path / f"kill{i}"
        folder.mkdir()
        proc = subprocess.Popen(
            [sys.executable, "-c", START],
            cwd=folder,
            env=kts_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(took * fraction)
        proc.kill()
        proc.wait()
        mid_creation.append(bool(list(folder.glob(".mlflow.db.creating-*"))))
        again = python_c(START, cwd=folder, timeout=300)
        assert again.returncode == 0, (fraction, again.stderr[-3000:])
        assert "Traceback" not in again.stderr
        assert not list(folder.glob(".mlflow.db.creating-*")), fraction  # no temp left
        assert ("FINISHED",) <= tuple(s for _, s in _runs(folder))

    assert any(mid_creation), "no kill landed inside the store's creation"

    # And a whole pipeline run records into such a store.
    result = kts(
        ["run", str(CONFIGS / "digits_cnn.yaml"), *TINY, "--output-json", "o.json"], cwd=folder
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = json.loads((folder / "o.json").read_text())["run_id"]
    assert (run_id, "FINISHED") in _runs(folder)


def _half_created(folder, *, with_run: bool) -> None:
    """A store as an older `kts` left it when killed inside a schema migration: complete
    but for a table Alembic's batch migration had not renamed yet."""
    python_c(START if with_run else CREATE_ONLY, cwd=folder, check=True, timeout=300)
    con = sqlite3.connect(folder / "mlflow.db")
    con.execute("CREATE TABLE _alembic_tmp_experiment_tags (key VARCHAR(250))")
    con.commit()
    con.close()


@pytest.mark.slow
def test_half_created_store_without_runs_is_rebuilt(tmp_path):
    _half_created(tmp_path, with_run=False)
    result = python_c(START, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "half-created MLflow store (table _alembic_tmp_experiment_tags left over" in result.stderr
    )
    assert len(list(tmp_path.glob("mlflow.db.broken-*"))) == 1  # kept aside, not deleted
    assert [s for _, s in _runs(tmp_path)] == ["FINISHED"]


@pytest.mark.slow
def test_half_created_store_with_runs_is_exit_2_saying_how_to_repair(tmp_path):
    _half_created(tmp_path, with_run=True)
    before = (tmp_path / "mlflow.db").read_bytes()
    result = kts(["run", str(CONFIGS / "digits_cnn.yaml"), *TINY], cwd=tmp_path, timeout=120)
    assert_user_error(
        result,
        "mlflow.db",
        "_alembic_tmp_experiment_tags",
        "(1 in runs, 0 in registered_models)",
        "mlflow db upgrade",
    )
    assert (tmp_path / "mlflow.db").read_bytes() == before  # untouched
    assert not (tmp_path / "runs").exists()  # found by the preflight, before the data
