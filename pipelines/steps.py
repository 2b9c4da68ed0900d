"""The pipeline's steps: each takes typed inputs and returns one typed result.

ingest -> split -> check -> train -> evaluate -> bless -> export -> register. Each step
checks that it produced what it promised (non-empty parts, finite metrics, a
loadable version folder) so a broken step fails where it broke.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import shutil
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from service.config import RunConfig
from service.data.sources import Dataset
from service.data.split import Split
from service.errors import UserError
from service.failpoints import failpoint


@dataclass(frozen=True)
class SplitResult:
    split: Split
    fingerprint: str
    class_counts: dict[str, dict[str, int]]
    skipped: dict[int, str] = field(default_factory=dict)  # bad rows left out (row -> why)
    rows_checked: int = 0


@dataclass(frozen=True)
class Trained:
    model: Any
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    loss: str
    initial_epoch: int = 0
    input_bound: bool = False


@dataclass(frozen=True)
class Evaluated:
    metrics: dict[str, float]
    predictions: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class Blessing:
    """The gate's verdict and what it compared.

    ``rows`` test rows (keys ``row_keys``) chosen by ``rule`` were scored; the
    scores are ``candidate_score`` and ``champion_score`` on those rows.
    """

    blessed: bool
    reason: str
    champion_version: str | None = None
    champion_score: float | None = None
    candidate_score: float | None = None
    rows: int | None = None
    rule: str | None = None
    row_keys: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ExportResult:
    path: str
    version: int


def ingest(cfg: RunConfig) -> Dataset:
    """Load and validate the configured data source."""
    from service.data import sources

    data = sources.load(cfg.data)
    if len(data) == 0:
        raise RuntimeError(f"ingest: source {cfg.data.source!r} produced no rows")
    return data


def split(cfg: RunConfig, data: Dataset) -> SplitResult:
    """Make the run's one train / validation / test split (by row key, `data.split.seed`)."""
    from service.data.split import make_split

    # An autoencoder's data may still carry class labels: they stratify the split.
    labelled = _labelled(data)
    result = make_split(
        data.y,
        cfg.data.split,
        keys=data.keys,
        classification=labelled,
        groups=data.groups,
        ordered=data.ordered,
        class_names=data.class_names,
    )
    for name, idx in result.parts().items():
        if len(idx) == 0:
            raise RuntimeError(f"split: the {name} part is empty")
    counts = result.class_counts(data.y) if labelled else {}
    return SplitResult(result, result.fingerprint, counts)


def _labelled(data: Dataset) -> bool:
    return data.task in ("multiclass", "binary") or (
        data.task == "reconstruction" and bool(data.class_names)
    )


def check(cfg: RunConfig, data: Dataset, parts: SplitResult) -> SplitResult:
    """The checking pass (`service.data.scan`): read the rows once, find bad rows and
    fit the train/validation statistics. A bad row is a `UserError` (nothing has been
    recorded yet) or, with ``data.on_bad_rows: skip``, is left out of its part."""
    from service.data.scan import bad_rows_error, needs_moments, scan

    found = scan(
        data,
        parts.split.parts(),
        validate=cfg.data.validate_rows,
        fit_moments=needs_moments(data, cfg.data.preprocessing),
        seed=cfg.seed,
    )
    if not found.bad:
        return replace(parts, rows_checked=found.rows_read)
    if cfg.data.on_bad_rows == "error":
        raise bad_rows_error(data, found.bad)
    bad = np.array(sorted(found.bad), dtype="int64")
    kept = {k: np.setdiff1d(v, bad) for k, v in parts.split.parts().items()}
    for name, idx in kept.items():
        if len(idx) == 0:
            raise UserError(
                f"data.on_bad_rows: skip left the {name} part empty ({len(bad)} bad rows, "
                f"first {data.reader.describe(int(bad[0]))}); expected usable rows in every part"
            )
    clean = Split(kept["train"], kept["validation"], kept["test"], parts.split.keys)
    counts = clean.class_counts(data.y) if _labelled(data) else {}
    return SplitResult(clean, clean.fingerprint, counts, dict(found.bad), found.rows_read)


