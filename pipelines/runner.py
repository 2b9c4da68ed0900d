"""Run one pipeline from a validated `RunConfig` and report a `RunSummary`.

ingest -> split -> check -> train -> evaluate -> bless -> export -> register, tracked in one
MLflow run. A run killed mid-training and started again with the same command
resumes from its last backed-up epoch into the same MLflow run (the run id and a
hash of the resolved config are kept in ``runs/<name>/state.json``).

Before any of it: the preflight of every output and the run folder's lock
(``runs/<name>/run.lock``, one run per config at a time), see `run`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines import steps
from service.config import RunConfig, check_bless_metric, flatten
from service.errors import Terminated
from service.failpoints import failpoint

# Test rows the report pictures read (the metrics use every test row).
REPORT_ROWS = 2_000
STARTED_TAG = "kts.start_logged"  # params, tags, dataset and fit keys are on the run


@dataclass
class RunSummary:
    """What a run produced; printed at the end and written by ``--output-json``."""

    run_id: str | None
    experiment: str
    metrics: dict[str, float]
    export: dict[str, Any] | None
    tracking_uri: str | None
    split_fingerprint: str
    epochs_run: int
    blessed: bool = True
    bless_reason: str = ""
    # The gate's comparison: how many test rows, chosen how, and both scores on them.
    bless_rows: int | None = None
    bless_rows_rule: str | None = None
    bless_scores: dict[str, float] = field(default_factory=dict)
    registered_version: str | None = None
    registered_alias: str | None = None
    resumed_from_epoch: int = 0
    commands: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def to_text(self) -> str:
        lines = [f"run:      {self.run_id or '(not tracked)'} (experiment {self.experiment!r})"]
        resumed = f", resumed at epoch {self.resumed_from_epoch}" if self.resumed_from_epoch else ""
        lines.append(f"split:    {self.split_fingerprint} ({self.epochs_run} epochs{resumed})")
        for key, value in sorted(self.metrics.items()):
            lines.append(f"  {key:<22}{value:.4f}")
        lines.append(f"blessed:  {'yes' if self.blessed else 'no'} ({self.bless_reason})")
        if self.export:
            lines.append(f"export:   {self.export['path']} (version {self.export['version']})")
        if self.registered_version:
            lines.append(
                f"registry: version {self.registered_version} is now '{self.registered_alias}'"
            )
        for name, cmd in self.commands.items():
            lines.append(f"{name + ':':<11}{cmd}")
        lines.extend(f"note:     {n}" for n in self.notes)
        return "\n".join(lines)


# ------------------------------------------------------------ run metadata
def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keras-training-service")
    except PackageNotFoundError:
        return "unknown"


def write_resolved_config(cfg: RunConfig) -> Path:
    """Write the resolved config next to the run's working files."""
    from service.atomic import write_atomic

    return write_atomic(
        cfg.run_dir / "config.resolved.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    )


def config_hash(cfg: RunConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


class RunState:
    """``runs/<name>/state.json``: the attempt of this config that has not finished yet.

    An attempt is one `kts run` of a config until it finishes, however many times it
    is killed and started again on the way. Its token (``attempt``) is written here
    before its MLflow run is created (the run carries it as a tag), and into every
    export version it writes: a restarted attempt finds its run and its export by
    it. ``status`` goes ``starting`` (no run id yet) -> ``running`` -> ``finished``,
    the last only once every record of the run is written; a kill before that and the
    same command continue the same attempt.
    """

    def __init__(self, cfg: RunConfig, task: str | None = None):
        self.path = cfg.run_dir / "state.json"
        # Each multi-worker task backs up to its own folder: the run folder may be a
        # volume shared by every worker, and two writers of one weights file collide.
        suffix = "" if task in (None, "chief/0") else "-" + task.replace("/", "-")
        self.backup_dir = cfg.run_dir / f"backup{suffix}"
        self.trained_dir = cfg.run_dir / "trained"  # the trained model, until the run ends
        self.digest = config_hash(cfg)
        self.attempt: str | None = None

    def _read(self) -> dict[str, Any]:
        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def unfinished(self) -> tuple[str | None, str | None]:
        """(run id, attempt token) of an unfinished attempt with this config, else Nones."""
        state = self._read()
        if state.get("status") in ("starting", "running") and state.get("config") == self.digest:
            return state.get("run_id"), state.get("attempt")
        return None, None

    def unfinished_run_id(self) -> str | None:
        """The MLflow run of the unfinished attempt, whatever its config (None if none)."""
        state = self._read()
        return state.get("run_id") if state.get("status") in ("starting", "running") else None

    def clear_stale_worker_backup(self) -> None:
        """A worker keeps its backup only if it was made with this very config."""
        marker = self.backup_dir.with_suffix(".config")
        if marker.is_file() and marker.read_text() == self.digest:
            return
        shutil.rmtree(self.backup_dir, ignore_errors=True)
        from service.atomic import write_atomic

        write_atomic(marker, self.digest)

    def write(self, run_id: str | None, status: str) -> None:
        from service.atomic import write_atomic

        record = {"run_id": run_id, "status": status, "config": self.digest}
        write_atomic(self.path, json.dumps({**record, "attempt": self.attempt}))


# -------------------------------------------------------------------- run
def run(cfg: RunConfig, *, output_json: Path | None = None) -> RunSummary:
    """Execute the pipeline; see the module docstring.

    First, within a second and before TensorFlow is imported, every place the run
    writes is checked (`pipelines.preflight`, ``output_json`` included) and the run
    folder's lock is taken (`pipelines.lock`: one run per config at a time). The lock
    is given back however the run ends; SIGTERM unwinds like Ctrl-C, so the MLflow run
    ends KILLED rather than staying RUNNING.
    """
    from pipelines.lock import RunLock
    from pipelines.preflight import check_outputs
    from service.failpoints import check_env
    from service.training.runtime import cluster_role

    check_env()  # the crash tests' hook, when set, is well formed

    is_chief, task = (
        cluster_role() if cfg.training.distribution == "multi_worker" else (True, "chief/0")
    )
    check_outputs(cfg, output_json=output_json, is_chief=is_chief)
    lock = RunLock(cfg.run_dir, pipeline=cfg.name, task=None if is_chief else task)
    with lock, _sigterm_unwinds() as stops:
        return _execute(cfg, is_chief=is_chief, task=task, stopping=stops.seen)


class _Termination:
    """A stop signal as an exception in the main thread, sent again until the run has seen it.

    SIGTERM becomes `Terminated`, SIGINT (Ctrl-C) `KeyboardInterrupt`. Python runs a
    signal handler between two bytecodes of the main thread, wherever that is; an
    exception raised there while the interpreter runs a garbage-collection callback is
    printed and dropped ("Exception ignored in ..."), and the run would go on (seen
    here: a Ctrl-C at an epoch end once let the run finish with exit 0). So after the
    first signal a daemon thread sends another every second until the runner has
    caught the exception (``seen``); from then on the signal is ignored while the run
    unwinds (ends its MLflow run, removes its lock).
    """

    def __init__(self, signum: int, error: type[BaseException]) -> None:
        import threading

        self.signum, self.error = signum, error
        self.seen = threading.Event()
        self._nag_thread: threading.Thread | None = None

    def handler(self, signum: int, frame: Any) -> None:
        if self.seen.is_set():
            return
        if self._nag_thread is None:
            import threading

            self._nag_thread = threading.Thread(target=self._nag, name="kts-signal", daemon=True)
            self._nag_thread.start()
        raise self.error()

    def _nag(self) -> None:
        while not self.seen.wait(1.0):
            os.kill(os.getpid(), self.signum)

    def stop(self) -> None:
        """No more signals from the nag thread (before the previous handler is back)."""
        self.seen.set()
        if self._nag_thread is not None:
            self._nag_thread.join(timeout=5)


class _Stops:
    """The run's `_Termination` for SIGTERM and for SIGINT; ``seen`` marks both caught."""

    def __init__(self) -> None:
        import signal

        self.handlers = [
            _Termination(signal.SIGTERM, Terminated),
            _Termination(signal.SIGINT, KeyboardInterrupt),
        ]

    def seen(self) -> None:
        for one in self.handlers:
            one.seen.set()


@contextmanager
def _sigterm_unwinds() -> Iterator[_Stops]:
    """Turn SIGTERM into `Terminated` and SIGINT into `KeyboardInterrupt` while the run
    lasts, each sent again until caught (main thread only)."""
    import signal
    import threading

    stops = _Stops()
    if threading.current_thread() is not threading.main_thread():
        yield stops
        return
    previous = {t.signum: signal.signal(t.signum, t.handler) for t in stops.handlers}
    try:
        yield stops
    finally:
        for one in stops.handlers:
            one.stop()
            signal.signal(one.signum, previous[one.signum])


def _execute(
    cfg: RunConfig, *, is_chief: bool, task: str, stopping: Callable[[], None]
) -> RunSummary:
    """The run proper; ``stopping`` is called as soon as it unwinds on an exception."""
    from pipelines.stderr import quiet_tensorflow

    quiet_tensorflow()
    import uuid

    from service.tracking import Tracker
    from service.training.runtime import configure

    state = RunState(cfg, task if not is_chief else None)
    resume_id, state.attempt = (
        state.unfinished() if cfg.training.resume and is_chief else (None, None)
    )
    # Another config's unfinished run (or one `training.resume: false` starts over
    # from) is not continued: it is ended as KILLED once the new run is open.
    abandoned = state.unfinished_run_id() if is_chief else None
    if not is_chief:
        state.clear_stale_worker_backup()
    elif state.attempt is None:
        # A new attempt: never restore another config's (or a finished run's) model.
        shutil.rmtree(state.backup_dir, ignore_errors=True)
        shutil.rmtree(state.trained_dir, ignore_errors=True)
        state.attempt = uuid.uuid4().hex

    runtime = configure(
        seed=cfg.seed, precision=cfg.training.precision, distribution=cfg.training.distribution
    )
    # Validate the data before anything is recorded: bad data writes nothing.
    data = steps.ingest(cfg)
    if is_chief and cfg.bless.enabled:
        check_bless_metric(cfg.bless.metric, data.task, resolved=True)  # `auto` is known now
    parts = steps.check(cfg, data, steps.split(cfg, data))

    tracker = None
    try:
        if is_chief:
            # The attempt is written down before its MLflow run exists (Tracker.start).
            state.write(resume_id, "starting" if resume_id is None else "running")
        if cfg.tracking.enabled and is_chief:
            # Before any training: an unreachable required server fails fast (exit 2).
            tracker = Tracker.start(
                uri=cfg.tracking.uri,
                experiment=cfg.experiment,
                run_name=cfg.tracking.run_name,
                required=cfg.tracking.required,
                fallback_dir=cfg.run_dir,
                resume_run_id=resume_id,
                attempt=state.attempt,
            )
            if abandoned and abandoned != tracker.run_id:
                tracker.close_abandoned(abandoned)
            if cfg.tracking.system_metrics:
                tracker.start_system_metrics(cfg.tracking.system_metrics_interval)
        if is_chief:
            state.write(tracker.run_id if tracker else None, "running")
        summary = Pipeline(cfg, tracker, runtime, state).run(data, parts)
        failpoint("run.finishing")
    except BaseException as err:
        # Whatever stops the run (a user error found late, a fault, Ctrl-C, SIGTERM),
        # its MLflow run ends here: none is left RUNNING.
        stopping()
        if tracker is not None:
            interrupted = isinstance(err, (KeyboardInterrupt, Terminated))
            tracker.end("KILLED" if interrupted else "FAILED")
        raise
    if tracker is not None:
        tracker.end("FINISHED")
        # After the run's last MLflow call: what MLflow did not record or give back (the
        # run itself finished; only its MLflow record is incomplete).
        lost = tracker.tracking_note()
        if lost is not None:
            summary.notes.append(lost)
    failpoint("run.ended")
    if is_chief:
        state.write(summary.run_id, "finished")  # the attempt's commit point
        shutil.rmtree(state.trained_dir, ignore_errors=True)
    return summary


class Pipeline:
    """The steps of one run, wired to its tracker (None when not tracking)."""

    def __init__(self, cfg: RunConfig, tracker: Any, runtime: Any, state: RunState):
        self.cfg, self.tracker, self.runtime, self.state = cfg, tracker, runtime, state

    def run(self, data: Any, parts: steps.SplitResult) -> RunSummary:
        cfg, tracker, runtime = self.cfg, self.tracker, self.runtime
        config_path = write_resolved_config(cfg) if runtime.is_chief else None

        callbacks = []
        if tracker is not None:
            self._log_start(config_path, data, parts)
            callbacks.append(tracker.epoch_callback(journal=cfg.run_dir / "epochs.jsonl"))
        if cfg.tuning is not None and cfg.tuning.enabled:
            trained = self._tune(data, parts, callbacks)
            cfg = self.cfg
        else:
            trained = steps.train(cfg, data, parts, callbacks=callbacks, **self._train_args())
        evaluated = steps.evaluate(cfg, data, parts, trained)
        metrics = {**evaluated.metrics, "best_epoch": float(trained.best_epoch)}
        if tracker is not None:
            tracker.log_metrics(
                {
                    "data_skipped_rows": float(len(parts.skipped)),
                    "input_bound": float(trained.input_bound),
                }
            )
        if tracker is not None:
            tracker.log_metrics(metrics)
        failpoint("evaluate.logged")
        # The gate only decides (exports come after); its verdict is recorded on the run
        # before anything is exported, and goes into the card.
        blessing = self._bless(data, parts, metrics, evaluated) if runtime.is_chief else None
        if tracker is not None and cfg.tracking.reports:
            self._reports(data, parts, trained, evaluated, metrics, blessing)

        if not runtime.is_chief:
            # Multi-worker: every worker takes part in saving; a worker's copy stays in
            # its own run folder (for inspection), only the chief's becomes a version.
            scratch = cfg.run_dir / "worker_exports" / runtime.task.replace("/", "-")
            shutil.rmtree(scratch, ignore_errors=True)
            worker_export = steps.export(cfg, data, trained, base_path=str(scratch))
            return self._summary(data, parts, trained, metrics, None, worker_export, None)

        assert blessing is not None
        exported = registered = None
        attempt = self.state.attempt
        if blessing.blessed and cfg.export.enabled:
            # Each step finds what a killed attempt of this run already did: its export
            # version (by attempt), its labels (set again), its registered version.
            exported = steps.export(
                cfg,
                data,
                trained,
                warmup_rows=parts.split.validation,
                attempt=attempt,
                fingerprint=parts.fingerprint,
            )
            self._promote(exported)
            failpoint("export.promoted")
            registered = self._register(data, parts, exported, metrics, champion=True)
        elif cfg.export.enabled and self._registers() and cfg.registry.challengers:
            # Not served, but kept: an MLflow model under the `challenger` alias.
            from serving.export import find_version

            scratch = cfg.run_dir / "challenger"
            if attempt is None or not find_version(
                scratch / cfg.export_name, steps.ATTEMPT_KEY, attempt
            ):
                shutil.rmtree(scratch, ignore_errors=True)  # another attempt's copy
            candidate = steps.export(
                cfg,
                data,
                trained,
                warmup_rows=parts.split.validation,
                base_path=str(scratch),
                attempt=attempt,
                fingerprint=parts.fingerprint,
            )
            registered = self._register(data, parts, candidate, metrics, champion=False)
        if tracker is not None:
            if exported is not None:
                tracker.set_tags(
                    {"kts.export_path": exported.path, "kts.export_version": exported.version}
                )
        return self._summary(data, parts, trained, metrics, blessing, exported, registered)

    # ------------------------------------------------------------ pieces
    def _train_args(self) -> dict[str, Any]:
        """How the run's model is trained: backed up every epoch, and checkpointed when
        trained (not across multi-worker processes) so a killed run does not train twice."""
        keep = self.runtime.is_chief and self.cfg.training.distribution != "multi_worker"
        return dict(
            runtime=self.runtime,
            backup_dir=self.state.backup_dir,
            checkpoint=self.state.trained_dir if keep else None,
        )

    def _log_start(self, config_path: Path | None, data: Any, parts: Any) -> None:
        """Params, config, tags, dataset, split and fit keys: once per run. The last
        request sets `STARTED_TAG`; a resumed run without it logs them all again (each
        is idempotent: same values, artifacts overwritten)."""
        cfg, tracker, runtime = self.cfg, self.tracker, self.runtime
        if tracker.resumed:
            run = tracker.guarded("get_run", tracker.client.get_run, tracker.run_id)
            if run is not None and STARTED_TAG in run.data.tags:
                return  # logged by the interrupted attempt
        tracker.log_params(flatten(cfg.to_dict()))
        failpoint("run.params_logged")
        if config_path is not None:
            tracker.log_artifact(config_path)
        from pipelines.promotion import log_fit_keys, split_tags

        split = split_tags(cfg, parts)
        tracker.set_tags(
            {
                "kts.version": _package_version(),
                "kts.git_commit": _git_commit() or "none",
                "kts.host": platform.node(),
                "kts.precision": runtime.precision,
                "kts.strategy": runtime.strategy_name,
                **split,
                "kts.data_source": data.source,
                "kts.task": data.task,
            }
        )
        tracker.log_dataset(data, parts)
        tracker.log_dict(
            {
                "fingerprint": parts.fingerprint,
                "seed": split["kts.split_seed"],
                "keys": split["kts.split_keys"],
                "rows": {k: len(v) for k, v in parts.split.parts().items()},
                "class_counts": parts.class_counts,
                "rows_checked": parts.rows_checked,
                "skipped_rows": len(parts.skipped),
            },
            "split.json",
        )
        if parts.skipped:
            described = [
                f"{data.reader.describe(row)}: {why}" for row, why in sorted(parts.skipped.items())
            ]
            tracker.log_text("\n".join(described[:10_000]) + "\n", "data/skipped_rows.txt")
        log_fit_keys(cfg, tracker, parts)
        tracker.set_tags({STARTED_TAG: "true"})

    def _tune(self, data: Any, parts: steps.SplitResult, callbacks: list) -> steps.Trained:
        """Search on this run's split, then the run's model as `tuning.final` says.

        Trials fit on train and are scored on validation (or on k folds of both); the
        test split is left for the one evaluation after this. ``self.cfg`` becomes the
        configuration the returned model was trained with. The parent run is tagged
        ``kts.tuning.final`` (the choice made), ``kts.tuning.final_epochs`` and
        ``kts.tuning.final_rows``, and gets that configuration as
        ``tuning/final_config.yaml``.
        """
        import numpy as np

        from tuning.search import run_search
        from tuning.space import apply

        result = run_search(
            self.cfg,
            data,
            parts.split,
            build_model=steps.build_model,
            tracker=self.tracker,
            strategy=self.runtime.distributed_strategy,
        )
        failpoint("tuning.searched")
        cfg = result.config
        assert cfg.tuning is not None
        final = cfg.tuning.final if result.best_trial_id is not None else "retrain"
        tags: dict[str, Any] = {"kts.tuning.final": final}
        if result.best_trial_id is None:
            tags["kts.tuning.final_note"] = "no trial completed: trained the configured values"
        train = dict(callbacks=callbacks, **self._train_args())
        if final == "best_weights":
            trained = self._best_trial_model(result)
            tags.update(
                {
                    "kts.tuning.final_epochs": trained.epochs_run,
                    "kts.tuning.final_rows": "train",
                }
            )
        elif final == "retrain_train_val":
            # No held-out rows are left to stop on: train as long as the best trial
            # needed to reach its best epoch (result.retrain_epochs), no early stopping.
            epochs = int(result.retrain_epochs or cfg.training.epochs)
            cfg = apply(cfg, {"training.epochs": epochs, "training.early_stopping.enabled": False})
            rows = np.sort(np.concatenate([parts.split.train, parts.split.validation]))
            trained = steps.train(cfg, data, parts, fit_rows=rows, **train)
            tags.update(
                {
                    "kts.tuning.final_epochs": epochs,
                    "kts.tuning.final_epochs_from": result.retrain_epochs_from,
                    "kts.tuning.final_rows": "train+validation",
                }
            )
        else:
            trained = steps.train(cfg, data, parts, **train)
            tags.update(
                {"kts.tuning.final_epochs": trained.epochs_run, "kts.tuning.final_rows": "train"}
            )
        self.cfg = cfg
        if self.tracker is not None:
            self.tracker.set_tags(tags)
            self.tracker.log_dict(cfg.to_dict(), "tuning/final_config.yaml")
        return trained

    def _best_trial_model(self, result: Any) -> steps.Trained:
        """`tuning.final: best_weights`: the best trial's checkpoint and its learning curves.

        The trial's epochs are also logged on the parent run (step = epoch), as a
        fitted run's would be.
        """
        cfg = self.cfg
        assert cfg.tuning is not None
        history = result.best_history or {}
        objective = cfg.tuning.objective
        curve = history.get(objective.metric) or history.get("loss") or [0.0]
        pick = max if objective.direction == "max" else min
        best = curve.index(pick(curve)) if objective.metric in history else len(curve) - 1
        if self.tracker is not None:
            for epoch in range(max((len(v) for v in history.values()), default=0)):
                logs = {k: v[epoch] for k, v in history.items() if epoch < len(v)}
                self.tracker.log_metrics(logs, step=epoch)
        model = result.best_model
        return steps.Trained(
            model, history, int(result.best_epochs or len(curve)), best, str(model.loss)
        )

    def _reports(
        self,
        data: Any,
        parts: Any,
        trained: Any,
        evaluated: Any,
        metrics: dict,
        blessing: steps.Blessing | None = None,
    ) -> None:
        """Pictures and the model card, written under the run folder and logged."""
        from service import reports
        from service.models.describe import describe_model

        cfg = self.cfg
        # Pictures read a bounded sample of test rows (autoencoders keep fewer outputs).
        te = parts.split.test[: min(REPORT_ROWS, len(evaluated.predictions))]
        out_dir = cfg.run_dir / "reports"
        try:
            layer_table = describe_model(trained.model, name=cfg.model.type).to_text()
        except Exception as err:  # describe covers the zoo's layers; never block a run
            layer_table = f"(layer table unavailable: {type(err).__name__}: {err})"
        history, best = trained.history, trained.best_epoch
        if trained.initial_epoch:
            history, best = self._full_history(trained)
        paths = reports.write_all(
            trained.model,
            history=history,
            best_epoch=best,
            x_test=data.take(te),
            y_test=data.y[te],
            y_pred=evaluated.predictions[: len(te)],
            class_names=data.class_names,
            task=data.task,
            out_dir=out_dir,
            card_info={
                "name": cfg.name,
                "data": {"source": data.source, "task": data.task, "rows": len(data)},
                "split": {
                    "fingerprint": parts.fingerprint,
                    **{k: len(v) for k, v in parts.split.parts().items()},
                    "test rows in the pictures": len(te),
                },
                "metrics": metrics,
                "params": flatten(cfg.to_dict()),
                "layer_table": layer_table,
                "bless": _bless_facts(blessing),
            },
        )
        self.tracker.log_text(layer_table, "reports/layers.txt")
        for path in paths:
            self.tracker.log_artifact(path, "reports")

    def _full_history(self, trained: Any) -> tuple[dict[str, list[float]], int | None]:
        """Per-epoch curves of a resumed run: the journal holds the epochs before the kill."""
        entries: dict[int, dict[str, float]] = {}
        journal = self.cfg.run_dir / "epochs.jsonl"
        for line in journal.read_text().splitlines() if journal.is_file() else []:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            entries[int(entry["step"])] = entry["metrics"]
        for offset, _ in enumerate(trained.history.get("loss", [])):
            step = trained.initial_epoch + offset
            entries[step] = {k: v[offset] for k, v in trained.history.items()}
        steps_seen = sorted(entries)
        if steps_seen != list(range(len(steps_seen))):
            return trained.history, None  # incomplete journal: plot what this attempt saw
        keys = sorted({k for e in entries.values() for k in e})
        full = {k: [entries[s].get(k, float("nan")) for s in steps_seen] for k in keys}
        return full, trained.best_epoch

    def _bless(
        self, data: Any, parts: Any, metrics: dict[str, float], evaluated: steps.Evaluated
    ) -> steps.Blessing:
        """The gate's verdict, recorded on the run; a resumed run's recorded one is kept
        (asked again, the gate would compare the run with its own registered version)."""
        from pipelines.promotion import bless, log_blessing, recorded_blessing

        tracker = self.tracker
        recorded = recorded_blessing(tracker) if tracker is not None and tracker.resumed else None
        if recorded is not None:
            return recorded
        blessing = bless(self.cfg, tracker, data, parts, metrics, evaluated.predictions)
        if tracker is not None:
            log_blessing(self.cfg, tracker, blessing)
        failpoint("bless.recorded")
        return blessing

    def _promote(self, exported: Any) -> None:
        """Move the serving `stable` label to the new version (after loading it once)."""
        from serving.release import promote

        config = Path(self.cfg.export.base_path) / "models.config"
        promote(config, self.cfg.export_name, exported.version)

    def _registers(self) -> bool:
        return self.tracker is not None and self.cfg.registry.enabled

    def _register(
        self, data: Any, parts: Any, exported: Any, metrics: dict[str, float], *, champion: bool
    ) -> tuple[str, str] | None:
        """Log ``exported`` as the run's MLflow model and register it; (version, alias)."""
        if not self._registers():
            return None
        from pipelines.promotion import register

        return register(self.cfg, self.tracker, data, parts, exported, metrics, champion=champion)

    def _summary(self, data, parts, trained, metrics, blessing, exported, registered) -> RunSummary:
        cfg, tracker = self.cfg, self.tracker
        commands: dict[str, str] = {}
        notes: list[str] = []
        if tracker is not None:
            commands["mlflow ui"] = tracker.ui_command()
            if tracker.fallback_note:
                notes.append(tracker.fallback_note)
        if parts.skipped:
            notes.append(
                f"data: {len(parts.skipped)} bad rows left out (data.on_bad_rows: skip), "
                f"first {data.reader.describe(min(parts.skipped))}"
            )
        if trained.input_bound:
            notes.append(
                "input-bound: train steps waited for data (metric input_wait_fraction); try "
                "data.cache: memory or disk, or fewer/faster augmentation layers"
            )
        if exported is not None and blessing is not None:
            base = Path(exported.path).parent
            commands["serve"] = (
                f"kts serve --model_name={cfg.export_name} --model_base_path={base} "
                "--port=8500 --rest_api_port=8501"
            )
        return RunSummary(
            run_id=tracker.run_id if tracker else None,
            experiment=cfg.experiment,
            metrics=metrics,
            export=asdict(exported) if exported else None,
            tracking_uri=tracker.uri if tracker else None,
            split_fingerprint=parts.fingerprint,
            epochs_run=trained.epochs_run,
            blessed=blessing.blessed if blessing else False,
            bless_reason=blessing.reason if blessing else "not the chief worker",
            bless_rows=blessing.rows if blessing else None,
            bless_rows_rule=blessing.rule if blessing else None,
            bless_scores=_bless_scores(blessing),
            registered_version=registered[0] if registered else None,
            registered_alias=registered[1] if registered else None,
            resumed_from_epoch=trained.initial_epoch,
            commands=commands,
            notes=notes,
        )


def _bless_scores(blessing: steps.Blessing | None) -> dict[str, float]:
    if blessing is None:
        return {}
    pairs = (("candidate", blessing.candidate_score), ("champion", blessing.champion_score))
    return {who: float(v) for who, v in pairs if v is not None}


def _bless_facts(blessing: steps.Blessing | None) -> dict[str, Any]:
    """The gate's verdict for the model card (empty when there was none)."""
    if blessing is None:
        return {}
    facts: dict[str, Any] = {"blessed": blessing.blessed, "reason": blessing.reason}
    if blessing.champion_version is not None:
        facts["champion_version"] = blessing.champion_version
    if blessing.rows is not None:
        facts.update(rows=blessing.rows, rows_rule=blessing.rule)
    facts.update({f"{who}_score": v for who, v in _bless_scores(blessing).items()})
    return facts
