"""The pipeline's steps: each takes typed inputs and returns one typed result.

ingest -> split -> train -> evaluate -> export. Each step checks that it produced
what it promised (non-empty parts, a finite metric, a loadable version folder)
so a broken step fails where it broke, not three steps later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.config import RunConfig
from service.data.sources import Dataset
from service.data.split import Split


@dataclass(frozen=True)
class SplitResult:
    split: Split
    fingerprint: str
    class_counts: dict[str, dict[str, int]]


@dataclass(frozen=True)
class Trained:
    model: Any
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int


@dataclass(frozen=True)
class Evaluated:
    metrics: dict[str, float]


@dataclass(frozen=True)
class ExportResult:
    path: str
    version: int


def ingest(cfg: RunConfig) -> Dataset:
    """Load the configured data source into memory."""
    from service.data import sources

    data = sources.load(cfg.data.source)
    if len(data) == 0:
        raise RuntimeError(f"ingest: source {cfg.data.source!r} produced no rows")
    return data


def split(cfg: RunConfig, data: Dataset) -> SplitResult:
    """Make the run's one train / validation / test split."""
    from service.data.split import stratified_split

    s = cfg.data.split
    result = stratified_split(
        data.y,
        fractions=(s.train, s.validation, s.test),
        seed=cfg.seed,
        stratify=s.stratify and data.task != "regression",
    )
    for name, idx in result.parts().items():
        if len(idx) == 0:
            raise RuntimeError(f"split: the {name} part is empty")
    return SplitResult(result, result.fingerprint, result.class_counts(data.y))


def train(
    cfg: RunConfig, data: Dataset, parts: SplitResult, *, runtime: Any, callbacks: list
) -> Trained:
    """Build the configured model (preprocessing fitted on train only) and fit it."""
    from service import models
    from service.data.preprocess import with_normalization
    from service.training import trainer

    tr, va = parts.split.train, parts.split.validation
    with runtime.scope():
        core = models.build(
            cfg.model.type,
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            **cfg.model.options,
        )
        model = with_normalization(core, data.x[tr], input_name=data.input_name)
        trainer.compile_model(model, cfg.training, data.task)
    bs = cfg.training.batch_size
    history = model.fit(
        trainer.make_dataset(data.x[tr], data.y[tr], batch_size=bs, shuffle=True, seed=cfg.seed),
        validation_data=trainer.make_dataset(
            data.x[va], data.y[va], batch_size=bs, shuffle=False, seed=0
        ),
        epochs=cfg.training.epochs,
        callbacks=trainer.standard_callbacks(cfg.training) + callbacks,
        verbose=cfg.training.verbose,
        shuffle=False,  # the train dataset shuffles itself each epoch
    )
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    if not hist.get("loss") or not all(math.isfinite(v) for v in hist["loss"]):
        raise RuntimeError(f"train: loss is not finite: {hist.get('loss')}")
    monitor = cfg.training.early_stopping.monitor
    curve = hist.get(monitor, hist["loss"])
    best = int(np.argmax(curve) if "acc" in monitor else np.argmin(curve))
    return Trained(model, hist, len(hist["loss"]), best)


def evaluate(cfg: RunConfig, data: Dataset, parts: SplitResult, trained: Trained) -> Evaluated:
    """Score the trained model once on the test split."""
    from service.training import trainer

    te = parts.split.test
    result = trainer.evaluate(
        trained.model, data.x[te], data.y[te], task=data.task, batch_size=cfg.training.batch_size
    )
    if not all(math.isfinite(v) for v in result.metrics.values()):
        raise RuntimeError(f"evaluate: non-finite test metrics {result.metrics}")
    return Evaluated(result.metrics)


def export(cfg: RunConfig, data: Dataset, trained: Trained) -> ExportResult:
    """Write the next TF-Serving version of the model."""
    from serving.export import export_saved_model

    out = export_saved_model(
        trained.model,
        base_path=cfg.export.base_path,
        model_name=cfg.export_name,
        input_name=data.input_name,
        task=data.task,
        class_names=data.class_names,
    )
    if not (out.path / "saved_model.pb").is_file():
        raise RuntimeError(f"export: {out.path} has no saved_model.pb")
    return ExportResult(str(out.path.resolve()), out.version)
