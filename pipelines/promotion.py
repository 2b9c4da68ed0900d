"""The bless gate and the register step.

A candidate becomes the served model only when it beats the current champion
(the registered version carrying the MLflow alias ``champion``) on the same test
split. When the champion was scored on the same split (equal fingerprints) its
logged test metric is used; otherwise the champion's exported SavedModel is
scored on this run's test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.steps import Blessing
from service.config import RunConfig


def _champion_score(
    cfg: RunConfig, tracker: Any, version: Any, data: Any, parts: Any
) -> float | None:
    metric = cfg.bless.metric
    run = tracker.client.get_run(version.run_id)
    if (
        run.data.tags.get("kts.split_fingerprint") == parts.fingerprint
        and metric in run.data.metrics
    ):
        return float(run.data.metrics[metric])
    path = (version.tags or {}).get("kts.export_path") or run.data.tags.get("kts.export_path")
    if not path or not Path(path).is_dir():
        return None
    from service.training.trainer import evaluate

    scores = evaluate(
        None,
        data,
        parts.split.test,
        cfg=cfg,
        task=data.task,
        predict=_saved_model_predict(path, data.input_name),
    ).metrics
    return scores.get(metric)


def _saved_model_predict(path: str, input_name: str):
    """A batch of raw inputs -> the outputs of an exported version's serving signature."""
    import tensorflow as tf

    serve = tf.saved_model.load(path).signatures["serving_default"]

    def predict(x):
        out = serve(**{input_name: x})
        (value,) = [out[k] for k in ("probabilities", "predictions", "reconstructions") if k in out]
        return value

    return predict


def bless(
    cfg: RunConfig, tracker: Any, data: Any, parts: Any, metrics: dict[str, float]
) -> Blessing:
    """Decide whether the candidate (with test ``metrics``) replaces the champion."""
    from service.errors import UserError
    from service.tracking import champion_version

    gate = cfg.bless
    if not gate.enabled:
        return Blessing(True, "bless gate disabled")
    if gate.metric not in metrics:
        raise UserError(
            f"Invalid value for `bless.metric`: received {gate.metric!r}; this run's test "
            f"metrics are {', '.join(sorted(metrics))}."
        )
    if tracker is None:
        return Blessing(True, "no champion to compare with (tracking disabled)")
    champion = champion_version(tracker.client, cfg.registered_name)
    if champion is None:
        return Blessing(True, "no champion yet")
    champ = _champion_score(cfg, tracker, champion, data, parts)
    if champ is None:
        return Blessing(
            True, f"champion v{champion.version} cannot be scored on this split; replaced"
        )
    cand = metrics[gate.metric]
    gain = cand - champ if gate.direction == "maximize" else champ - cand
    verdict = f"{gate.metric} {cand:.4f} vs champion v{champion.version} {champ:.4f}"
    if gain > gate.min_improvement:
        return Blessing(True, f"{verdict}: better by {gain:.4f}", champion.version, champ)
    return Blessing(
        False,
        f"{verdict}: not better by more than {gate.min_improvement:g}",
        champion.version,
        champ,
    )


def register(
    cfg: RunConfig,
    tracker: Any,
    data: Any,
    parts: Any,
    exported: Any,
    metrics: dict[str, float],
    *,
    champion: bool,
) -> tuple[str, str] | None:
    """Log ``exported`` as the run's MLflow model and register a version of it.

    A blessed (``champion``) export is the served one: the version gets the alias
    ``champion`` and the serving version number as a tag. Otherwise it is a
    ``challenger``, registered for comparison but not served. Returns (version, alias),
    or None when tracking failed (reported; the run goes on).
    """
    from service.tracking import CHALLENGER, CHAMPION

    alias = CHAMPION if champion else CHALLENGER
    rows = parts.split.validation[:2] if len(parts.split.validation) else parts.split.train[:2]
    example = data.take(rows)
    example = example.astype(str) if data.kind == "text" else example
    link: dict[str, Any] = {"kts.export_path": exported.path}
    if champion:
        link["kts.serving_version"] = exported.version
    model_uri = tracker.log_serving_model(
        exported.path, example={data.input_name: example}, tags=link
    )
    if model_uri is None:
        return None
    version = tracker.register(
        cfg.registered_name,
        source=model_uri,
        alias=alias,
        tags={
            **link,
            "kts.split_fingerprint": parts.fingerprint,
            "kts.blessed": champion,
            cfg.bless.metric: metrics.get(cfg.bless.metric, ""),
        },
    )
    return (version, alias) if version is not None else None
