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

import numpy as np
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
    data["training"]["epochs"] = 2  # trials run at most training.epochs
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


def test_trials_and_the_best_model_are_built_in_the_runs_strategy(tmp_path, keras_seed):
    import tensorflow as tf

    from pipelines import steps
    from service.config import validate
    from tuning.search import run_search

    space = {"model.units": {"type": "choice", "values": [[8], [16]]}}
    data = _config(tmp_path, space=space, tuner="random", max_trials=1, epochs=1)
    data["model"] = {"type": "mlp", "units": [8]}
    data["training"]["epochs"] = 1
    data["tuning"]["final"] = "best_weights"
    data["work_dir"] = str(tmp_path / "runs")
    cfg = validate(data)
    dataset = steps.ingest(cfg)
    parts = steps.split(cfg, dataset)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    result = run_search(cfg, dataset, parts.split, build_model=steps.build_model, strategy=strategy)

    assert result.best_trial_id is not None, result.trials
    kinds = {type(w.value).__name__ for w in result.best_model.weights}
    assert kinds == {"MirroredVariable"}, kinds
    x = dataset.x[parts.split.test[:4]].astype("float32")
    assert result.best_model.predict(x, verbose=0).shape == (4, result.best_model.output_shape[-1])


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


@pytest.mark.parametrize("left", ["empty id file", "pending only", "id of a deleted run"])
def test_a_trial_restarted_after_a_kill_replaces_its_unfinished_child_run(tmp_path, left):
    """Whatever a kill left in the trial's folder, a restarted trial ends with one child run."""
    from service.tracking import Tracker
    from tuning.tracking import TrialTracker

    parent = Tracker.start(
        uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        experiment="restart",
        run_name=None,
        required=True,
        fallback_dir=tmp_path,
    )
    trials = TrialTracker(parent, "search")
    trial_dir = tmp_path / "trial_00"
    trial_dir.mkdir()
    first = trials.start("00", {"units": 8}, trial_dir)
    assert first is not None
    first.flush()
    known = trial_dir / "kts_child_run"
    assert known.read_text() == first.run_id
    # The states a SIGKILL can leave between creating the run and remembering it.
    if left == "empty id file":
        known.write_text("")
        (trial_dir / "kts_child_pending").write_text("00")
    elif left == "pending only":
        known.unlink()
        (trial_dir / "kts_child_pending").write_text("00")
    else:
        parent.client.delete_run(first.run_id)

    second = trials.start("00", {"units": 16}, trial_dir)
    assert second is not None
    second.flush()
    children = trials.children("00")
    assert [c.info.run_id for c in children] == [second.run_id]
    assert children[0].data.params == {"units": "16"}
    assert known.read_text() == second.run_id
    assert not (trial_dir / "kts_child_pending").exists()
    parent.end()


def test_keras_tuner_state_files_are_never_seen_half_written(tmp_path):
    """A kill (or a reader) mid-save finds the old state file or the new one, never a torn one."""
    import threading

    from keras_tuner.src import utils

    from tuning.compat import atomic_state_files

    keras_tuners_own = utils.save_json
    path = tmp_path / "oracle.json"
    done = threading.Event()
    with atomic_state_files():
        assert utils.save_json is not keras_tuners_own
        utils.save_json(str(path), {"n": -1, "blob": ""})

        def write() -> None:
            for n in range(300):
                utils.save_json(str(path), {"n": n, "blob": "x" * 200_000})
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        seen = set()
        while not done.is_set():
            seen.add(utils.load_json(str(path))["n"])  # raises on a torn file
        writer.join()
    assert utils.save_json is keras_tuners_own  # undone after the block
    assert utils.load_json(str(path))["n"] == 299
    assert len(seen) > 1  # the reader really ran while the writer wrote
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oracle.json"]


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


# ------------------------------------------------- new options: validation
@pytest.mark.parametrize(
    ("tuning", "needles"),
    [
        ({"final": "retrain_all"}, ["`tuning.final`", "'retrain_all'", "best_weights"]),
        ({"kfold": 1}, ["`tuning.kfold`", "received 1", "greater than or equal to 2"]),
        ({"kfold": 3, "tuner": "hyperband"}, ["`tuning.kfold`", "received 3", "hyperband"]),
        (
            {"kfold": 3, "final": "best_weights"},
            ["`tuning.final`", "'best_weights'", "retrain_train_val"],
        ),
        ({"enabled": "sometimes"}, ["`tuning.enabled`", "'sometimes'"]),
        ({"space": {}}, ["`tuning.space`", "received {}", "tuning.enabled: false"]),
    ],
)
def test_invalid_tuning_options_are_one_line_user_errors(tmp_path, tuning, needles):
    data = _config(tmp_path)
    data["tuning"].update(tuning)
    result = kts(["validate", str(_write(tmp_path, data))], cwd=tmp_path, timeout=120)
    assert_user_error(result, *needles)


