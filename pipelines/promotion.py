"""The bless gate, the register step, and what each model records about its rows.

A candidate becomes the served model only when it beats the current champion (the
registered version carrying the MLflow alias ``champion``), both scored on the same
rows: the rows of this run's test part that the champion never fitted on. Every
tracked run records the keys of the rows it fitted on (train + validation, whose
labels its weights or early stopping saw) as ``split/fit_keys.npy``; the gate
downloads the champion's, keeps this run's test rows whose key is not among them, and
refuses to decide below ``bless.min_rows`` such rows. The candidate's score on them
comes from this run's test predictions; the champion's from its exported SavedModel
(`_saved_model_score`), or from its logged test metric when it was tested on this very
split (equal fingerprints: its test part is this run's).

A champion without recorded fit keys (registered before row keys existed, or whose
run can no longer be read) is compared only when its split fingerprint equals this
run's; otherwise the gate refuses, as it does when the champion's rows were keyed
another way. A champion the tracking store cannot give at all never stops the run
(`bless`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.steps import SPLIT_KEY, Blessing
from service.config import RunConfig

FIT_KEYS = "split/fit_keys.npy"
BLESS_KEYS = "bless/row_keys.npy"
RULE = "test rows neither model fitted on"
SAME_SPLIT_RULE = "the champion's own test part (same split fingerprint)"
_MISSING = "missing"


def split_tags(cfg: RunConfig, parts: Any) -> dict[str, Any]:
    """Tags naming a run's split: fingerprint, split seed and how rows are keyed."""
    from service.data.identity import key_scheme

    return {
        "kts.split_fingerprint": parts.fingerprint,
        "kts.split_seed": cfg.data.split.seed,
        "kts.split_keys": key_scheme(cfg.data),
    }


def _save_npy(path: Path, array: np.ndarray) -> Path:
    from service.atomic import atomic_path

    with atomic_path(path) as tmp:
        np.save(tmp, np.asarray(array, dtype="<u8"), allow_pickle=False)
    return path


def log_fit_keys(cfg: RunConfig, tracker: Any, parts: Any) -> None:
    """Log the sorted keys of the rows this run fits on (train + validation) as `FIT_KEYS`.

    Also when tuning ends in `retrain_train_val` or `best_weights`: their models saw
    exactly these rows' labels (fitted, or chosen by them).
    """
    path = _save_npy(cfg.run_dir / FIT_KEYS, parts.split.fit_keys())
    tracker.log_artifact(path, str(Path(FIT_KEYS).parent))


def log_blessing(cfg: RunConfig, tracker: Any, blessing: Blessing) -> None:
    """The bless record on the run: verdict, reason, and which rows were compared.

    Written before anything is exported: the compared rows' keys first, then the tags
    in one request, the verdict's commit point (`recorded_blessing` reads it back when
    a killed run is started again: the gate is not asked twice, and never compares
    the run with its own registered version).
    """
    if blessing.row_keys is not None:
        path = _save_npy(cfg.run_dir / BLESS_KEYS, np.sort(blessing.row_keys))
        tracker.log_artifact(path, str(Path(BLESS_KEYS).parent))
    tags: dict[str, Any] = {"kts.blessed": blessing.blessed, "kts.bless_reason": blessing.reason}
    if blessing.champion_version is not None:
        tags["kts.bless_champion_version"] = blessing.champion_version
    if blessing.rows is not None:
        tags["kts.bless_rows"] = blessing.rows
        tags["kts.bless_rows_rule"] = blessing.rule
    for who in ("candidate", "champion"):
        value = getattr(blessing, f"{who}_score")
        if value is not None:
            tags[f"kts.bless_{who}_score"] = repr(float(value))
    tracker.set_tags(tags)


def recorded_blessing(tracker: Any) -> Blessing | None:
    """The verdict `log_blessing` recorded on the tracker's run, or None if there is none."""
    run = tracker.guarded("get_run", tracker.client.get_run, tracker.run_id)
    tags = run.data.tags if run is not None else {}
    if "kts.blessed" not in tags:
        return None

    def number(key: str, kind: Any) -> Any:
        return kind(tags[key]) if key in tags else None

    return Blessing(
        tags["kts.blessed"] == "True",
        tags.get("kts.bless_reason", ""),
        champion_version=tags.get("kts.bless_champion_version"),
        champion_score=number("kts.bless_champion_score", float),
        candidate_score=number("kts.bless_candidate_score", float),
        rows=number("kts.bless_rows", int),
        rule=tags.get("kts.bless_rows_rule"),
    )


