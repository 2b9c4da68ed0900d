"""One run per config at a time: the run folder's lock, its stale-lock recovery, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from pipelines.lock import RunLock, lock_path
from service.errors import UserError
from tests.helpers import (
    CONFIGS,
    TINY,
    assert_user_error,
    heavy_imports,
    kts,
    kts_env,
    kts_probe,
    python_c,
    wait_until,
)

DEFAULT = str(CONFIGS / "digits_cnn.yaml")


def _client(cwd):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")


@pytest.mark.slow
def test_second_run_of_a_config_exits_2_naming_the_first_and_sigterm_ends_it_killed(tmp_path):
    # A first run that trains for long (no early stopping); the second one comes in
    # while it trains.
    args = [
        "run",
        DEFAULT,
        *TINY,
        "--set",
        "training.epochs=500",
        "--set",
        "training.early_stopping.enabled=false",
    ]
    first = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=tmp_path,
        env=kts_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    state = tmp_path / "runs" / "digits_cnn" / "state.json"

    def training() -> bool:
        if first.poll() is not None:
            raise AssertionError(f"the first run ended: {first.stderr.read()[-2000:]}")
        try:
            return json.loads(state.read_text())["status"] == "running"
        except (OSError, ValueError, KeyError):
            return False

    try:
        wait_until(training, timeout=300, what="the first run to train", interval=0.1)
        second = kts_probe(args, cwd=tmp_path, timeout=120)
        err = assert_user_error(
            second,
            "run.lock",
            "'digits_cnn' is already running",
            f"pid {first.pid} on host {socket.gethostname()} since ",
        )
        assert "expected one `kts run` of a config at a time" in err
        assert heavy_imports(second) == ""  # refused at once, before TensorFlow
        assert first.poll() is None  # the first run goes on, untouched

        # SIGTERM (a pod stopped, `kill PID`) unwinds the first run: its MLflow run
        # ends KILLED, not RUNNING, and the lock is given back.
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 143, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == "kts: terminated (SIGTERM)"
    run_id = json.loads(state.read_text())["run_id"]
    assert _client(tmp_path).get_run(run_id).info.status == "KILLED"
    assert not lock_path(tmp_path / "runs" / "digits_cnn").exists()


@pytest.mark.slow
def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(gone.stdout)
    lock = lock_path(tmp_path / "runs" / "digits_cnn")
    lock.parent.mkdir(parents=True)
    lock.write_text(
        json.dumps(
            {"pid": dead_pid, "host": socket.gethostname(), "since": "2020-01-01T00:00:00+00:00"}
        )
    )
    result = kts(
        ["run", DEFAULT, *TINY, "--set", "tracking.enabled=false", "--set", "export.enabled=false"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        f"taking over the stale lock {lock.relative_to(tmp_path)} of pid {dead_pid}"
        in result.stderr
    )
    assert not lock.exists()  # released at the end


_HOLD = """
from pathlib import Path
from pipelines.lock import RunLock
from service.errors import UserError
try:
    RunLock(Path({run_dir!r}), pipeline="p", task={task!r}).acquire()
except UserError as err:
    print("REFUSED", err)
else:
    print("TAKEN")
"""


def test_multi_worker_tasks_lock_separately_but_each_task_once(tmp_path):
    """Chief and workers may share one run folder: they take different locks, and a
    second copy of a task (another process) is refused naming the first."""
    run_dir = tmp_path / "runs" / "p"
    with RunLock(run_dir, pipeline="p"), RunLock(run_dir, pipeline="p", task="worker/1"):
        assert lock_path(run_dir).is_file()
        assert lock_path(run_dir, "worker/1").name == "run-worker-1.lock"
        holder = json.loads(lock_path(run_dir, "worker/1").read_text())
        assert (holder["pid"], holder["task"]) == (os.getpid(), "worker/1")
        for task in (None, "worker/1"):
            out = python_c(_HOLD.format(run_dir=str(run_dir), task=task), check=True).stdout
            assert out.startswith("REFUSED"), out
            assert f"pid {os.getpid()} on host {socket.gethostname()}" in out
        assert python_c(_HOLD.format(run_dir=str(run_dir), task="worker/2")).stdout == "TAKEN\n"
        with pytest.raises(UserError, match=r"run.lock: pipeline 'p' is already running \(pid"):
            RunLock(run_dir, pipeline="p").acquire()  # also within one process
    assert not lock_path(run_dir).exists()
    assert python_c(_HOLD.format(run_dir=str(run_dir), task=None)).stdout == "TAKEN\n"


_SWALLOWED = """
import os, signal, time, weakref
from pipelines.runner import _sigterm_unwinds
from service.errors import Terminated

class Thing:
    pass

def callback(ref):
    os.kill(os.getpid(), signal.{signame})
    for _ in range(1_000_000):  # the handler runs in here, inside a GC callback
        pass

start = time.monotonic()
try:
    with _sigterm_unwinds():
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing
        print("SWALLOWED", flush=True)
        while time.monotonic() - start < 60:
            time.sleep(0.01)
except {error}:
    print(f"TERMINATED after {{time.monotonic() - start:.1f}}s")
"""


@pytest.mark.parametrize(
    ("signame", "error"), [("SIGTERM", "Terminated"), ("SIGINT", "KeyboardInterrupt")]
)
def test_a_stop_signal_dropped_inside_a_gc_callback_is_sent_again(signame, error):
    """Python drops an exception raised while it runs a GC callback ("Exception ignored
    in ..."): the first SIGTERM or Ctrl-C can vanish that way, so it is sent again until
    seen."""
    result = python_c(_SWALLOWED.format(signame=signame, error=error), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Exception ignored" in result.stderr  # the first one was dropped
    assert result.stdout.startswith("SWALLOWED\nTERMINATED after "), result.stdout
    assert float(result.stdout.split()[-1].rstrip("s")) < 30