def test_a_search_refuses_multi_worker_training(tmp_path):
    # Each worker would run its own search; trials spread with tune-chief/tune-worker.
    path = _write(tmp_path, _config(tmp_path))
    result = kts(
        ["validate", str(path), "--set", "training.distribution=multi_worker"],
        cwd=tmp_path,
        timeout=120,
    )
    assert_user_error(
        result, "`training.distribution`", "'multi_worker'", "tune-chief", "tuning.enabled=false"
    )
    switched_off = kts(
        ["validate", str(path), "--set", "training.distribution=multi_worker", "--set",
         "tuning.enabled=false"],
        cwd=tmp_path,
        timeout=120,
    )  # fmt: skip
    assert switched_off.returncode == 0, switched_off.stderr


def test_tuning_can_be_switched_off_from_the_command_line(tmp_path):
    from service.config import load_config

    path = _write(tmp_path, _config(tmp_path))
    assert load_config(path, ["tuning.enabled=false"]).tuning.enabled is False
    # A config without a tuning section accepts the switch too (no space needed).
    plain = _config(tmp_path)
    del plain["tuning"]
    path = _write(tmp_path, plain)
    assert load_config(path, ["tuning.enabled=false"]).tuning.enabled is False


def test_kfold_refuses_time_ordered_data(tmp_path):
    from pipelines import steps
    from service.config import validate
    from service.errors import UserError
    from tuning.search import folds

    data = _config(tmp_path, kfold=3)
    data["data"] = {"source": "breast_cancer", "split": {"ordered": True}}
    data["model"] = {"type": "mlp", "units": [8]}
    data["tuning"]["space"] = {"model.dropout": {"type": "float", "min": 0.0, "max": 0.5}}
    cfg = validate(data)
    dataset = steps.ingest(cfg)
    with pytest.raises(UserError, match=r"`tuning\.kfold`: received 3 for time-ordered data"):
        folds(cfg, dataset, steps.split(cfg, dataset).split)


# ----------------------------------------------- k-fold, Hyperband, picture
def _mlp_search(tmp_path: Path, mlflow_uri: str, experiment: str, **tuning):
    """A tiny tracked search on digits with an MLP: (result, tracker, (cfg, data, parts))."""
    from pipelines import steps
    from service.config import validate
    from service.tracking import Tracker
    from tuning.search import run_search

    space = {
        "model.dropout": {"type": "float", "min": 0.0, "max": 0.5},
        "training.optimizer.learning_rate": {
            "type": "float",
            "min": 0.001,
            "max": 0.03,
            "sampling": "log",
        },
        "model.units": {"type": "choice", "values": [[8], [16]]},
    }
    data = _config(tmp_path, space=space, **tuning)
    data["model"] = {"type": "mlp", "units": [8]}
    data["training"]["epochs"] = tuning.get("epochs", 1)
    data["work_dir"] = str(tmp_path / "runs")
    data["tracking"]["uri"] = mlflow_uri
    cfg = validate(data)
    dataset = steps.ingest(cfg)
    parts = steps.split(cfg, dataset)
    tracker = Tracker.start(
        uri=mlflow_uri, experiment=experiment, run_name=None, required=True, fallback_dir=tmp_path
    )
    result = run_search(cfg, dataset, parts.split, build_model=steps.build_model, tracker=tracker)
    tracker.end()
    return result, tracker, (cfg, dataset, parts)


def _children(tracker) -> list:
    client = tracker.client
    exp_id = client.get_run(tracker.run_id).info.experiment_id
    return client.search_runs(
        [exp_id], filter_string=f"tags.mlflow.parentRunId = '{tracker.run_id}'"
    )


def test_kfold_records_one_score_per_fold(tmp_path, mlflow_server, keras_seed):
    from tuning.search import folds

    result, tracker, (cfg, dataset, parts) = _mlp_search(
        tmp_path, mlflow_server, "kfold", kfold=3, max_trials=1, epochs=1
    )
    children = _children(tracker)
    assert len(children) == 1
    assert {r["status"] for r in result.trials} == {"COMPLETED"}
    for child in children:
        history = tracker.client.get_metric_history(child.info.run_id, "fold_score")
        assert sorted(m.step for m in history) == [0, 1, 2]
        scores = [m.value for m in sorted(history, key=lambda m: m.step)]
        # The trial's score (what the tuner ranks by) is the mean over the folds.
        assert child.data.metrics["score"] == pytest.approx(np.mean(scores), abs=1e-6)
        for fold in range(3):
            epochs = tracker.client.get_metric_history(child.info.run_id, f"fold{fold}_loss")
            assert [m.step for m in epochs] == [0]
    # The search's folds score every train + validation row once and never a test row.
    rows = np.sort(np.concatenate([parts.split.train, parts.split.validation]))
    fold_rows = folds(cfg, dataset, parts.split)
    assert len(fold_rows) == 3
    scored = np.sort(np.concatenate([score for _, score in fold_rows]))
    np.testing.assert_array_equal(scored, rows)
    assert not set(parts.split.test) & set(scored)
    for fit, score in fold_rows:  # stratified: each fold holds every class
        assert set(dataset.y[score]) == set(dataset.y[fit]) == set(range(10))
    assert result.best_epochs == 1


