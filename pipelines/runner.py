"""Run one pipeline from a validated `RunConfig` and report a `RunSummary`."""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines import steps
from service.config import RunConfig, flatten


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
    commands: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def to_text(self) -> str:
        lines = [
            f"run:        {self.run_id or '(tracking disabled)'} (experiment {self.experiment!r})"
        ]
        lines.append(f"split:      {self.split_fingerprint} ({self.epochs_run} epochs trained)")
        for key, value in sorted(self.metrics.items()):
            lines.append(f"{key + ':':<24}{value:.4f}")
        if self.export:
            lines.append(f"export:     {self.export['path']} (version {self.export['version']})")
        for name, cmd in self.commands.items():
            lines.append(f"{name}: {cmd}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keras-training-service")
    except PackageNotFoundError:
        return "unknown"


def write_resolved_config(cfg: RunConfig) -> Path:
    """Write the resolved config next to the run's working files."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    path = cfg.run_dir / "config.resolved.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    return path


def run(cfg: RunConfig) -> RunSummary:
    """Execute ingest -> split -> train -> evaluate -> export, tracked in MLflow."""
    from service.tracking import Tracker
    from service.training.runtime import configure

    tracker = None
    if cfg.tracking.enabled:
        # Before any heavy work: an unreachable required server fails fast (exit 2).
        tracker = Tracker.start(
            uri=cfg.tracking.uri,
            experiment=cfg.experiment,
            run_name=cfg.tracking.run_name,
            required=cfg.tracking.required,
            fallback_dir=cfg.run_dir,
        )
    try:
        summary = _run_tracked(cfg, tracker, configure)
    except BaseException as err:
        if tracker is not None:
            tracker.end("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    if tracker is not None:
        tracker.end("FINISHED")
    return summary


def _run_tracked(cfg: RunConfig, tracker: Any, configure: Any) -> RunSummary:
    config_path = write_resolved_config(cfg)
    runtime = configure(
        seed=cfg.seed, precision=cfg.training.precision, distribution=cfg.training.distribution
    )
    data = steps.ingest(cfg)
    parts = steps.split(cfg, data)

    callbacks = []
    if tracker is not None:
        tracker.log_params(flatten(cfg.to_dict()))
        tracker.log_artifact(config_path)
        tracker.set_tags(
            {
                "kts.version": _package_version(),
                "kts.git_commit": _git_commit() or "none",
                "kts.host": platform.node(),
                "kts.precision": runtime.precision,
                "kts.strategy": runtime.strategy_name,
                "kts.split_fingerprint": parts.fingerprint,
                "kts.data_source": data.source,
            }
        )
        tracker.log_dict(
            {"fingerprint": parts.fingerprint, "class_counts": parts.class_counts}, "split.json"
        )
        callbacks.append(tracker.epoch_callback())

    trained = steps.train(cfg, data, parts, runtime=runtime, callbacks=callbacks)
    evaluated = steps.evaluate(cfg, data, parts, trained)
    metrics = {**evaluated.metrics, "best_epoch": float(trained.best_epoch)}

    exported = steps.export(cfg, data, trained) if cfg.export.enabled else None
    if tracker is not None:
        tracker.log_metrics(metrics)
        if exported is not None:
            tracker.set_tags(
                {"kts.export_path": exported.path, "kts.export_version": exported.version}
            )

    commands = {}
    notes = []
    if tracker is not None:
        commands["mlflow ui"] = tracker.ui_command()
        if tracker.fallback_note:
            notes.append(tracker.fallback_note)
    if exported is not None:
        base = Path(exported.path).parent
        commands["serve"] = (
            f"kts serve --model_name {cfg.export_name} --model_base_path {base} "
            "--port 8500 --rest_api_port 8501"
        )
    return RunSummary(
        run_id=tracker.run_id if tracker else None,
        experiment=cfg.experiment,
        metrics=metrics,
        export=asdict(exported) if exported else None,
        tracking_uri=tracker.uri if tracker else None,
        split_fingerprint=parts.fingerprint,
        epochs_run=trained.epochs_run,
        commands=commands,
        notes=notes,
    )
