"""The tracking rule: a failing MLflow call is reported and the run goes on.

Strict mode (``KTS_STRICT``, set for this suite in ``tests/conftest.py``) raises instead;
the real runs here pass ``KTS_STRICT=0``, the production rule: a champion whose run was
deleted for good, or a tracking server that dies mid-run, leaves a trained run that
exports, exits 0 and says what MLflow did not record or give back.
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

from service.strict import strict
from tests.helpers import (
    CONFIGS,
    TINY,
    free_port,
    kts,
    kts_env,
    mlflow_bin,
    start_mlflow_server,
    stop_process_group,
    wait_until,
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"KTS_STRICT": "1"}, True),
        ({"KTS_STRICT": "yes"}, True),
        ({"KTS_STRICT": "0"}, False),
        ({"KTS_STRICT": "off"}, False),
        ({"KTS_STRICT": ""}, False),
        ({}, False),
        ({"KTS_STRICT_TRACKING": "1"}, True),  # the older name, read when KTS_STRICT is unset
        ({"KTS_STRICT": "0", "KTS_STRICT_TRACKING": "1"}, False),
    ],
)
def test_strict_mode_is_the_kts_strict_flag(monkeypatch, env, expected):
    for name in ("KTS_STRICT", "KTS_STRICT_TRACKING", "PYTEST_CURRENT_TEST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert strict() is expected


# ------------------------------------------------------------- the guard itself
def test_a_failing_call_is_reported_once_and_named_in_the_note(monkeypatch, capsys, tmp_path):
    from mlflow.exceptions import MlflowException

    from service.tracking import Tracker

    tracker = Tracker.start(
        uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        experiment="guard",
        run_name=None,
        required=True,
        fallback_dir=tmp_path,
    )
    capsys.readouterr()
    missing = "0" * 32
    with pytest.raises(MlflowException, match=f"Run with id={missing} not found"):
        tracker.guarded("read a deleted run", tracker.client.get_run, missing)  # strict here

    monkeypatch.setenv("KTS_STRICT", "0")
    run, why = tracker.attempt("read a deleted run", tracker.client.get_run, missing)
    assert run is None
    assert f"Run with id={missing} not found" in why
    assert tracker.guarded("read another", tracker.client.get_run, "1" * 32) is None
    tracker.log_metrics({"after": 1.0})  # the store still answers: later calls go through
    tracker.end()

    err = capsys.readouterr().err
    assert err.count("kts: warning:") == 1, err
    assert "MLflow tracking failed (read a deleted run: MlflowException" in err
    assert len(err.strip().splitlines()) == 1, err
    note = tracker.tracking_note()
    assert note is not None
    assert note.startswith("MLflow calls failed, not recorded or read: read a deleted run, ")
    assert "read another" in note
    assert "\n" not in note
    stored = tracker.client.get_run(tracker.run_id)
    assert stored.data.metrics["after"] == 1.0
    assert stored.info.status == "FINISHED"


def test_a_tracking_server_that_does_not_answer_is_lost_and_no_longer_called(
    monkeypatch, capsys, request
):
    import logging

    from service.tracking import Guard

    monkeypatch.setenv("KTS_STRICT", "0")
    mlflow_logs = logging.getLogger("mlflow")
    level = mlflow_logs.level
    # A lost server silences MLflow's own log lines for the rest of the process.
    request.addfinalizer(lambda: mlflow_logs.setLevel(level))
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    guard = Guard(uri)
    calls = []

    def send(what: str) -> None:
        calls.append(what)
        raise ConnectionError(f"{what}: refused\n(second line of the error)")

    assert guard.call("log_batch (metrics)", send, "metrics") == (
        None,
        f"the tracking server {uri} stopped answering (ConnectionError)",
    )
    value, why = guard.call("end the run (FINISHED)", send, "end")
    assert value is None
    assert "stopped answering" in why
    assert calls == ["metrics"]  # the second call was never sent
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"kts: warning: MLflow tracking lost: the tracking server {uri} stopped answering "
        "(ConnectionError) at log_batch (metrics) (ConnectionError: metrics: refused (second "
        "line of the error)); nothing more is sent to it, the run goes on."
    ]
    assert mlflow_logs.level == logging.CRITICAL
    note = guard.note("abc")
    assert note == (
        f"MLflow tracking lost: the tracking server {uri} stopped answering (ConnectionError); "
        "not recorded: log_batch (metrics), end the run (FINISHED); MLflow run abc is "
        "incomplete (and may still show RUNNING)"
    )


# ------------------------------------------------------------- real runs
DEFAULT = str(CONFIGS / "digits_cnn.yaml")
FORGIVING = {"KTS_STRICT": "0"}  # the production rule: report and go on
# The next run is better than a 1-epoch champion, so the gate has something to decide.
BETTER = ["--set", "training.epochs=3"]


def _summary(folder: Path, name: str, result) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return json.loads((folder / name).read_text())


def _answers(export_path: str) -> np.ndarray:
    """The export's class probabilities for a few digits (the SavedModel is called)."""
    import tensorflow as tf

    from service.data.sources import load_digits

    serve = tf.saved_model.load(export_path).signatures["serving_default"]
    return serve(image=tf.constant(load_digits().x[:5]))["probabilities"].numpy()


