"""Keras-Tuner trials as MLflow child runs of the pipeline's run.

Each trial gets one nested run (tag ``mlflow.parentRunId``) named ``trial-<id>``
holding its hyper-parameters as params, per-epoch metrics, its final ``score`` and
a ``kts.trial_status`` tag (Keras-Tuner's status: ``COMPLETED``, ``FAILED``, ...;
``PRUNED`` for a Hyperband trial no later round continued, set after the search).
k-fold trials also hold ``fold_score`` (step = fold index) and ``fold<i>_<metric>``
per epoch. A trial interrupted by a kill is run again by the resumed search; its
unfinished child run is deleted first, so every trial ends with exactly one child
run. The parent gets the best trial as tags and params, a ``tuning/trials.csv``
table and ``tuning/scores.png`` (the objective against each hyper-parameter).
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.atomic import write_atomic
from service.failpoints import failpoint
from service.tracking import Tracker

TRIAL_TAG = "kts.trial_id"
SEARCH_TAG = "kts.tuning.search"
STATUS_TAG = "kts.trial_status"


class TrialTracker:
    """Opens and closes the child runs of one search under ``parent``."""

    def __init__(self, parent: Tracker, search_id: str):
        self.parent = parent
        self.search_id = search_id
        self._experiment_id: str | None = None

    def _exp_id(self) -> str | None:
        """The parent run's experiment (None while the store cannot tell: not tracked)."""
        if self._experiment_id is None:
            run = self.parent.guarded(
                "read the parent run", self.parent.client.get_run, self.parent.run_id
            )
            self._experiment_id = run.info.experiment_id if run is not None else None
        return self._experiment_id

    def children(self, trial_id: str | None = None) -> list[Any]:
        """The active child runs of the parent (one per trial started), or of one trial."""
        where = f"tags.mlflow.parentRunId = '{self.parent.run_id}'"
        if trial_id is not None:
            where += f" and tags.`{TRIAL_TAG}` = '{trial_id}'"
        experiment_id = self._exp_id()
        if experiment_id is None:
            return []
        found = self.parent.guarded(
            "search the trials' runs",
            self.parent.client.search_runs,
            [experiment_id],
            filter_string=where,
            max_results=5000,
        )
        return list(found or [])

    def start(
        self, trial_id: str, params: Mapping[str, Any], trial_dir: Path | None = None
    ) -> Tracker | None:
        """A tracker on a fresh child run for ``trial_id`` (an unfinished one is replaced).

        ``trial_dir`` (the tuner's folder of the trial) remembers the child run's id,
        so a trial run again after a kill replaces its unfinished run without
        searching the parent's children (one request fewer per trial); without it,
        or if a kill came between creating the run and remembering it, they are
        searched. The params are sent in the background (awaited when the trial
        ends). None when the child run could not be created (tracking never stops a
        search).
        """
        client = self.parent.client
        known = trial_dir / "kts_child_run" if trial_dir is not None else None
        pending = trial_dir / "kts_child_pending" if trial_dir is not None else None
        known_id = known.read_text().strip() if known is not None and known.is_file() else ""
        if known_id:
            self._replace(known_id)
        elif pending is None or pending.is_file():
            for run in self.children(trial_id):
                self._replace(run.info.run_id)
        if pending is not None:
            write_atomic(pending, trial_id)
        experiment_id = self._exp_id()
        if experiment_id is None:
            return None
        created = self.parent.guarded(
            f"create trial {trial_id}'s run",
            client.create_run,
            experiment_id,
            run_name=f"trial-{trial_id}",
            tags={
                "mlflow.parentRunId": self.parent.run_id,
                TRIAL_TAG: trial_id,
                SEARCH_TAG: self.search_id,
                "kts.tuner_id": os.environ.get("KERASTUNER_TUNER_ID", "tuner0"),
                STATUS_TAG: "RUNNING",
            },
        )
        if created is None:
            return None
        if known is not None and pending is not None:
            # Atomic: a kill mid-write must not leave an empty id that hides the run.
            write_atomic(known, created.info.run_id)
            pending.unlink(missing_ok=True)
        child = Tracker(
            client,
            created.info.run_id,
            self.parent.experiment,
            self.parent.uri,
            "",
            guard=self.parent.guard,  # one tracking rule, one report, for the whole run
        )
        child.log_params(params, background=True)  # awaited by end() (Tracker.flush)
        failpoint("tuning.trial_started")
        return child

    def _replace(self, run_id: str) -> None:
        """Retire the child run of a trial killed part way (it is run again): ended as
        KILLED, so that no run is left RUNNING even among deleted ones, then deleted."""
        from mlflow.exceptions import MlflowException

        client = self.parent.client

        def retire() -> None:
            try:
                client.set_terminated(run_id, "KILLED")
            except MlflowException:
                pass  # already gone (deleted for good, or another store)
            client.delete_run(run_id)

        self.parent.guarded("delete an unfinished trial's run", retire)

    def set_status(self, statuses: Mapping[str, str]) -> None:
        """Set ``kts.trial_status`` of finished trials' child runs (trial id -> status)."""
        for run in self.children():
            status = statuses.get(run.data.tags.get(TRIAL_TAG, ""))
            if status is not None:
                self.parent.guarded(
                    "set trial statuses",
                    self.parent.client.set_tag,
                    run.info.run_id,
                    STATUS_TAG,
                    status,
                )

    @staticmethod
    def end(child: Tracker, *, status: str, score: float | None, message: str = "") -> None:
        """Record a trial's outcome; KT's COMPLETED is FINISHED in MLflow, others FAILED.

        Tags and score go in one background request while the run is closed, and both
        are done when this returns (a trial's tracking is part of the search's
        overhead, see bench/tuning_overhead.py).
        """
        from mlflow.entities import Metric, RunTag

        tags = [RunTag(STATUS_TAG, status)]
        if message:
            tags.append(RunTag("kts.trial_message", message[-4000:]))
        now = int(time.time() * 1000)
        metrics = [Metric("score", float(score), now, 0)] if score is not None else []
        child.log_batch(metrics=metrics, tags=tags, background=True)
        outcome = "FINISHED" if status == "COMPLETED" else "FAILED"
        child.guarded("end a trial's run", child.client.set_terminated, child.run_id, outcome)
        child.flush()  # the params, the epochs' metrics, these tags and score
        failpoint("tuning.trial_ended")


def log_summary(
    parent: Tracker,
    *,
    rows: list[dict[str, Any]],
    best: dict[str, Any] | None,
    objective: str,
    picture: Path | None = None,
) -> None:
    """Best trial tags/params, the trials table (CSV) and ``picture`` on the parent run."""
    if best is not None:
        parent.set_tags(
            {
                "kts.tuning.best_trial": best["trial_id"],
                "kts.tuning.best_score": best["score"],
                "kts.tuning.best_epochs": best.get("epochs"),
                "kts.tuning.objective": objective,
                "kts.tuning.trials": len(rows),
            }
        )
        parent.log_params({f"best.{k}": v for k, v in best["values"].items()})
    keys = sorted({k for r in rows for k in r["values"]})
    extra = ["epochs"] if any("epochs" in r for r in rows) else []  # Hyperband's per trial
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["trial_id", "status", "score", *extra, *keys])
    for r in rows:
        writer.writerow(
            [
                r["trial_id"],
                r["status"],
                r["score"],
                *(r.get(k) for k in extra),
                *(r["values"].get(k) for k in keys),
            ]
        )
    parent.log_text(buf.getvalue(), "tuning/trials.csv")
    if picture is not None:
        parent.log_artifact(picture, "tuning")