def test_hyperband_marks_trials_it_did_not_promote_as_pruned(tmp_path, mlflow_server, keras_seed):
    from PIL import Image

    # max_epochs 2, factor 2: bracket 1 runs two 1-epoch trials and continues the
    # better one for a second epoch; bracket 0 runs two 2-epoch trials.
    result, tracker, _ = _mlp_search(
        tmp_path, mlflow_server, "hyperband", tuner="hyperband", epochs=2, hyperband_factor=2
    )
    trial_json = {
        p.parent.name.removeprefix("trial_"): json.loads(p.read_text())
        for p in Path(result.directory).glob("search-*/trial_*/trial.json")
    }
    hp = {tid: t["hyperparameters"]["values"] for tid, t in trial_json.items()}
    promoted = {v.get("tuner/trial_id") for v in hp.values()}
    expected_pruned = {
        tid
        for tid, v in hp.items()
        if v["tuner/round"] < v["tuner/bracket"] and tid not in promoted
    }
    assert len(expected_pruned) == 1, hp
    statuses = {
        c.data.tags["kts.trial_id"]: c.data.tags["kts.trial_status"] for c in _children(tracker)
    }
    assert {t for t, s in statuses.items() if s == "PRUNED"} == expected_pruned
    assert set(statuses.values()) == {"PRUNED", "COMPLETED"}
    assert {r["trial_id"] for r in result.trials if r["status"] == "PRUNED"} == expected_pruned
    # The best trial's epoch count includes the round it was continued from.
    best = hp[result.best_trial_id]
    if "tuner/trial_id" in best:
        assert result.best_epochs >= 2

    # The parent run's picture of the score against each hyper-parameter.
    client = tracker.client
    png = client.download_artifacts(tracker.run_id, "tuning/scores.png", str(tmp_path))
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.width >= 600
        assert image.height >= 250
        pixels = np.asarray(image.convert("RGB"), dtype="float64")
    assert pixels.std() > 10  # not a blank canvas
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert red.sum() > 20  # the best trial's star is drawn
    table = client.download_artifacts(tracker.run_id, "tuning/trials.csv", str(tmp_path))
    lines = Path(table).read_text().strip().splitlines()
    assert lines[0].startswith("trial_id,status,score,epochs,")
    assert sum(",PRUNED," in line for line in lines) == 1


def test_search_picture_without_any_scored_trial_still_draws(tmp_path):
    from PIL import Image

    from service.reports.search import score_vs_hyperparameters

    rows = [
        {"trial_id": "00", "status": "FAILED", "score": None, "values": {"model.dropout": 0.1}},
    ]
    path = score_vs_hyperparameters(
        rows, keys=["model.dropout"], objective="val_accuracy", path=tmp_path / "s.png"
    )
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype="float64")
    assert pixels.std() > 5


