"""Tuning: the config space as Keras-Tuner hyper-parameters, every tuner, trials in MLflow.

The end-to-end test runs `kts run` on a tiny random search, SIGKILLs it after the
first finished trial and runs the same command again: the search continues in the
same MLflow parent run, no trial runs twice and each trial has exactly one child
run holding that trial's hyper-parameters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import assert_user_error, kts, kts_env, wait_until

SPACE = {
    "model.dropout": {"type": "float", "min": 0.0, "max": 0.5, "step": 0.25},
    "model.filters": {"type": "choice", "values": [[8], [8, 8]]},
    "training.optimizer.name": {"type": "choice", "values": ["adam", "sgd"]},
    "training.optimizer.momentum": {
        "type": "float",
        "min": 0.0,
        "max": 0.9,
        "step": 0.3,
        "parent": "training.optimizer.name",
        "parent_values": ["sgd"],
    },
    "model.batch_norm": {"type": "boolean"},
}


def _config(tmp_path: Path, *, space=None, **tuning) -> dict:
    return {
        "name": "tiny_tune",
        "seed": 7,
        "data": {"source": "digits"},
        "model": {"type": "simple_cnn", "filters": [8], "dense_units": 16},
        "training": {"epochs": 1, "batch_size": 64},
        "tuning": {"space": space or SPACE, **tuning},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "reports": False},
        "export": {"base_path": str(tmp_path / "serving")},
    }


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ------------------------------------------------------------------ space
def test_space_maps_to_keras_tuner_hyperparameters(tmp_path):
    import keras_tuner

    from service.config import validate
    from tuning.space import apply, declare

    cfg = validate(_config(tmp_path))
    hp = keras_tuner.HyperParameters()
    values = declare(hp, cfg.tuning.space)
    kinds = {p.name: type(p).__name__ for p in hp.space}
    assert kinds == {
        "model.dropout": "Float",
        "model.filters": "Choice",
        "training.optimizer.name": "Choice",
        "training.optimizer.momentum": "Float",
        "model.batch_norm": "Boolean",
    }
    by_name = {p.name: p for p in hp.space}
    assert by_name["model.filters"].values == ["[8]", "[8, 8]"]  # lists travel as JSON text
    (condition,) = by_name["training.optimizer.momentum"].conditions
    assert (condition.name, condition.values) == ("training.optimizer.name", ["adam", "sgd"][1:])
    # Defaults: the first choice (adam) leaves momentum inactive, so it is not applied.
    assert "training.optimizer.momentum" not in values
    assert values["model.filters"] == [8]

    hp.values["training.optimizer.name"] = "sgd"
    hp.values["training.optimizer.momentum"] = 0.6
    hp.values["model.filters"] = "[8, 8]"
    trial = apply(cfg, declare(hp, cfg.tuning.space))
    assert trial.training.optimizer.name == "sgd"
    assert trial.training.optimizer.momentum == pytest.approx(0.6)
    assert trial.model.options["filters"] == [8, 8]
    assert cfg.training.optimizer.name == "adam"  # the run's config is unchanged


@pytest.mark.parametrize(
    ("key", "spec", "needles"),
    [
        ("model.dropot", {"type": "float", "min": 0, "max": 1}, ["model.dropout", "received"]),
        ("training.optimizer.lr", {"type": "float", "min": 0.1, "max": 1}, ["learning_rate"]),
        ("optimizer.name", {"type": "choice", "values": ["sgd"]}, ["training.<field>"]),
        ("model.dropout", {"type": "float", "min": 0.5, "max": 0.1}, ["empty range"]),
        ("model.dense_units", {"type": "int", "min": 8, "max": 4}, ["empty range"]),
        ("model.filters", {"type": "choice", "values": []}, ["non-empty"]),
        (
            "training.optimizer.name",
            {"type": "choice", "values": ["adam", "adamm"]},
            ["'adamm'", "'sgd'"],
        ),
        ("training.batch_size", {"type": "int", "min": 0, "max": 64}, ["received 0"]),
        (
            "training.optimizer.learning_rate",
            {"type": "float", "min": 0, "max": 1, "sampling": "log"},
            ["log sampling"],
        ),
        (
            "training.optimizer.nesterov",
            {"type": "boolean", "parent": "training.optimizer.kind", "parent_values": ["sgd"]},
            ["parent", "training.optimizer.kind"],
        ),
        (
            "training.optimizer.beta_1",
            {
                "type": "float",
                "min": 0.8,
                "max": 0.99,
                "parent": "model.dropout",
                "parent_values": [0.1],
            },
            ["parent", "choice or boolean"],
        ),
    ],
)
def test_invalid_space_is_a_one_line_user_error(tmp_path, key, spec, needles):
    space = {"model.dropout": {"type": "float", "min": 0.0, "max": 0.5}, key: spec}
    path = _write(tmp_path, _config(tmp_path, space=space))
    result = kts(["validate", str(path)], cwd=tmp_path, timeout=120)
    assert_user_error(result, f"tuning.space.{key}", *needles)


def test_tune_commands_have_help(tmp_path):
    for command in ("tune-chief", "tune-worker"):
        result = kts([command, "--help"], cwd=tmp_path, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "CONFIG" in result.stdout
        assert "KERASTUNER_" in result.stdout


# ------------------------------------------------------------------ tuners
@pytest.mark.parametrize("tuner", ["random", "grid", "bayesian", "hyperband"])
def test_each_tuner_runs_a_tiny_search(tmp_path, tuner, keras_seed):
    from pipelines import steps
    from service.config import validate
    from tuning.search import run_search

    space = {
        "model.units": {"type": "choice", "values": [[8], [16]]},
        "training.optimizer.learning_rate": {"type": "choice", "values": [0.01, 0.003]},
    }
    data = _config(tmp_path, space=space, tuner=tuner, max_trials=2, epochs=2)
    data["model"] = {"type": "mlp", "units": [8]}
    data["tuning"]["hyperband_factor"] = 2
    data["work_dir"] = str(tmp_path / "runs")
    data["data"]["split"] = {"train": 0.5, "validation": 0.25, "test": 0.25}
    cfg = validate(data)
    dataset = steps.ingest(cfg)
    parts = steps.split(cfg, dataset)
    result = run_search(cfg, dataset, parts.split, build_model=steps.build_model)

    completed = [r for r in result.trials if r["status"] == "COMPLETED"]
    assert completed, result.trials
    if tuner != "hyperband":
        assert len(result.trials) == 2
    seen = {json.dumps(r["values"], sort_keys=True) for r in completed}
    for row in completed:
        assert row["values"]["model.units"] in ([8], [16])
        assert row["values"]["training.optimizer.learning_rate"] in (0.01, 0.003)
    if tuner == "grid":
        assert len(seen) == 2  # grid never repeats a point
    assert result.best_score == max(r["score"] for r in completed)
    assert result.config.model.options["units"] == result.best_values["model.units"]
    assert (Path(result.directory)).is_dir()


# -------------------------------------------------- kts run, killed and resumed
def _trial_files(tmp_path: Path) -> dict[str, dict]:
    found = {}
    for path in tmp_path.glob("runs/tiny_tune/tuning/search-*/trial_*/trial.json"):
        trial = json.loads(path.read_text())
        found[trial["trial_id"]] = trial
    return found


@pytest.mark.slow
def test_search_killed_and_resumed_logs_one_child_run_per_trial(tmp_path):
    from mlflow.tracking import MlflowClient

    path = _write(tmp_path, _config(tmp_path, max_trials=3))
    args = [sys.executable, "-m", "pipelines.cli", "run", str(path), "--output-json", "out.json"]
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=kts_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:

        def one_trial_done() -> bool:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode()[-3000:] if proc.stderr else "")
            return any(t.get("status") == "COMPLETED" for t in _trial_files(tmp_path).values())

        wait_until(one_trial_done, timeout=240, what="the first finished trial")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {k for k, t in _trial_files(tmp_path).items() if t.get("status") == "COMPLETED"}
    assert before

    result = kts(["run", str(path), "--output-json", "out.json"], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Reloading Tuner" in result.stdout  # the search continued, not restarted
    summary = json.loads((tmp_path / "out.json").read_text())
    trials = _trial_files(tmp_path)
    assert len(trials) == 3
    assert all(t["status"] == "COMPLETED" for t in trials.values())

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.get_run(summary["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["kts.export_version"] == "1"
    assert Path(parent.data.tags["kts.export_path"], "saved_model.pb").is_file()
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    runs = client.search_runs([parent.info.experiment_id])
    assert len(runs) == 4, "the resumed attempt continued the same parent run"
    assert sorted(c.data.tags["kts.trial_id"] for c in children) == sorted(trials)
    for child in children:
        trial = trials[child.data.tags["kts.trial_id"]]
        hp = trial["hyperparameters"]["values"]
        params = child.data.params
        assert child.info.status == "FINISHED"
        assert child.data.tags["kts.trial_status"] == "COMPLETED"
        assert child.data.metrics["score"] == pytest.approx(trial["score"])
        assert float(params["model.dropout"]) == pytest.approx(hp["model.dropout"])
        assert json.loads(params["model.filters"]) == json.loads(hp["model.filters"])
        assert params["training.optimizer.name"] == hp["training.optimizer.name"]
        # The conditional key is a param exactly when its parent chose sgd.
        assert ("training.optimizer.momentum" in params) == (hp["training.optimizer.name"] == "sgd")
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [0]

    best_id = parent.data.tags["kts.tuning.best_trial"]
    best = trials[best_id]
    assert best["score"] == max(t["score"] for t in trials.values())
    assert (
        parent.data.params["best.training.optimizer.name"]
        == (best["hyperparameters"]["values"]["training.optimizer.name"])
    )
    table = client.download_artifacts(parent.info.run_id, "tuning/trials.csv", str(tmp_path))
    lines = Path(table).read_text().strip().splitlines()
    assert lines[0].startswith("trial_id,status,score")
    assert len(lines) == 1 + 3


# -------------------------------------------------------------- distributed
@pytest.mark.slow
def test_chief_and_two_workers_share_one_search(tmp_path):
    from mlflow.tracking import MlflowClient

    from tests.helpers import free_port

    # Six trials so that a worker slow to import TensorFlow still gets some.
    space = {"model.dropout": {"type": "choice", "values": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]}}
    path = _write(tmp_path, _config(tmp_path, space=space, max_trials=6))
    oracle = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(free_port())}
    env = {**oracle, "KTS_TUNING_PARENT_WAIT_S": "120"}
    procs = {}

    def start(role: str, tuner_id: str) -> None:
        procs[tuner_id] = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", f"tune-{role}", str(path)],
            cwd=tmp_path,
            env=kts_env({**env, "KERASTUNER_TUNER_ID": tuner_id}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # The chief first: three processes creating one SQLite store at once would race.
    start("chief", "chief")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")

    def parent_open() -> bool:
        assert procs["chief"].poll() is None, procs["chief"].communicate()[1][-3000:]
        exp = (tmp_path / "mlflow.db").exists() and client.get_experiment_by_name("tiny_tune")
        return bool(exp) and bool(client.search_runs([exp.experiment_id]))

    wait_until(parent_open, timeout=120, what="the chief's parent run", interval=1)
    start("worker", "tuner-0")
    start("worker", "tuner-1")
    outputs = {}
    try:
        for tuner_id, proc in procs.items():
            outputs[tuner_id] = proc.communicate(timeout=300)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for tuner_id, proc in procs.items():
        assert proc.returncode == 0, (tuner_id, outputs[tuner_id][1][-3000:])
    assert "6/6 trials completed" in outputs["chief"][0], outputs["chief"]
    for worker in ("tuner-0", "tuner-1"):
        assert "is done" in outputs[worker][0]
        assert "not tracked" not in outputs[worker][1]

    exp = client.get_experiment_by_name("tiny_tune")
    (parent,) = client.search_runs(
        [exp.experiment_id], filter_string="tags.`kts.tuning.role` = 'chief'"
    )
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 6
    assert len({c.data.tags["kts.trial_id"] for c in children}) == 6
    ran = sorted(c.data.tags["kts.tuner_id"] for c in children)
    assert set(ran) == {"tuner-0", "tuner-1"}, (ran, outputs)
    assert all(c.data.tags["kts.trial_status"] == "COMPLETED" for c in children)
    assert "kts.tuning.best_trial" in parent.data.tags


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tmp_path, keras_seed):
    from pipelines import steps
    from service.config import validate
    from service.tracking import Tracker
    from tuning.search import run_search

    # A piecewise schedule without boundaries is a valid choice on its own, but the
    # trial's config is not: that trial fails, is recorded, and the other one runs.
    space = {"training.schedule.type": {"type": "choice", "values": ["constant", "piecewise"]}}
    data = _config(tmp_path, space=space, tuner="grid", max_trials=2, epochs=1)
    data["model"] = {"type": "mlp", "units": [8]}
    data["work_dir"] = str(tmp_path / "runs")
    cfg = validate(data)
    dataset = steps.ingest(cfg)
    parts = steps.split(cfg, dataset)
    tracker = Tracker.start(
        uri=cfg.tracking.uri,
        experiment="failing",
        run_name=None,
        required=True,
        fallback_dir=tmp_path,
    )
    result = run_search(cfg, dataset, parts.split, build_model=steps.build_model, tracker=tracker)
    tracker.end()

    statuses = {r["values"]["training.schedule.type"]: r["status"] for r in result.trials}
    assert statuses == {"constant": "COMPLETED", "piecewise": "FAILED"}
    assert result.best_values == {"training.schedule.type": "constant"}
    children = tracker.client.search_runs(
        [tracker.client.get_run(tracker.run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{tracker.run_id}'",
    )
    by_value = {c.data.params["training.schedule.type"]: c for c in children}
    assert set(by_value) == {"constant", "piecewise"}
    failed = by_value["piecewise"]
    assert failed.info.status == "FAILED"
    assert "piecewise needs boundaries" in failed.data.tags["kts.trial_message"]
    assert "score" not in failed.data.metrics
    assert by_value["constant"].info.status == "FINISHED"
    assert "score" in by_value["constant"].data.metrics