def _read_fit_keys(tracker: Any, run_id: str) -> Any:
    """The champion's fit keys; `_MISSING` when it has none; None when reading failed."""

    def read() -> Any:
        folder = str(Path(FIT_KEYS).parent)
        if FIT_KEYS not in {a.path for a in tracker.client.list_artifacts(run_id, folder)}:
            return _MISSING
        with tempfile.TemporaryDirectory() as tmp:
            local = tracker.client.download_artifacts(run_id, FIT_KEYS, tmp)
            return np.load(local, allow_pickle=False).astype(np.uint64)

    return tracker.guarded("read champion fit keys", read)


@dataclass(frozen=True)
class _Champion:
    """What the gate knows of the model a candidate must beat."""

    name: str  # for messages: "champion v3", or "served version 2"
    version: str | None  # its registered version (None: found in the serving folder)
    tags: Mapping[str, str]  # kts.split_fingerprint, kts.split_keys of its run
    metrics: Mapping[str, float]  # its test metrics, on its own test part
    fitted: Any  # its fit keys; `_MISSING`: none recorded; None: not readable
    export_path: str | None
    caveat: str | None = None  # what could not be read, and what was used instead


def _registered_champion(cfg: RunConfig, tracker: Any) -> tuple[_Champion | None, str | None]:
    """The registry's champion (None when there is none), or (None, why the registry could
    not be read).

    The champion's run is read for its split tags, test metrics and fit keys. When it
    cannot be read (deleted for good, another store) its registered version stands in:
    the version carries the same split tags, the export path and the gate metric
    (`register`), but no fit keys.
    """
    from service.tracking import champion_version

    found, why = tracker.attempt(
        "read the registry's champion", champion_version, tracker.client, cfg.registered_name
    )
    if why is not None or found is None:
        return None, why
    name = f"champion v{found.version}"
    version_tags = {k: str(v) for k, v in (found.tags or {}).items()}
    run, lost = tracker.attempt(f"read {name}'s run", tracker.client.get_run, found.run_id)
    if run is None:
        recorded = version_tags.get(cfg.bless.metric, "")
        try:
            metrics = {cfg.bless.metric: float(recorded)} if recorded else {}
        except ValueError:
            metrics = {}
        return _Champion(
            name,
            str(found.version),
            version_tags,
            metrics,
            None,
            version_tags.get("kts.export_path"),
            f"{name}'s run {found.run_id} could not be read ({lost}); its registered "
            "version's record was used",
        ), None
    return _Champion(
        name,
        str(found.version),
        run.data.tags,
        run.data.metrics,
        _read_fit_keys(tracker, found.run_id),
        version_tags.get("kts.export_path") or run.data.tags.get("kts.export_path"),
    ), None


def _served_champion(cfg: RunConfig, why: str) -> _Champion | None:
    """The version ``export.base_path``'s ``models.config`` labels ``stable`` for this
    model, standing in for a champion the registry could not give (``why``); None when
    nothing is served there. Its split is the one its ``kts_metadata.json`` records."""
    import json

    from serving.config import STABLE, model_settings
    from serving.errors import ServingConfigError
    from serving.export import MODEL_CONFIG_NAME

    config = Path(cfg.export.base_path) / MODEL_CONFIG_NAME
    if not config.is_file():
        return None
    try:
        settings = model_settings(config, cfg.export_name)
    except ServingConfigError:
        return None
    served = settings.labels.get(STABLE)
    if served is None or not (folder := Path(settings.base_path) / str(served)).is_dir():
        return None
    try:
        meta = json.loads((folder / "assets.extra" / "kts_metadata.json").read_text())
    except (OSError, ValueError):
        meta = {}
    fingerprint = meta.get(SPLIT_KEY)
    return _Champion(
        f"served version {served}",
        None,
        {"kts.split_fingerprint": fingerprint} if fingerprint else {},
        {},
        None,
        str(folder),
        f"the registry's champion could not be read ({why}); compared with the version "
        f"{config} labels {STABLE}",
    )