def build_model(cfg: RunConfig, data: Dataset, train_rows: np.ndarray):
    """Preprocessing fitted on ``train_rows`` + the configured builder, as one model."""
    from service import models
    from service.data.preprocess import assemble, fit_preprocessing

    pre = fit_preprocessing(data, train_rows, cfg.data.preprocessing)
    options = dict(cfg.model.options)
    params = inspect.signature(models.entry(cfg.model.type).fn).parameters
    for key, value in pre.builder_options.items():
        if key in params:
            options.setdefault(key, value)
    if "task" in params:
        options.setdefault("task", data.task)
    if data.task == "reconstruction" and params["num_classes"].default is not None:
        raise UserError(
            f"Invalid value for `model.type`: received {cfg.model.type!r}, a model with a "
            "classifier head; data.task 'reconstruction' needs a model whose output is "
            "shaped as its input (e.g. conv_autoencoder)."
        )
    core = models.build(
        cfg.model.type, input_shape=pre.output_shape, num_classes=data.output_size, **options
    )
    if data.task == "regression":
        core = _with_target_scale(core, data.y[train_rows])
    elif data.task == "reconstruction":
        from service.data.scan import moments

        core = _with_input_range(cfg, core, pre.output_shape, moments(data, train_rows))
    return assemble(
        core,
        pre,
        raw_shape=data.input_shape,
        input_name=data.input_name,
        text=data.kind == "text",
    )


def _with_input_range(cfg: RunConfig, core, shape: tuple[int, ...], train: Any):
    """An autoencoder's output mapped back to the raw input range of the train split.

    The builder reconstructs in [0, 1] (sigmoid) or z-scores (linear) of its
    preprocessed input; a fixed affine layer maps that to the data's units, so the
    target is the raw input and the export answers in pixels. A model whose output is
    not shaped as its input cannot reconstruct: a `UserError`.
    """
    import keras

    produced = tuple(core.output_shape[1:])
    if produced != tuple(shape):
        raise UserError(
            f"Invalid value for `model.type`: received {cfg.model.type!r}, whose output "
            f"is {produced}; data.task 'reconstruction' needs an output shaped as its "
            f"input {tuple(shape)} (e.g. conv_autoencoder)."
        )
    low, high = float(train.low), float(train.high)  # the train rows' value range
    inputs = keras.Input(shape=core.input_shape[1:], dtype=core.inputs[0].dtype)
    outputs = keras.layers.Rescaling(
        scale=(high - low) or 1.0, offset=low, dtype="float32", name="input_range"
    )(core(inputs))
    return keras.Model(inputs, outputs, name=core.name)


def _with_target_scale(core, y_train: np.ndarray):
    """Regression heads learn standardized targets; this layer maps back to raw units.

    The train split's target mean and standard deviation become a fixed affine
    layer after the builder's output, so the exported model predicts in the
    data's units and the network only has to learn z-scores.
    """
    import keras

    mean = float(np.mean(y_train))
    std = float(np.std(y_train)) or 1.0
    inputs = keras.Input(shape=core.input_shape[1:], dtype=core.inputs[0].dtype)
    outputs = keras.layers.Rescaling(scale=std, offset=mean, dtype="float32", name="target_scale")(
        core(inputs)
    )
    return keras.Model(inputs, outputs, name=core.name)