# ------------------------------------------------ the model after the search
@pytest.mark.parametrize("final", ["retrain_train_val", "best_weights", "retrain"])
def test_the_run_model_after_the_search(tmp_path, final, mlflow_server, keras_seed):
    import tensorflow as tf
    from mlflow.tracking import MlflowClient

    from pipelines import steps
    from pipelines.runner import run
    from service.config import validate

    space = {"model.dropout": {"type": "choice", "values": [0.0, 0.3]}}
    data = _config(tmp_path, space=space, max_trials=2, final=final)
    data["name"] = f"final_{final}"
    data["model"] = {"type": "mlp", "units": [16]}
    data["training"]["epochs"] = 3
    data["work_dir"] = str(tmp_path / "runs")
    data["tracking"]["reports"] = final == "best_weights"  # curves from the trial's history
    data["tracking"]["uri"] = mlflow_server
    cfg = validate(data)
    summary = run(cfg)

    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    parent = client.get_run(summary.run_id)
    tags, metrics = parent.data.tags, parent.data.metrics
    assert tags["kts.tuning.final"] == final
    assert "test_accuracy" in summary.metrics
    loss_steps = [m.step for m in client.get_metric_history(parent.info.run_id, "loss")]
    val_steps = [m.step for m in client.get_metric_history(parent.info.run_id, "val_loss")]
    best = int(tags["kts.tuning.best_epochs"])
    assert 1 <= best <= 3
    serve = tf.saved_model.load(summary.export["path"]).signatures["serving_default"]
    dataset = steps.ingest(cfg)
    split = steps.split(cfg, dataset).split

    def accuracy(rows) -> float:
        out = serve(image=tf.constant(dataset.x[rows]))["class_ids"].numpy()
        return float((out == dataset.y[rows]).mean())

    assert accuracy(split.test) == pytest.approx(summary.metrics["test_accuracy"], abs=1e-9)
    if final == "retrain_train_val":
        # Fitted on train + validation for as many epochs as the best trial needed to
        # reach its lowest val_loss: no validation curve, no early stopping.
        assert tags["kts.tuning.final_rows"] == "train+validation"
        best_child = next(
            c
            for c in _children_of(client, parent)
            if c.data.tags["kts.trial_id"] == tags["kts.tuning.best_trial"]
        )
        trial_val_loss = sorted(
            client.get_metric_history(best_child.info.run_id, "val_loss"), key=lambda m: m.step
        )
        losses = [m.value for m in trial_val_loss]
        epochs = losses.index(min(losses)) + 1
        assert int(tags["kts.tuning.final_epochs"]) == epochs == summary.epochs_run
        assert "best val_loss epoch" in tags["kts.tuning.final_epochs_from"]
        assert sorted(loss_steps) == list(range(epochs))
        assert val_steps == []
    elif final == "best_weights":
        # No fitting: the exported model is the best trial's checkpoint, so it scores
        # the trial's best validation accuracy again, and the curves are the trial's.
        assert accuracy(split.validation) == pytest.approx(
            float(tags["kts.tuning.best_score"]), abs=1e-6
        )
        child = client.get_run(
            next(
                c.info.run_id
                for c in _children_of(client, parent)
                if c.data.tags["kts.trial_id"] == tags["kts.tuning.best_trial"]
            )
        )
        assert metrics["val_loss"] == pytest.approx(child.data.metrics["val_loss"])
        assert sorted(val_steps) == list(range(3))
        assert (cfg.run_dir / "reports" / "learning_curves.png").is_file()
    else:
        assert tags["kts.tuning.final_rows"] == "train"
        assert sorted(val_steps) == sorted(loss_steps) == list(range(summary.epochs_run))
    assert "tuning/final_config.yaml" in {
        a.path for a in client.list_artifacts(parent.info.run_id, "tuning")
    }


def _children_of(client, parent) -> list:
    return client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )


# ------------------------------------------------------------------ memory
def _rss_mib() -> float:
    """This process's resident set size (``VmRSS`` of /proc/self/status), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.slow
def test_many_trials_in_one_process_do_not_grow_memory(tmp_path, mlflow_server, keras_seed):
    """25 one-epoch MLP trials, tracked, in this process: RSS stays flat after warm-up.

    Every trial traces new train/test functions; TensorFlow keeps each trace (and
    the model) alive in its gradient registry unless the tuner releases it, which
    grew this search by ~5 MiB per trial.
    """
    import gc

    from pipelines import steps
    from service.config import validate
    from service.tracking import Tracker
    from tuning.search import make_hypermodel, make_tuner, search_id
    from tuning.tracking import TrialTracker

    trials = 25
    data = _config(tmp_path, max_trials=trials, epochs=1)
    data["name"] = "memory"
    data["data"] = {"source": "breast_cancer"}
    data["model"] = {"type": "mlp", "units": [8]}
    data["work_dir"] = str(tmp_path / "runs")
    data["tuning"]["space"] = {
        "model.dropout": {"type": "float", "min": 0.0, "max": 0.5},
        "model.units": {"type": "choice", "values": [[8], [16], [8, 8]]},
        "training.optimizer.learning_rate": {
            "type": "float",
            "min": 1e-4,
            "max": 0.1,
            "sampling": "log",
        },
    }
    cfg = validate(data)
    dataset = steps.ingest(cfg)
    parts = steps.split(cfg, dataset)
    parent = Tracker.start(
        uri=mlflow_server, experiment="memory", run_name=None, required=True, fallback_dir=tmp_path
    )
    hypermodel = make_hypermodel(cfg, dataset, parts.split, steps.build_model)
    tuner = make_tuner(cfg, hypermodel, TrialTracker(parent, search_id(cfg)))
    rss: list[float] = []
    end_trial = tuner.on_trial_end

    def measured(trial) -> None:  # the tuner's own end of trial, then a reading
        end_trial(trial)
        gc.collect()
        rss.append(_rss_mib())

    tuner.on_trial_end = measured
    tuner.search(epochs=1, verbose=0)
    parent.end()

    assert len(rss) == trials
    assert all(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
    # Trials 1-5 warm up TensorFlow's caches; from then on nothing may accumulate.
    growth = max(rss[5:]) - rss[4]
    assert growth < 32, [round(v) for v in rss]