def _saved_model_score(cfg: RunConfig, data: Any, rows: np.ndarray, path: str, metric: str):
    """``metric`` of the SavedModel at ``path`` on ``rows`` of ``data``, streamed.

    The one place that feeds a champion's export (``serving_default``: probabilities,
    predictions or reconstructions), batch by batch through the run's input pipeline.
    """
    import tensorflow as tf

    from service.training.trainer import evaluate

    serve = tf.saved_model.load(path).signatures["serving_default"]

    def predict(x):
        out = serve(**{data.input_name: x})
        (value,) = [out[k] for k in ("probabilities", "predictions", "reconstructions") if k in out]
        return value

    return evaluate(None, data, rows, cfg=cfg, task=data.task, predict=predict).metrics.get(metric)


def _score(data: Any, rows: np.ndarray, outputs: np.ndarray, metric: str) -> float | None:
    """``metric`` (``test_*``) of ``outputs`` against the targets of ``rows``; None if n/a
    (an autoencoder keeps only some of its outputs: not recomputed on a subset)."""
    from service.training.trainer import score

    if data.task == "reconstruction":
        return None
    scores = {f"test_{k}": v for k, v in score(data.task, data.y[rows], outputs).items()}
    return scores.get(metric)


def _comparison(cfg: RunConfig, champion: _Champion, parts: Any) -> tuple[np.ndarray | None, str]:
    """Positions within this run's test part to compare on, and the rule; or (None, why not).

    Without the champion's fit keys (none recorded, or not readable) only a champion
    trained on this very split is compared: its test part is this run's, rows it never
    fitted on.
    """
    from service.data.identity import key_scheme

    split = parts.split
    every = np.arange(len(split.test))
    theirs_split = champion.tags.get("kts.split_fingerprint")
    fitted = champion.fitted
    if fitted is None or isinstance(fitted, str) or split.keys is None:
        if theirs_split == parts.fingerprint:
            return every, SAME_SPLIT_RULE
        if fitted is None:
            return None, (
                f"{champion.name}'s fitted rows ({FIT_KEYS}) could not be read and its split "
                f"(fingerprint {theirs_split or 'not recorded'}) is not this run's "
                f"({parts.fingerprint}), so no rows are known to be unseen by it; not compared "
                "(run once with bless.enabled=false to replace it)"
            )
        return None, (
            f"{champion.name} has no record of the rows it fitted on ({FIT_KEYS}; "
            f"registered before row keys) and another split (fingerprint "
            f"{theirs_split or 'none'}, this run "
            f"{parts.fingerprint}), so no rows are known to be unseen by it; not compared "
            "(run once with bless.enabled=false to replace it)"
        )
    theirs, ours = champion.tags.get("kts.split_keys"), key_scheme(cfg.data)
    if theirs != ours:
        return None, (
            f"{champion.name}'s rows are keyed by {theirs!r}, this run's by "
            f"{ours!r}, so its fitted rows cannot be matched; not compared"
        )
    unseen = ~np.isin(split.keys[split.test], fitted)
    return every[unseen], RULE


def bless(
    cfg: RunConfig,
    tracker: Any,
    data: Any,
    parts: Any,
    metrics: dict[str, float],
    predictions: np.ndarray,
) -> Blessing:
    """Decide whether the candidate replaces the champion (module docstring).

    A champion the tracking store cannot give in full never stops the run:

    - its run cannot be read (deleted for good by ``mlflow gc``, another store): its
      registered version's record stands in (split fingerprint, export path, gate
      metric), so it is compared on its own test part when this run has the same
      split, and refused otherwise, as a champion without recorded fit keys is;
    - the registry cannot be read (the tracking server is gone): the version that
      ``export.base_path``'s ``models.config`` labels ``stable`` stands in, scored from
      its SavedModel on this run's test part when its recorded split is this run's,
      refused otherwise; with nothing served there, there is nothing to protect and the
      candidate is blessed.

    The verdict's reason then says what could not be read (and what stood in).

    Args:
        metrics: the candidate's test metrics (``test_*``).
        predictions: the candidate's outputs on ``parts.split.test``, in that order.
    """
    from service.errors import UserError

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
    champion, why = _registered_champion(cfg, tracker)
    if why is not None:
        champion = _served_champion(cfg, why)
        if champion is None:
            from serving.export import MODEL_CONFIG_NAME

            config = Path(cfg.export.base_path) / MODEL_CONFIG_NAME
            return Blessing(
                True,
                f"champion unreadable ({why}) and {config} serves no version of "
                f"{cfg.export_name!r}: nothing to compare with",
            )
    elif champion is None:
        return Blessing(True, "no champion yet")
    blessing = _judge(cfg, data, parts, metrics, predictions, champion)
    if champion.caveat is None:
        return blessing
    return replace(blessing, reason=f"{blessing.reason} ({champion.caveat})")


