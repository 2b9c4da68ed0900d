"""MLflow hygiene: distinct run names, logged models in the run's experiment, no run
left RUNNING when the run stops on a user error."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.helpers import CONFIGS, TINY, kts, kts_env, wait_until

DEFAULT = str(CONFIGS / "digits_cnn.yaml")


def _client(cwd):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")


@pytest.mark.slow
def test_two_runs_of_a_config_get_distinct_names_and_models_in_their_experiment(tmp_path):
    summaries = []
    for _ in range(2):
        result = kts(["run", DEFAULT, *TINY, "--output-json", "out.json"], cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        summaries.append(json.loads((tmp_path / "out.json").read_text()))
    from mlflow.entities import LoggedModelStatus

    client = _client(tmp_path)
    runs = [client.get_run(s["run_id"]) for s in summaries]
    names = [r.info.run_name for r in runs]
    assert names[0] != names[1]  # the seeded RNG does not pick the name
    for name in names:
        assert re.fullmatch(r"digits_cnn-\d{8}-\d{6}-[0-9a-f]{4}", name), name

    # Each run's MLflow model (champion, then challenger) is in the run's experiment,
    # linked to the run as its output; the Default experiment holds none.
    experiment = client.get_experiment_by_name("digits_cnn").experiment_id
    models = client.search_logged_models(experiment_ids=[experiment])
    assert sorted(m.source_run_id for m in models) == sorted(s["run_id"] for s in summaries)
    assert all(m.name == "model" and m.status == LoggedModelStatus.READY for m in models)
    assert client.search_logged_models(experiment_ids=["0"]) == []
    for run in runs:
        outputs = [o.model_id for o in run.outputs.model_outputs]
        assert outputs == [m.model_id for m in models if m.source_run_id == run.info.run_id]
    registered = {s["registered_version"] for s in summaries}
    assert registered == {"1", "2"}


@pytest.mark.slow
def test_user_error_after_the_run_started_ends_it_failed(tmp_path):
    """The export folder is replaced by a file while the run trains: exit 2 naming
    `export.base_path`, and the MLflow run ends FAILED, not RUNNING."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "run",
            DEFAULT,
            *TINY,
            "--set",
            "training.epochs=4",
        ],
        cwd=tmp_path,
        env=kts_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state = tmp_path / "runs" / "digits_cnn" / "state.json"

    def tracking() -> bool:
        if proc.poll() is not None:
            return True
        try:
            return json.loads(state.read_text())["status"] == "running"
        except (OSError, ValueError, KeyError):
            return False

    try:
        wait_until(tracking, timeout=300, what="the run to start tracking", interval=0.02)
        (tmp_path / "serving_models").write_text("a file where the exports go\n")
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]  # (TensorFlow may have warned before it)
    assert last.startswith("kts: error: Invalid value for `export.base_path`: received"), last
    assert "'serving_models'" in last
    assert "writing the export failed" in last
    run_id = json.loads(state.read_text())["run_id"]
    assert _client(tmp_path).get_run(run_id).info.status == "FAILED"
    assert not (tmp_path / "runs" / "digits_cnn" / "run.lock").exists()