def train(
    cfg: RunConfig,
    data: Dataset,
    parts: SplitResult,
    *,
    runtime: Any,
    callbacks: list,
    backup_dir: Path | None = None,
    fit_rows: np.ndarray | None = None,
    checkpoint: Path | None = None,
) -> Trained:
    """Build the configured model (preprocessing fitted on train only) and fit it.

    With ``fit_rows`` (train + validation, after a search) the model and its
    preprocessing are fitted on those rows for exactly `training.epochs` epochs,
    with no validation data (early stopping must then be off); its best epoch is
    the last.

    With ``checkpoint`` (a folder) the trained model is kept there (weights and what
    `Trained` says) before the epoch backup in ``backup_dir`` is removed, and a model
    found there for the same configuration and rows is loaded instead of training
    again: a run killed after training resumes with the model it trained.
    """
    from service.data.stream import Shard
    from service.training import trainer

    tr, va = parts.split.train, parts.split.validation
    if fit_rows is not None:
        tr, va = fit_rows, None
    shard = runtime.input_shard()
    shard = Shard(*shard) if shard else None
    steps_per_epoch = max(1, math.ceil(len(tr) / cfg.training.batch_size))
    runtime.reseed()
    with runtime.scope():
        model = build_model(cfg, data, tr)
        loss = trainer.compile_model(
            model, cfg.training, data.task, steps_per_epoch=steps_per_epoch
        )
    key = _trained_key(cfg, tr, va)
    saved = _load_trained(checkpoint, key, model) if checkpoint is not None else None
    if saved is not None:
        if backup_dir is not None:
            shutil.rmtree(backup_dir, ignore_errors=True)
        return saved
    if shard is not None:
        _record_shard(cfg, runtime, shard, tr)
    monitor = trainer.InputMonitor(len(shard.rows(tr)) if shard else len(tr))
    history = trainer.fit(
        model,
        cfg=cfg,
        data=data,
        train_rows=tr,
        val_rows=va,
        epochs=cfg.training.epochs,
        # Tracking callbacks first: an epoch is logged before it is backed up, and a
        # replayed epoch is not logged twice (the tracker skips logged steps).
        callbacks=callbacks
        + trainer.standard_callbacks(
            cfg.training,
            backup_dir=str(backup_dir) if backup_dir else None,
            keep_backup=checkpoint is not None,
        ),
        verbose=cfg.training.verbose,
        shard=shard,
        monitor=monitor,
    )
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    if not hist.get("loss") or not all(math.isfinite(v) for v in hist["loss"]):
        raise RuntimeError(f"train: loss is not finite: {hist.get('loss')}")
    first_epoch = int(history.epoch[0]) if history.epoch else 0
    monitor_name = cfg.training.early_stopping.monitor
    # The best epoch is early stopping's: by its monitor and direction (loss: lower).
    curve = hist.get(monitor_name, hist["loss"])
    higher = monitor_name in hist and cfg.training.early_stopping.direction == "max"
    best = int(np.argmax(curve) if higher else np.argmin(curve))
    if va is None:
        best = len(hist["loss"]) - 1  # no held-out data: the last epoch is the model
    trained = Trained(
        model,
        hist,
        first_epoch + len(hist["loss"]),
        first_epoch + best,
        loss,
        first_epoch,
        input_bound=monitor.input_bound,
    )
    if checkpoint is not None:
        _save_trained(checkpoint, key, trained)
        failpoint("train.saved")
        if backup_dir is not None:
            shutil.rmtree(backup_dir, ignore_errors=True)
    return trained


TRAINED_WEIGHTS = "model.weights.h5"
TRAINED_FACTS = "trained.json"


def _trained_key(cfg: RunConfig, train_rows: np.ndarray, val_rows: np.ndarray | None) -> str:
    """What decides a trained model: the whole configuration and the rows it saw."""
    digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    digest.update(np.ascontiguousarray(train_rows, dtype="int64").tobytes())
    digest.update(b"|" if val_rows is None else np.ascontiguousarray(val_rows, "int64").tobytes())
    return digest.hexdigest()[:16]


def _save_trained(folder: Path, key: str, trained: Trained) -> None:
    """The weights, then the facts naming them (the facts file is the commit point)."""
    from service.atomic import atomic_path, write_atomic

    with atomic_path(folder / TRAINED_WEIGHTS) as tmp:
        trained.model.save_weights(str(tmp))
    facts = {f.name: getattr(trained, f.name) for f in fields(trained) if f.name != "model"}
    facts["key"] = key
    write_atomic(folder / TRAINED_FACTS, json.dumps(facts))


def _load_trained(folder: Path, key: str, model: Any) -> Trained | None:
    """The model checkpointed for ``key`` loaded into ``model``; None when there is none."""
    try:
        facts = json.loads((folder / TRAINED_FACTS).read_text())
    except (OSError, ValueError):
        return None
    if facts.pop("key", None) != key:
        return None
    try:
        model.load_weights(str(folder / TRAINED_WEIGHTS))
    except Exception:  # unreadable or another architecture: train again
        return None
    return Trained(model=model, **facts)


