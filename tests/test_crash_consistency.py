"""Crash consistency: `kts run` killed at every step boundary converges on the same command.

Each named fault point of `service.failpoints` is armed in a real `kts run` process
(``KTS_FAILPOINT``), which must die exactly there: SIGKILL, or SIGINT (Ctrl-C) at an
epoch end. The kills of one mode form a chain in one folder: the same command is run
again armed at the next point (so every restarted attempt also goes through the
steps before that point a second time, and an attempt is killed many times, as the
issue's repeated kills were), and finally unarmed, which must exit 0. Then the MLflow
store (runs, metrics and their steps, params, tags, artifacts, logged models,
registered versions and aliases), the export folder, ``models.config`` labels and the
run folder are compared with an uninterrupted run of the same command in a fresh
folder.

Two modes cover every point: an untuned run in a new store (store creation, the
champion path: export, serving labels, `champion`) and a tuned run (two trials of a
random search) in a store that already has a champion it cannot beat (the challenger
path). The first store's creation is also killed by timing in
``tests/test_store_creation.py``; here it is killed at its named point.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.failpoints import POINTS
from tests.helpers import kts

pytestmark = pytest.mark.slow

BASE_CONFIG: dict[str, Any] = {
    "seed": 7,
    "data": {
        "source": "digits",
        "split": {"train": 0.7, "validation": 0.15, "test": 0.15, "stratify": True},
    },
    "model": {"type": "simple_cnn", "filters": [4], "dense_units": 8, "dropout": 0.1},
    "training": {
        "epochs": 2,
        "batch_size": 64,
        "optimizer": {"name": "adam", "learning_rate": 0.005},
        "early_stopping": {"enabled": False},
    },
    "tracking": {"reports": False, "system_metrics": False},
    "export": {"base_path": "serving_models"},
}
TUNING: dict[str, Any] = {
    "tuner": "random",
    "max_trials": 2,
    "objective": {"metric": "val_accuracy", "direction": "max"},
    "final": "retrain",
    "space": {
        "model.dropout": {"type": "choice", "values": [0.0, 0.3]},
        "training.optimizer.learning_rate": {"type": "choice", "values": [0.002, 0.005]},
    },
}

# (point[@n][:action]) in the order one attempt reaches them; each kill's restart is
# armed at the next one. `:int` is a SIGINT (the run unwinds: exit 130).
UNTUNED_CHAIN = [
    "store.migrated",
    "run.created",
    "run.params_logged",
    "train.epoch_logged@1:int",  # Ctrl-C as epoch 0 ends, before its backup
    "train.epoch_saved@1",  # epoch 0 backed up
    "train.epoch_logged@1",  # epoch 1 logged (resumed from epoch 0's backup), not backed up
    "train.saved",
    "evaluate.logged",
    "bless.recorded",
    "export.written",
    "export.labelled",
    "export.promoted",
    "register.model_logged",
    "register.version_created",
    "register.aliased",
    "run.finishing",
    "run.ended",
]
TUNED_CHAIN = [
    "run.created",
    "tuning.trial_started@1",
    "tuning.trial_ended@1",
    "tuning.trial_started@2",  # trial 0 again (its end was not saved), then trial 1
    "tuning.searched",
    "train.epoch_logged@2:int",  # Ctrl-C in the final training's second epoch
    "train.saved",
    "bless.recorded",
    "challenger.exported",
    "register.model_logged",
    "register.version_created",
    "register.aliased",
    "run.ended",
]


def _write_config(folder: Path, *, tuned: bool) -> Path:
    cfg = json.loads(json.dumps(BASE_CONFIG))
    cfg["name"] = "crash_tuned" if tuned else "crash"
    if tuned:
        cfg["tuning"] = TUNING
        # A candidate cannot beat the champion by this much: the challenger path.
        cfg["bless"] = {"min_improvement": 0.99}
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _run(folder: Path, config: Path, *extra: str, failpoint: str | None = None):
    env = {"KTS_FAILPOINT": failpoint} if failpoint else {}
    return kts(["run", str(config), *extra, "--output-json", "out.json"], cwd=folder, env=env)


def _ok(result) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def _died_at(result, spec: str) -> None:
    """The process stopped at the armed point: SIGKILL (-9), or Ctrl-C (exit 130)."""
    point, _, action = spec.partition(":")
    name, _, count = point.partition("@")
    reached = f"kts: failpoint {name}@{count or 1} reached"
    assert reached in result.stderr, (spec, result.returncode, result.stderr[-3000:])
    expected = 130 if action == "int" else -9
    assert result.returncode == expected, (spec, result.returncode, result.stderr[-3000:])


# ---------------------------------------------------------------- what a folder holds
def _snapshot(folder: Path, name: str) -> dict[str, Any]:
    """Everything a run leaves, without ids, times or values that differ between runs."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    every = client.search_runs(
        [experiment.experiment_id], run_view_type=ViewType.ALL, order_by=["start_time ASC"]
    )
    left_running = [r.info.run_id for r in every if r.info.status == "RUNNING"]
    assert not left_running, f"runs left RUNNING (deleted ones included): {left_running}"
    runs = [r for r in every if r.info.lifecycle_stage == "active"]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    role = {r.info.run_id: f"run{i}" for i, r in enumerate(parents)}
    for r in runs:
        if r.info.run_id not in role:
            role[r.info.run_id] = f"{role[r.data.tags['mlflow.parentRunId']]}/trial-"
            role[r.info.run_id] += r.data.tags["kts.trial_id"]

    def artifacts(run_id: str, path: str | None = None) -> list[str]:
        out = []
        for item in client.list_artifacts(run_id, path):
            out += artifacts(run_id, item.path) if item.is_dir else [item.path]
        return sorted(out)

    recorded: dict[str, Any] = {}
    for r in runs:
        steps = {}
        for key in r.data.metrics:
            if key.startswith("system/"):
                continue
            logged = [m.step for m in client.get_metric_history(r.info.run_id, key)]
            assert len(logged) == len(set(logged)), f"{role[r.info.run_id]}: {key} {logged}"
            steps[key] = sorted(logged)
        logged_models = client.search_logged_models(
            [experiment.experiment_id], filter_string=f"source_run_id = '{r.info.run_id}'"
        )
        tags = r.data.tags
        recorded[role[r.info.run_id]] = {
            "status": r.info.status,
            "metric steps": steps,
            "params": sorted(r.data.params),
            "tags": sorted(k for k in tags if k != "mlflow.log-model.history"),
            "blessed": tags.get("kts.blessed"),
            "export version": tags.get("kts.export_version"),
            "artifacts": artifacts(r.info.run_id),
            "logged models": sorted(str(m.status) for m in logged_models),
        }
    versions = client.search_model_versions(f"name = '{name}'")
    by_number = {str(v.version): role.get(v.run_id, v.run_id) for v in versions}
    aliases = client.get_registered_model(name).aliases if versions else {}
    registry = {
        "versions": sorted((int(n), who) for n, who in by_number.items()),
        "aliases": {alias: by_number[str(v)] for alias, v in sorted(aliases.items())},
    }

    def files(root: Path) -> list[str]:
        return sorted(
            str(p.relative_to(folder)) for p in root.rglob("*") if p.is_file() or p.is_symlink()
        )

    exports = folder / "serving_models"
    labels = None
    if (exports / "models.config").is_file():
        from serving.config import model_settings

        labels = dict(model_settings(exports / "models.config", name).labels)
    state = json.loads((folder / "runs" / name / "state.json").read_text())
    return {
        "runs": recorded,
        "registry": registry,
        "labels": labels,
        "state": state["status"],
        "export files": files(exports) if exports.is_dir() else [],
        "run folder files": files(folder / "runs" / name),
    }


