"""Named fault points: a testing hook that kills a run at one of its step boundaries.

Every multi-step transition of a run (store creation, epoch backups, the trained
model's checkpoint, export, the serving labels, the MLflow model and its registered
version, the bless verdict, tuning trials, the end of the run) is ordered so that a
kill between any two steps, followed by the same command, ends where an
uninterrupted run would have ended. `POINTS` names each boundary; the code calls
`failpoint(name)` there, and ``tests/test_crash_consistency.py`` kills a real
``kts run`` at every one of them (the idea of etcd's gofail and FoundationDB's
buggify).

A no-op unless the environment variable ``KTS_FAILPOINT`` is set to
``<name>[@<n>][:<action>]``: when the process reaches point ``name`` for the ``n``-th
time (default 1) it writes ``kts: failpoint <name>@<n> reached`` on stderr and then
``kill`` (the default) SIGKILLs itself, ``int`` sends itself SIGINT (a Ctrl-C,
which the run unwinds from), or ``stop`` sends itself SIGSTOP: frozen at that step
until a SIGCONT, so a test can change the world there (stop the tracking server) and
let the run go on. Not for production use.

This module imports only `service.errors`, so every package can call it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from service.errors import UserError

ENV = "KTS_FAILPOINT"
ACTIONS = ("kill", "int", "stop")

# Each point: what is done when it is reached, and what is not done yet. In the order
# a run reaches them (the tuning points before the final training of a tuned run).
POINTS: dict[str, str] = {
    "store.migrated": "a new SQLite store's schema is migrated in its temporary file, not yet renamed into place",
    "run.created": "the MLflow run exists; state.json does not name it yet",
    "run.params_logged": "the run's params are logged; its start tags, dataset and fit keys are not",
    "tuning.trial_started": "a trial's child run is created; the trial has not trained",
    "tuning.trial_ended": "a trial's child run is closed; the tuner has not saved the trial as done",
    "tuning.searched": "the search is over and summarised on the parent run; the final model is not trained",
    "train.epoch_logged": "an epoch is journaled and sent to MLflow; its weights are not backed up",
    "train.epoch_saved": "an epoch's weights are backed up; the next epoch has not begun",
    "train.saved": "the trained model is checkpointed; the epoch backup is not removed yet",
    "evaluate.logged": "the test metrics are logged; the bless gate has not decided",
    "bless.recorded": "the gate's verdict is recorded on the run; nothing is exported",
    "export.written": "the export version folder is in place; models.config does not list it",
    "export.labelled": "models.config lists the version (canary); `stable` is not moved yet",
    "export.promoted": "`stable` points at the version; no MLflow model is logged",
    "challenger.exported": "a challenger's SavedModel is written under the run folder; not logged",
    "register.model_logged": "the run's MLflow model is logged; no registered version exists",
    "register.version_created": "the registered version exists; its alias is not set",
    "register.aliased": "the version carries its alias; the run's export tags are not set",
    "run.finishing": "every record of the run is written; the MLflow run is still RUNNING",
    "run.ended": "the MLflow run is FINISHED; state.json still says running",
}

_lock = threading.Lock()
_hits: dict[str, int] = {}


def parse(spec: str) -> tuple[str, int, str]:
    """``<name>[@<n>][:<action>]`` as (name, n, action); `UserError` naming what is wrong."""
    rest, _, action = spec.strip().partition(":")
    name, _, count = rest.partition("@")
    action = action or "kill"
    problem = None
    if name not in POINTS:
        problem = f"unknown point {name!r}; expected one of {', '.join(POINTS)}"
    elif action not in ACTIONS:
        problem = f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}"
    elif count and (not count.isdigit() or int(count) < 1):
        problem = f"the count after '@' is {count!r}; expected a whole number >= 1"
    if problem is not None:
        raise UserError(f"Invalid value for ${ENV}: received {spec!r}; {problem}.")
    return name, int(count or 1), action


def check_env() -> None:
    """Raise `UserError` when ``$KTS_FAILPOINT`` is set but malformed (before any work)."""
    spec = os.environ.get(ENV)
    if spec:
        parse(spec)


def failpoint(name: str) -> None:
    """Mark the step boundary ``name`` (one of `POINTS`); see the module docstring."""
    if name not in POINTS:
        raise KeyError(f"failpoint {name!r} is not listed in service.failpoints.POINTS")
    spec = os.environ.get(ENV)
    if not spec:
        return
    armed, count, action = parse(spec)
    if armed != name:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] != count:
            return
    sys.stderr.write(f"kts: failpoint {name}@{count} reached ({action})\n")
    sys.stderr.flush()
    if action == "int":
        os.kill(os.getpid(), signal.SIGINT)
        return
    if action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)  # returns once a SIGCONT arrives
        return
    os.kill(os.getpid(), signal.SIGKILL)