def _record_shard(cfg: RunConfig, runtime: Any, shard: Any, rows: np.ndarray):
    """Write which rows this worker reads (``runs/<name>/shards/<task>.npy``), so who
    read what can be checked after a multi-worker run."""
    folder = cfg.run_dir / "shards"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{runtime.task.replace('/', '-')}.npy", shard.rows(np.asarray(rows)))


def evaluate(cfg: RunConfig, data: Dataset, parts: SplitResult, trained: Trained) -> Evaluated:
    """Score the trained model once on the test split (streamed)."""
    from service.training import trainer

    result = trainer.evaluate(
        trained.model,
        data,
        parts.split.test,
        cfg=cfg,
        task=data.task,
        loss=trained.loss,
    )
    if not all(math.isfinite(v) for v in result.metrics.values()):
        raise RuntimeError(f"evaluate: non-finite test metrics {result.metrics}")
    return Evaluated(result.metrics, result.predictions)


def export(
    cfg: RunConfig,
    data: Dataset,
    trained: Trained,
    *,
    warmup_rows: np.ndarray | None = None,
    base_path: str | None = None,
    attempt: str | None = None,
    fingerprint: str | None = None,
) -> ExportResult:
    """Write the next TF-Serving version of the model (warm-up requests from ``warmup_rows``)
    and list it in ``models.config`` as ``canary`` (`serving.config.register_version`).

    ``attempt`` (the run's attempt token, see `pipelines.runner.RunState`) is written
    into the version's ``kts_metadata.json``: a run started again after a kill finds
    the version it already wrote and lists that one, instead of writing a second.
    ``fingerprint`` (the run's split) is written there too: the bless gate compares a
    later run with this version on its own test part when the registry cannot be read.
    """
    from serving.config import register_version
    from serving.export import MODEL_CONFIG_NAME, Exported, export_saved_model, find_version

    base = base_path or cfg.export.base_path
    model_dir = Path(base) / cfg.export_name
    out: Exported | None = find_version(model_dir, ATTEMPT_KEY, attempt) if attempt else None
    if out is None:
        metadata = {k: v for k, v in ((ATTEMPT_KEY, attempt), (SPLIT_KEY, fingerprint)) if v}
        warmup = None
        if warmup_rows is not None and len(warmup_rows):
            # The first rows: read without a full pass.
            warmup = data.take(np.sort(warmup_rows)[:8])
            warmup = warmup.astype(str) if data.kind == "text" else warmup
        try:
            out = export_saved_model(
                trained.model,
                base_path=base,
                model_name=cfg.export_name,
                input_name=data.input_name,
                task=data.task,
                class_names=data.class_names,
                warmup_inputs=warmup,
                update_model_config=False,
                metadata=metadata,
            )
        except OSError as err:
            # The preflight found the folder writable; it changed during the run (a full
            # disk, a mount gone read-only, a file put in its place).
            field = "export.base_path" if base_path is None else "work_dir"  # a run-folder copy
            raise UserError(
                f"Invalid value for `{field}`: received {base!r}; writing the export "
                f"failed ({err.strerror or err}: {err.filename or base}); expected a folder this "
                "process can write in."
            ) from None
        if not (out.path / "saved_model.pb").is_file():
            raise RuntimeError(f"export: {out.path} has no saved_model.pb")
    failpoint("export.written" if base_path is None else "challenger.exported")
    register_version(
        Path(base) / MODEL_CONFIG_NAME,
        model_name=cfg.export_name,
        base_path=model_dir,
        version=out.version,
    )
    if base_path is None:
        failpoint("export.labelled")
    return ExportResult(str(out.path.resolve()), out.version)


ATTEMPT_KEY = "kts_attempt"  # in kts_metadata.json: the attempt token of the run that wrote it
SPLIT_KEY = "kts_split_fingerprint"  # in kts_metadata.json: the split of the run that wrote it
