"""Faults and gates: a SIGKILLed run resumes into the same MLflow run; the bless gate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import CONFIGS, assert_user_error, kts, kts_env, wait_until

DEFAULT = str(CONFIGS / "digits_cnn.yaml")
# These tests are about training and the gate: the default config's search is off.
SMALL = [
    "--set",
    "model.filters=[8]",
    "--set",
    "model.dense_units=32",
    "--set",
    "tuning.enabled=false",
]


def _client(cwd):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")


@pytest.mark.slow
def test_sigkill_mid_training_resumes_into_the_same_run(tmp_path):
    args = [
        "run",
        DEFAULT,
        *SMALL,
        "--set",
        "training.epochs=10",
        "--set",
        "training.early_stopping.patience=100",
        "--output-json",
        "out.json",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=tmp_path,
        env=kts_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    meta = tmp_path / "runs" / "digits_cnn" / "backup" / "training_metadata.json"

    def backed_up_three_epochs() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"run ended before the kill: {proc.stderr.read()[-2000:]}")
        try:
            return json.loads(meta.read_text()).get("epoch", -1) >= 2
        except (OSError, ValueError):
            return False

    wait_until(backed_up_three_epochs, timeout=300, what="three backed-up epochs", interval=0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    killed_run = json.loads((tmp_path / "runs" / "digits_cnn" / "state.json").read_text())
    assert killed_run["status"] == "running"

    result = kts(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["run_id"] == killed_run["run_id"]
    assert summary["resumed_from_epoch"] >= 2  # continued, not restarted from 0
    assert summary["epochs_run"] == 10

    client = _client(tmp_path)
    experiment = client.get_experiment_by_name("digits_cnn")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [summary["run_id"]]  # no second run
    assert runs[0].info.status == "FINISHED"
    for metric in ("loss", "val_loss", "accuracy"):
        steps = [m.step for m in client.get_metric_history(summary["run_id"], metric)]
        assert sorted(steps) == list(range(10)), (metric, steps)  # no duplicates, no gaps


@pytest.mark.slow
def test_bless_gate_promotes_better_refuses_worse(tmp_path):
    def run(*overrides):
        result = kts(
            ["run", DEFAULT, *SMALL, *overrides, "--output-json", "out.json"], cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads((tmp_path / "out.json").read_text())

    def stable() -> int:
        from serving.config import model_settings

        config = tmp_path / "serving_models" / "models.config"
        return model_settings(config, "digits_cnn").labels["stable"]

    def versions() -> list[int]:
        return sorted(int(p.name) for p in (tmp_path / "serving_models" / "digits_cnn").iterdir())

    first = run("--set", "training.epochs=2")
    assert first["blessed"]
    assert first["bless_reason"] == "no champion yet"
    assert versions() == [1]

    worse = run("--set", "training.epochs=1", "--set", "training.optimizer.learning_rate=0.00001")
    assert not worse["blessed"]
    assert "not better" in worse["bless_reason"]
    assert worse["export"] is None
    # Kept in the registry as the challenger (not served): its own SavedModel copy.
    assert (worse["registered_version"], worse["registered_alias"]) == ("2", "challenger")
    assert versions() == [1]  # no new serving version
    assert stable() == 1
    client = _client(tmp_path)
    challenger = client.get_model_version_by_alias("digits_cnn", "challenger")
    assert challenger.run_id == worse["run_id"]
    assert "kts.serving_version" not in challenger.tags
    assert challenger.tags["kts.blessed"] == "False"
    assert str(client.get_model_version_by_alias("digits_cnn", "champion").version) == "1"

    better = run("--set", "training.epochs=8")
    assert better["blessed"], better["bless_reason"]
    assert better["metrics"]["test_accuracy"] > first["metrics"]["test_accuracy"]
    assert versions() == [1, 2]
    assert stable() == 2  # the register step moved the serving label

    champion = client.get_model_version_by_alias("digits_cnn", "champion")
    assert champion.run_id == better["run_id"]
    assert str(champion.version) == better["registered_version"] == "3"
    assert champion.tags["kts.serving_version"] == "2"
    assert "challenger" not in client.get_registered_model("digits_cnn").aliases
    refused = client.get_run(worse["run_id"])
    assert refused.data.tags["kts.blessed"] == "False"
    assert "not better" in refused.data.tags["kts.bless_reason"]


def test_mixed_bfloat16_on_cpu_trains_and_exports_float32(tmp_path):
    import tensorflow as tf

    result = kts(
        [
            "run",
            DEFAULT,
            *SMALL,
            "--set",
            "training.precision=mixed_bfloat16",
            "--set",
            "training.epochs=1",
            "--set",
            "tracking.enabled=false",
            "--output-json",
            "out.json",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["run_id"] is None
    serve = tf.saved_model.load(summary["export"]["path"]).signatures["serving_default"]
    assert serve.structured_outputs["probabilities"].dtype == tf.float32
    out = serve(image=tf.constant(np.zeros((2, 8, 8, 1), "float32")))
    assert out["probabilities"].dtype == tf.float32
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-2)


def test_kts_runs_lists_runs_from_the_store(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("demo")
    done = client.create_run(exp)
    client.log_metric(done.info.run_id, "test_accuracy", 0.9876)
    client.set_tag(done.info.run_id, "kts.blessed", "True")
    client.set_tag(done.info.run_id, "kts.export_version", "3")
    client.set_terminated(done.info.run_id)
    refused = client.create_run(exp)
    client.log_metric(refused.info.run_id, "test_accuracy", 0.5)
    client.set_tag(refused.info.run_id, "kts.blessed", "False")

    result = kts(["runs", "--experiment", "demo"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["run", "experiment", "status", "blessed", "export", "accuracy"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows[done.info.run_id[:12]] == [
        done.info.run_id[:12],
        "demo",
        "FINISHED",
        "yes",
        "3",
        "0.9876",
    ]
    assert rows[refused.info.run_id[:12]][2:4] == ["RUNNING", "no"]
    assert_user_error(kts(["runs", "--experiment", "nope"], cwd=tmp_path), "'nope'", "demo")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(kts(["runs"], cwd=empty), "no MLflow store")
