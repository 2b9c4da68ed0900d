"""MLflow hygiene: distinct run names, logged models in the run's experiment."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import CONFIGS, TINY, kts

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