def _assert_converged(chain_dir: Path, reference_dir: Path, name: str) -> None:
    got, want = _snapshot(chain_dir, name), _snapshot(reference_dir, name)
    assert sorted(got["runs"]) == sorted(want["runs"])
    for role, record in want["runs"].items():  # field by field: a readable difference
        for field, value in record.items():
            assert got["runs"][role][field] == value, (role, field)
    for part in want:
        assert got[part] == want[part], part
    leftovers = [p for p in chain_dir.rglob("*") if p.name.startswith((".tmp-", ".export-"))]
    assert not leftovers, leftovers


def _chain(folder: Path, config: Path, chain: list[str]) -> None:
    for spec in chain:
        _died_at(_run(folder, config, failpoint=spec), spec)
    _ok(_run(folder, config))


# ------------------------------------------------------------------- the reference runs
@pytest.fixture(scope="module")
def untuned_reference(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("untuned-reference")
    _ok(_run(folder, _write_config(folder, tuned=False)))
    return folder


@pytest.fixture(scope="module")
def tuned_base(tmp_path_factory) -> Path:
    """A store holding a champion of the tuned pipeline's model (registered, exported)."""
    folder = tmp_path_factory.mktemp("tuned-base")
    config = _write_config(folder, tuned=True)
    _ok(_run(folder, config, "--set", "tuning.enabled=false"))
    return folder


def _copy_base(base: Path, folder: Path) -> Path:
    for item in ("mlflow.db", "serving_models", "runs"):
        source = base / item
        if source.is_dir():
            shutil.copytree(source, folder / item)
        else:
            shutil.copy2(source, folder / item)
    return _write_config(folder, tuned=True)


@pytest.fixture(scope="module")
def tuned_reference(tmp_path_factory, tuned_base) -> Path:
    folder = tmp_path_factory.mktemp("tuned-reference")
    _ok(_run(folder, _copy_base(tuned_base, folder)))
    return folder


# ----------------------------------------------------------------------------- tests
def test_every_fault_point_is_armed_by_a_chain():
    armed = {spec.partition(":")[0].partition("@")[0] for spec in UNTUNED_CHAIN + TUNED_CHAIN}
    assert armed == set(POINTS)
    assert any(s.endswith(":int") for s in UNTUNED_CHAIN)  # Ctrl-C at an epoch end
    assert any(s.endswith(":int") for s in TUNED_CHAIN)


def test_untuned_run_killed_at_every_step_converges(tmp_path, untuned_reference):
    config = _write_config(tmp_path, tuned=False)
    _chain(tmp_path, config, UNTUNED_CHAIN)
    _assert_converged(tmp_path, untuned_reference, "crash")
    want = _snapshot(untuned_reference, "crash")
    assert want["registry"] == {"versions": [(1, "run0")], "aliases": {"champion": "run0"}}
    assert want["labels"] == {"stable": 1, "canary": 1}
    assert want["runs"]["run0"]["status"] == "FINISHED"
    assert want["runs"]["run0"]["metric steps"]["loss"] == [0, 1]


def test_tuned_run_killed_at_every_step_converges(tmp_path, tuned_base, tuned_reference):
    config = _copy_base(tuned_base, tmp_path)
    _chain(tmp_path, config, TUNED_CHAIN)
    _assert_converged(tmp_path, tuned_reference, "crash_tuned")
    want = _snapshot(tuned_reference, "crash_tuned")
    assert want["registry"] == {
        "versions": [(1, "run0"), (2, "run1")],
        "aliases": {"champion": "run0", "challenger": "run1"},
    }
    assert sorted(want["runs"]) == ["run0", "run1", "run1/trial-0", "run1/trial-1"]
    assert want["runs"]["run1"]["blessed"] == "False"


def test_a_malformed_failpoint_is_a_one_line_user_error(tmp_path):
    from tests.helpers import assert_user_error

    config = _write_config(tmp_path, tuned=False)
    result = _run(tmp_path, config, failpoint="train.nope@2")
    assert_user_error(result, "KTS_FAILPOINT", "'train.nope@2'", "train.saved")
    assert not (tmp_path / "runs").exists()