@pytest.mark.slow
def test_a_champion_whose_run_was_deleted_is_judged_by_its_registered_version(tmp_path):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = _summary(
        tmp_path,
        "first.json",
        kts(["run", DEFAULT, *TINY, "--output-json", "first.json"], cwd=tmp_path),
    )
    assert first["registered_alias"] == "champion"
    client = MlflowClient(tracking_uri=uri)
    client.delete_run(first["run_id"])
    gc = subprocess.run(
        [mlflow_bin(), "gc", "--backend-store-uri", uri, "--run-ids", first["run_id"]],
        cwd=tmp_path,
        env=kts_env({"MLFLOW_TRACKING_URI": uri}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert gc.returncode == 0, gc.stderr[-2000:]
    with pytest.raises(MlflowException, match="not found"):
        client.get_run(first["run_id"])  # gone for good; its registered version stays

    result = kts(
        ["run", DEFAULT, *TINY, *BETTER, "--output-json", "second.json"],
        cwd=tmp_path,
        env=FORGIVING,
    )
    second = _summary(tmp_path, "second.json", result)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("kts: warning:")]
    assert warnings == [
        f"kts: warning: MLflow tracking failed (read champion v1's run: MlflowException: Run "
        f"with id={first['run_id']} not found); the run goes on, further tracking errors are "
        "not shown."
    ]
    # Compared with the champion's recorded test accuracy on the same split's test rows.
    assert second["blessed"], second["bless_reason"]
    assert second["bless_rows_rule"] == "the champion's own test part (same split fingerprint)"
    assert second["bless_scores"]["champion"] == pytest.approx(
        first["metrics"]["test_accuracy"], abs=1e-9
    )
    assert f"champion v1's run {first['run_id']} could not be read" in second["bless_reason"]
    assert (
        "MLflow calls failed, not recorded or read: read champion v1's run" in second["notes"][-1]
    )
    # The run exported, served and registered as usual.
    export = second["export"]
    assert export["version"] == 2
    assert _answers(export["path"]).shape == (5, 10)
    champion = client.get_model_version_by_alias("digits_cnn", "champion")
    assert champion.run_id == second["run_id"]
    run = client.get_run(second["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["kts.blessed"] == "True"
    assert run.data.tags["kts.export_version"] == "2"


def _stopped(pid: int) -> bool:
    """True once process ``pid`` is stopped (SIGSTOP: state T in /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.slow
def test_a_tracking_server_that_dies_mid_run_loses_tracking_not_the_run(tmp_path):
    """The server is killed while the run is frozen after its first epoch was logged
    (failpoint ``train.epoch_logged:stop``); the run then trains, is judged against the
    version served from its export folder (the registry is gone) and exports."""
    from mlflow.tracking import MlflowClient

    from serving.config import model_settings

    root = tmp_path / "server"
    root.mkdir()
    server, uri = start_mlflow_server(root)
    try:
        args = ["run", DEFAULT, *TINY, "--set", f"tracking.uri={uri}"]
        first = _summary(
            tmp_path,
            "first.json",
            kts([*args, "--output-json", "first.json"], cwd=tmp_path),
        )
        assert first["registered_alias"] == "champion"
        assert not first["notes"]

        env = kts_env(
            {
                **FORGIVING,
                "KTS_FAILPOINT": "train.epoch_logged:stop",
                # Each call to a dead server fails at once instead of retrying for minutes.
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            }
        )
        with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", *args, *BETTER],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=err,
            )
        try:
            wait_until(
                lambda: proc.poll() is not None or _stopped(proc.pid),
                timeout=300,
                what="the run to stop after its first epoch",
            )
            assert proc.poll() is None, (tmp_path / "err.txt").read_text()[-3000:]
            stop_process_group(server, signal.SIGKILL)
            os.kill(proc.pid, signal.SIGCONT)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        stop_process_group(server, signal.SIGKILL)

    stdout, stderr = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    warnings = [line for line in stderr.splitlines() if line.startswith("kts: warning:")]
    assert len(warnings) == 1, stderr[-3000:]
    assert warnings[0].startswith(
        f"kts: warning: MLflow tracking lost: the tracking server {uri} stopped answering"
    )
    lost = [line for line in stdout.splitlines() if line.startswith("note:")]
    assert len(lost) == 1, stdout
    assert "MLflow tracking lost" in lost[0]
    assert "end the run (FINISHED)" in lost[0]  # what was not recorded is named
    # Judged against the served version 1 from its SavedModel, then exported and served.
    blessed = next(line for line in stdout.splitlines() if line.startswith("blessed:"))
    assert blessed.startswith("blessed:  yes (test_accuracy "), blessed
    assert "vs served version 1" in blessed
    assert "the registry's champion could not be read" in blessed
    export = Path(first["export"]["path"]).parent / "2"
    assert (export / "saved_model.pb").is_file()
    assert _answers(str(export)).shape == (5, 10)
    labels = model_settings(tmp_path / "serving_models" / "models.config", "digits_cnn").labels
    assert labels["stable"] == 2

    # What the server recorded before it died is intact: the run's start, not its end.
    store = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    (run,) = [
        r
        for r in store.search_runs([store.get_experiment_by_name("digits_cnn").experiment_id])
        if r.info.run_id != first["run_id"]
    ]
    assert run.info.status == "RUNNING"
    assert run.data.params["training.epochs"] == "3"
    assert run.data.tags["kts.start_logged"] == "true"
    assert "test_accuracy" not in run.data.metrics