def _judge(
    cfg: RunConfig,
    data: Any,
    parts: Any,
    metrics: dict[str, float],
    predictions: np.ndarray,
    champion: _Champion,
) -> Blessing:
    """The verdict against ``champion`` (`bless`)."""
    gate = cfg.bless
    v = champion.version
    picked, rule = _comparison(cfg, champion, parts)
    if picked is None:
        return Blessing(False, rule, v)
    test = parts.split.test
    rows, count = test[picked], len(picked)
    facts = dict(
        rows=count,
        rule=rule,
        row_keys=parts.split.keys[rows] if parts.split.keys is not None else None,
    )
    whole = count == len(test)
    if count < gate.min_rows:
        which = (
            f"this run has only {count} test rows ({rule})"
            if whole
            else f"only {count} of this run's {len(test)} test rows are {rule} ("
            f"{champion.name} fitted on the others; keep its data and data.split.seed)"
        )
        return Blessing(
            False,
            f"{which}; bless.min_rows is {gate.min_rows}: not compared (or lower bless.min_rows)",
            v,
            **facts,
        )
    cand = metrics[gate.metric] if whole else _score(data, rows, predictions[picked], gate.metric)
    if cand is None:
        return Blessing(
            False,
            f"bless.metric {gate.metric!r} cannot be recomputed on {count} of this run's "
            f"{len(test)} test rows (the {rule}); not compared (use a metric computed from "
            "outputs, e.g. test_accuracy or test_mae)",
            v,
            **facts,
        )
    same_split = champion.tags.get("kts.split_fingerprint") == parts.fingerprint
    if whole and same_split and gate.metric in champion.metrics:
        champ: float | None = float(champion.metrics[gate.metric])  # tested on these rows
    else:
        path = champion.export_path
        champ = None
        if path and Path(path).is_dir():
            champ = _saved_model_score(cfg, data, rows, path, gate.metric)
    if champ is None:
        return Blessing(
            True,
            f"{champion.name} cannot be scored on the {count} {rule}; replaced",
            v,
            None,
            cand,
            **facts,
        )
    gain = cand - champ if gate.direction == "max" else champ - cand
    verdict = f"{gate.metric} {cand:.4f} vs {champion.name} {champ:.4f} on {count} {rule}"
    if gain > gate.min_improvement:
        return Blessing(True, f"{verdict}: better by {gain:.4f}", v, champ, cand, **facts)
    return Blessing(
        False,
        f"{verdict}: not better by more than {gate.min_improvement:g}",
        v,
        champ,
        cand,
        **facts,
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
    """Log ``exported`` as the run's MLflow model and register a version of it, once.

    A blessed (``champion``) export is the served one: the version gets the alias
    ``champion`` and the serving version number as a tag. Otherwise it is a
    ``challenger``, registered for comparison but not served. Returns (version, alias),
    or None when tracking failed (reported; the run goes on).
    """
    from service.failpoints import failpoint
    from service.tracking import CHALLENGER, CHAMPION, version_of_run

    alias = CHAMPION if champion else CHALLENGER
    link: dict[str, Any] = {"kts.export_path": exported.path}
    if champion:
        link["kts.serving_version"] = exported.version
    # A version made from this run by a killed attempt: only its alias may be missing.
    done, why = tracker.attempt(
        "find this run's registered version",
        version_of_run,
        tracker.client,
        cfg.registered_name,
        tracker.run_id,
    )
    if why is not None:
        return None  # unknown whether one exists: a second one is not made
    model_uri = ""
    if done is None:
        rows = parts.split.validation[:2] if len(parts.split.validation) else parts.split.train[:2]
        example = data.take(rows)
        example = example.astype(str) if data.kind == "text" else example
        model_uri = tracker.log_serving_model(
            exported.path, example={data.input_name: example}, tags=link
        )
        if model_uri is None:
            return None
        failpoint("register.model_logged")
    version = tracker.register(
        cfg.registered_name,
        source=model_uri,
        alias=alias,
        tags={
            **link,
            **split_tags(cfg, parts),
            "kts.blessed": champion,
            cfg.bless.metric: metrics.get(cfg.bless.metric, ""),
        },
    )
    return (version, alias) if version is not None else None
