"""The search: a HyperModel over the run config, a tuner factory and the search driver.

Space, algorithm and execution stay apart (keras-tuner's own split): `tuning.space`
declares the hyper-parameters (`tuning.space`), `make_tuner` picks the oracle
(random, grid, bayesian, hyperband) and the HyperModel builds and fits one trial
from the run's own model builder and trainer, on the run's one split: trials fit on
train and are scored on validation; test is never touched here. With
`tuning.kfold` each trial instead fits once per fold of train + validation and
scores the folds' mean.

Tuner state lives in ``runs/<name>/tuning/search-<id>/`` (``id`` hashes everything
that decides the search) and is reloaded (``overwrite=False``), so a killed search
started again with the same config continues without re-running finished trials.
In Keras-Tuner's distributed mode (``KERASTUNER_TUNER_ID`` etc.) the chief process
serves the oracle and workers run the trials.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.atomic import write_atomic
from service.config import RunConfig
from tuning.space import apply, declare, trial_values
from tuning.tracking import TrialTracker, log_summary

BuildFn = Callable[[RunConfig, Any, Any], Any]  # (cfg, dataset, train_rows) -> keras.Model


HISTORY_FILE = "kts_history.json"  # per trial dir: the Keras logs of each fit of the trial


@dataclass
class SearchResult:
    """What a search found: the best trial's config and the table of all trials.

    ``best_epochs`` is how many epochs of training are behind the best trial's best
    checkpoint (1-based; for a Hyperband trial continued from an earlier round, the
    earlier trials' epochs included; with k-fold, Keras-Tuner's mean over the folds,
    rounded down). ``retrain_epochs`` is how long `retrain_train_val` trains (see
    `retrain_epochs`) and ``retrain_epochs_from`` says why. ``best_model`` (the best
    trial's checkpoint, compiled) and ``best_history`` (that trial's per-epoch logs)
    are filled when `tuning.final` is ``best_weights``.
    """

    config: RunConfig
    best_values: dict[str, Any]
    best_score: float | None
    best_trial_id: str | None
    trials: list[dict[str, Any]] = field(default_factory=list)
    directory: str = ""
    best_epochs: int | None = None
    retrain_epochs: int | None = None
    retrain_epochs_from: str = ""
    best_history: dict[str, list[float]] | None = None
    best_model: Any = None


def search_id(cfg: RunConfig) -> str:
    """Hash of what decides a search (data, model, training, tuning, seed)."""
    data = cfg.to_dict()
    keep = {k: data[k] for k in ("seed", "data", "model", "training", "tuning")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


def search_dir(cfg: RunConfig) -> Path:
    """Where the tuner keeps its state: ``runs/<name>/tuning/``."""
    return cfg.run_dir / "tuning"


def trial_epochs(cfg: RunConfig) -> int:
    """Epochs of one trial: `tuning.epochs`, at most (and by default) `training.epochs`."""
    assert cfg.tuning is not None
    return min(cfg.tuning.epochs or cfg.training.epochs, cfg.training.epochs)


def folds(cfg: RunConfig, data: Any, split: Any) -> list[tuple[Any, Any]] | None:
    """The (fit rows, score rows) of `tuning.kfold` over train + validation, or None.

    Stratified when the split is (classification with `data.split.stratify`). Data
    cut in time order or by group cannot be shuffled into folds: a `UserError`.
    """
    import numpy as np

    from service.data.split import kfold
    from service.errors import UserError

    assert cfg.tuning is not None
    k = cfg.tuning.kfold
    if k is None:
        return None
    ordered = cfg.data.split.ordered if cfg.data.split.ordered is not None else data.ordered
    if ordered or data.groups is not None:
        kind = "time-ordered" if ordered else "grouped (data.group)"
        raise UserError(
            f"Invalid value for `tuning.kfold`: received {k} for {kind} data; expected null "
            "(shuffled folds would mix the past with the future or split a group)."
        )
    rows = np.sort(np.concatenate([split.train, split.validation]))
    stratify = cfg.data.split.stratify and data.task in ("multiclass", "binary")
    return kfold(data.y, rows, k=k, seed=cfg.seed, stratify=stratify)


def make_hypermodel(cfg: RunConfig, data: Any, split: Any, build_model: BuildFn) -> Any:
    """A `keras_tuner.HyperModel` whose trials are ``cfg`` with the trial's values applied."""
    import keras_tuner

    from service.training import trainer

    assert cfg.tuning is not None
    space = cfg.tuning.space
    tr, va = split.train, split.validation
    epochs = trial_epochs(cfg)

    validated: dict[str, RunConfig] = {}  # a trial's config is built twice (build, fit)

    def trial_config(hp: Any) -> RunConfig:
        values = declare(hp, space)
        values.setdefault("training.epochs", epochs)  # schedules span the trial's epochs
        key = json.dumps(values, sort_keys=True, default=str)
        if key not in validated:
            validated.clear()
            validated[key] = apply(cfg, values)
        return validated[key]

    class RunConfigHyperModel(keras_tuner.HyperModel):
        """Builds and fits one trial on ``rows`` (fit, score): the split's train and
        validation, or one k-fold fold while the tuner runs that fold."""

        rows: tuple[Any, Any] = (tr, va)

        def declare_hyperparameters(self, hp: Any) -> None:
            declare(hp, space)

        def build(self, hp: Any) -> Any:
            trial_cfg = trial_config(hp)
            fit_rows = self.rows[0]
            try:
                model = build_model(trial_cfg, data, fit_rows)
            except TypeError as err:
                # A type error is the builder's code, not this trial's values: no trial
                # can succeed, so it stops the search as Keras-Tuner's fatal errors do.
                raise keras_tuner.errors.FatalTypeError(
                    f"its builder raised TypeError: {err}"
                ) from err
            steps = max(1, math.ceil(len(fit_rows) / trial_cfg.training.batch_size))
            trainer.compile_model(model, trial_cfg.training, data.task, steps_per_epoch=steps)
            return model

        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
            trial_cfg = trial_config(hp)
            tr, va = self.rows
            callbacks = list(kwargs.pop("callbacks", []))
            if cfg.tuning is not None and cfg.tuning.early_stopping:
                callbacks += trainer.standard_callbacks(trial_cfg.training, backup_dir=None)
            return trainer.fit(
                model,
                cfg=trial_cfg,
                data=data,
                train_rows=tr,
                val_rows=va,
                epochs=kwargs.pop("epochs", epochs),
                initial_epoch=kwargs.pop("initial_epoch", 0),
                callbacks=callbacks,
                verbose=0,
            )

    return RunConfigHyperModel()


def _best_value(history: Any, metric: str, direction: str) -> float | None:
    values = [float(v) for v in history.history.get(metric, [])]
    if not values:
        return None
    return max(values) if direction == "max" else min(values)


def _save_histories(path: Path, results: Any, initial_epoch: int) -> None:
    """Write each fit's per-epoch logs of one trial (for `best_weights`' learning curves)."""
    histories = results if isinstance(results, list) else [results]
    logs = [
        {k: [float(v) for v in vals] for k, vals in h.history.items()}
        for h in histories
        if hasattr(h, "history")
    ]
    write_atomic(path, json.dumps({"initial_epoch": initial_epoch, "histories": logs}))


def _copied(callbacks: list) -> list:
    """Fresh copies of a trial's callbacks for one fit, as Keras-Tuner makes them: the
    same callbacks serve every trial, so one that cannot be deep-copied is fatal."""
    import copy

    import keras_tuner

    try:
        return copy.deepcopy(callbacks)
    except Exception:
        raise keras_tuner.errors.FatalValueError(
            "All callbacks used during a search should be deep-copyable (since they are "
            f"reused across trials). It is not possible to do `copy.deepcopy({callbacks})`"
        ) from None


def _tracked(
    base: type, cfg: RunConfig, trials: TrialTracker | None, fold_rows: list | None
) -> type:
    """``base`` (a Keras-Tuner tuner class) that logs each trial as an MLflow child run.

    With ``fold_rows`` (k-fold) a trial fits once per fold (times
    `executions_per_trial`); Keras-Tuner averages the fits' best-epoch logs, so the
    trial's score is the mean over folds. Each fold's score is logged on the trial's
    child run as ``fold_score`` (step = fold index) and its epochs as
    ``fold<i>_<metric>``.
    """
    import keras

    from service import compat as service_compat
    from tuning import compat

    assert cfg.tuning is not None
    space = cfg.tuning.space
    objective = cfg.tuning.objective
    # The child run is created while the model is built and awaited before its fit.
    lighter = compat.lighter_builds(
        base,
        declare_space=lambda hp: declare(hp, space),
        after_build=lambda tuner: tuner._child_run(),
    )

    class Tracked(lighter):  # type: ignore[misc, valid-type]
        _child: Any = None  # the trial's child-run Tracker, or the Future creating it
        _gradients: frozenset[str] = frozenset()
        _pool: ThreadPoolExecutor | None = None

        def _child_run(self) -> Any:
            """The trial's child-run tracker (None untracked), waiting for its creation."""
            if isinstance(self._child, Future):
                self._child = self._child.result()
            return self._child

        def on_trial_begin(self, trial: Any) -> None:
            super().on_trial_begin(trial)
            self._gradients = service_compat.traced_gradients()
            # No garbage collection here: Keras-Tuner collects before every build,
            # and a full collection costs ~0.5 s with TensorFlow's heap.
            keras.backend.clear_session(free_memory=False)
            keras.utils.set_random_seed(cfg.seed)  # every trial starts from the same seed
            self._child = None
            if trials is not None:
                values = trial_values(space, trial.hyperparameters.values)
                trial_dir = Path(self.get_trial_dir(trial.trial_id))
                # The child run is created (an HTTP round trip or two) while the
                # session is cleared and the model built, and awaited before the fit
                # (`tuning.compat.lighter_builds`, else the epoch logger).
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="kts-trial-run")
                self._child = self._pool.submit(trials.start, trial.trial_id, values, trial_dir)

        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
            values = trial.hyperparameters.values
            if fold_rows is not None:
                results = self._run_folds(trial, *args, **kwargs)
            else:
                if self._child is not None:
                    kwargs["callbacks"] = [*kwargs.get("callbacks", []), _epoch_logger(self)]
                results = super().run_trial(trial, *args, **kwargs)
            start = int(values.get("tuner/initial_epoch", 0))
            _save_histories(Path(self.get_trial_dir(trial.trial_id), HISTORY_FILE), results, start)
            return results

        def _run_folds(self, trial: Any, *args: Any, **kwargs: Any) -> list[Any]:
            assert fold_rows is not None
            hp = trial.hyperparameters
            child = self._child_run()
            callbacks = list(kwargs.pop("callbacks", []))
            histories = []
            default_rows = self.hypermodel.rows
            try:
                for index, rows in enumerate(fold_rows):
                    self.hypermodel.rows = rows
                    scores = []
                    for _ in range(self.executions_per_trial):
                        fold_callbacks = _copied(callbacks)
                        if child is not None:
                            fold_callbacks.append(_fold_epoch_callback(child, index))
                        model = compat.build_checked(self, hp)  # clears the session first
                        history = self.hypermodel.fit(
                            hp, model, *args, callbacks=fold_callbacks, **kwargs
                        )
                        histories.append(history)
                        value = _best_value(history, objective.metric, objective.direction)
                        if value is not None:
                            scores.append(value)
                    if child is not None and scores:
                        child.log_metrics({"fold_score": sum(scores) / len(scores)}, step=index)
            finally:
                self.hypermodel.rows = default_rows
            return histories

        def on_trial_end(self, trial: Any) -> None:
            # The child run is closed before the tuner saves the trial as done: a kill
            # in between re-runs the trial and replaces its unfinished child run.
            if self._child_run() is not None:
                score = None
                try:
                    metrics = self.oracle.get_trial(trial.trial_id).metrics
                    score = metrics.get_best_value(objective.metric)
                except Exception:  # no metric recorded (a failed trial)
                    score = None
                status = str(getattr(trial.status, "value", trial.status))
                TrialTracker.end(
                    self._child, status=status, score=score, message=trial.message or ""
                )
                self._child = None
            # The trial's models are done with: drop what TensorFlow keeps of their
            # traced graphs (without this every trial leaks its model, ~4 MB for a
            # tiny MLP); the garbage goes at the next build's collection.
            service_compat.release_traced(self._gradients)
            keras.backend.clear_session(free_memory=False)
            super().on_trial_end(trial)

    Tracked.__name__ = f"Tracked{base.__name__}"
    return Tracked


def make_tuner(
    cfg: RunConfig,
    hypermodel: Any,
    trials: TrialTracker | None = None,
    fold_rows: list | None = None,
    *,
    strategy: Any = None,
) -> Any:
    """The configured Keras-Tuner tuner, its state under `search_dir` (resumed, not overwritten).

    ``fold_rows`` (from `folds`) makes every trial a k-fold cross-validation;
    ``strategy`` is Keras-Tuner's ``distribution_strategy`` (models built in its scope).
    """
    import keras_tuner

    tuning = cfg.tuning
    assert tuning is not None
    common: dict[str, Any] = {
        "objective": keras_tuner.Objective(tuning.objective.metric, tuning.objective.direction),
        "executions_per_trial": tuning.executions_per_trial,
        "directory": str(search_dir(cfg)),
        "project_name": f"search-{search_id(cfg)}",
        "overwrite": False,
        "seed": cfg.seed if tuning.seed is None else tuning.seed,
        "max_retries_per_trial": 0,
        "max_consecutive_failed_trials": tuning.max_consecutive_failed_trials,
        "distribution_strategy": strategy,
    }
    bases = {
        "random": keras_tuner.RandomSearch,
        "grid": keras_tuner.GridSearch,
        "bayesian": keras_tuner.BayesianOptimization,
        "hyperband": keras_tuner.Hyperband,
    }
    cls = _tracked(bases[tuning.tuner], cfg, trials, fold_rows)
    if tuning.tuner == "hyperband":
        return cls(
            hypermodel, max_epochs=trial_epochs(cfg), factor=tuning.hyperband_factor, **common
        )
    return cls(hypermodel, max_trials=tuning.max_trials, **common)


def _epoch_logger(tuner: Any) -> Any:
    """A callback logging each epoch on the trial's child run (``tuner._child_run()``),
    looked up when training begins: the run is still being created when Keras-Tuner
    copies the trial's callbacks."""
    import keras

    class _TrialEpochs(keras.callbacks.Callback):
        inner: Any = None

        def on_train_begin(self, logs: Any = None) -> None:
            child = tuner._child_run()
            self.inner = child.epoch_callback() if child is not None else None

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if self.inner is not None:
                self.inner.on_epoch_end(epoch, logs)

        def on_train_end(self, logs: Any = None) -> None:
            if self.inner is not None:
                self.inner.on_train_end(logs)

    return _TrialEpochs()


def _fold_epoch_callback(child: Any, fold: int) -> Any:
    """Log one fold's epochs on the trial's child run as ``fold<i>_<metric>`` (step = epoch)."""
    import keras

    class FoldEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            metrics = {f"fold{fold}_{k}": float(v) for k, v in (logs or {}).items()}
            child.log_metrics(metrics, step=epoch, background=True)

        def on_train_end(self, logs: Any = None) -> None:
            child.flush()

    return FoldEpochs()


def _status(trial: Any) -> str:
    return str(getattr(trial.status, "value", trial.status))


def hyperband_pruned(oracle: Any) -> set[str]:
    """Completed Hyperband trials that a later round of their bracket did not continue.

    A trial of round ``r`` in bracket ``b`` (whose last round is ``b``) is promoted
    when a later trial names it in ``tuner/trial_id``; once the search is over, one
    with ``r < b`` that nobody continued was pruned.
    """
    promoted = {t.hyperparameters.values.get("tuner/trial_id") for t in oracle.trials.values()}
    pruned = set()
    for trial_id, trial in oracle.trials.items():
        values = trial.hyperparameters.values
        if "tuner/bracket" not in values or _status(trial) != "COMPLETED":
            continue
        if int(values["tuner/round"]) < int(values["tuner/bracket"]) and trial_id not in promoted:
            pruned.add(trial_id)
    return pruned


def trial_rows(oracle: Any, cfg: RunConfig, pruned: Collection[str] = ()) -> list[dict[str, Any]]:
    """One row per trial the oracle knows: id, status (``PRUNED`` if in ``pruned``),
    score, config values and, for Hyperband, the trial's epochs."""
    assert cfg.tuning is not None
    rows = []
    for trial_id, trial in sorted(oracle.trials.items()):
        row = {
            "trial_id": trial_id,
            "status": "PRUNED" if trial_id in pruned else _status(trial),
            "score": trial.score,
            "values": trial_values(cfg.tuning.space, trial.hyperparameters.values),
        }
        if "tuner/epochs" in trial.hyperparameters.values:
            row["epochs"] = int(trial.hyperparameters.values["tuner/epochs"])
        rows.append(row)
    return rows


def trained_epochs(oracle: Any, trial: Any) -> int:
    """Epochs of training behind ``trial``'s best checkpoint (its `SearchResult.best_epochs`).

    Keras-Tuner records the best epoch of the trial's own fits (``best_step``, the
    mean over executions or folds, rounded down); a Hyperband trial continued the
    best checkpoint of the trial named in ``tuner/trial_id``, whose epochs count too.
    """
    return int(trial.best_step) + 1 + _earlier_epochs(oracle, trial)


def _earlier_epochs(oracle: Any, trial: Any) -> int:
    """Epochs behind the checkpoint a Hyperband ``trial`` continued from (0 for others)."""
    previous = trial.hyperparameters.values.get("tuner/trial_id")
    if previous and previous in oracle.trials:
        return trained_epochs(oracle, oracle.trials[previous])
    return 0


def _histories(tuner: Any, trial: Any) -> list[dict[str, list[float]]]:
    """The per-epoch logs of each fit of ``trial`` (none if another machine ran it)."""
    path = Path(tuner.get_trial_dir(trial.trial_id), HISTORY_FILE)
    try:
        return list(json.loads(path.read_text())["histories"])
    except (OSError, ValueError, KeyError):
        return []


def retrain_epochs(cfg: RunConfig, tuner: Any, trial: Any) -> tuple[int, str]:
    """How long `tuning.final: retrain_train_val` trains, and where that number comes from.

    The epoch at which ``trial`` was best by `training.early_stopping.monitor`
    (``val_loss`` by default: what early stopping would have restored; the mean over
    folds, rounded), counted from 1 with a Hyperband trial's earlier rounds. A
    saturating objective such as ``val_accuracy`` ties early on small validation
    sets, which would cut the final training short. Without the trial's logs (run on
    another machine) or that metric: `trained_epochs`, the objective's best epoch.
    """
    assert cfg.tuning is not None
    monitor = cfg.training.early_stopping.monitor
    higher = cfg.training.early_stopping.direction == "max"
    picks = []
    for history in _histories(tuner, trial):
        values = history.get(monitor) or []
        if values:
            best = max(values) if higher else min(values)
            picks.append(values.index(best))
    if not picks:
        return (
            trained_epochs(tuner.oracle, trial),
            f"trial {trial.trial_id}: best {cfg.tuning.objective.metric} epoch",
        )
    epochs = _earlier_epochs(tuner.oracle, trial) + round(sum(picks) / len(picks)) + 1
    return epochs, f"trial {trial.trial_id}: best {monitor} epoch"


def best_trial_history(tuner: Any, trial: Any, objective: Any) -> dict[str, list[float]]:
    """The per-epoch logs of the fit that produced ``trial``'s best checkpoint.

    Falls back to the oracle's best-epoch metrics (one epoch) when the trial's
    history file is not on this machine (a worker elsewhere ran it).
    """
    histories = _histories(tuner, trial)
    scored = [h for h in histories if h.get(objective.metric)]
    if scored:
        pick = max if objective.direction == "max" else min
        return pick(scored, key=lambda h: pick(h[objective.metric]))
    return {
        name: [float(trial.metrics.get_best_value(name))]
        for name in trial.metrics.metrics
        if trial.metrics.get_best_value(name) is not None
    }


def run_search(
    cfg: RunConfig,
    data: Any,
    split: Any,
    *,
    build_model: BuildFn,
    tracker: Any = None,
    strategy: Any = None,
) -> SearchResult:
    """Search, then return the best trial's config (the configured one if none finished).

    With a ``tracker`` (the pipeline's run), every trial is a child run of it and it
    gets the best trial, a trials table and a picture of the score against each
    hyper-parameter. A Hyperband trial that no later round continued is marked
    ``PRUNED`` (table and child-run tag ``kts.trial_status``). In Keras-Tuner's
    distributed mode the chief only serves the oracle (this returns when the workers
    are done) and a worker only runs trials. ``strategy`` (a `tf.distribute`
    strategy, e.g. mirrored over a host's GPUs) is where every trial's model, and the
    best trial's reloaded model, are built.
    """
    assert cfg.tuning is not None
    fold_rows = folds(cfg, data, split)
    trials = TrialTracker(tracker, search_id(cfg)) if tracker is not None else None
    import keras_tuner

    from service.errors import UserError
    from tuning import compat

    hypermodel = make_hypermodel(cfg, data, split, build_model)
    # Keras-Tuner's fatal error for a builder that raises a type error or returns no
    # model (while the tuner is made, on a Keras-Tuner that builds to find the space,
    # or in the first trial): the search stops, and the model is at fault.
    try:
        with compat.atomic_state_files():
            tuner = make_tuner(cfg, hypermodel, trials, fold_rows, strategy=strategy)
            # Everything alive now (TensorFlow, the data) outlives the search: keep it
            # out of the garbage collector's scans. A trial's build collects garbage,
            # and a full collection otherwise walks TensorFlow's whole heap (0.5-4 s
            # each, most of a small trial's overhead). The trials' own garbage is still
            # collected; garbage frozen here (no collection first: that alone cost
            # seconds) is freed after.
            gc.freeze()
            try:
                tuner.search(epochs=trial_epochs(cfg), verbose=0)
            finally:
                gc.unfreeze()
    except keras_tuner.errors.FatalTypeError as err:
        raise UserError(
            f"Tuning stopped at model `{cfg.model.type}`: {err}".replace("\n", " ")
        ) from None
    if is_worker():
        return SearchResult(cfg, {}, None, None, [], str(search_dir(cfg)))
    oracle = tuner.oracle
    pruned = hyperband_pruned(oracle) if cfg.tuning.tuner == "hyperband" else set()
    rows = trial_rows(oracle, cfg, pruned)
    best_trials = oracle.get_best_trials(1)
    top = best_trials[0] if best_trials else None
    best = None
    if top is not None:
        best = {
            "trial_id": top.trial_id,
            "score": top.score,
            "values": trial_values(cfg.tuning.space, top.hyperparameters.values),
            "epochs": trained_epochs(oracle, top),
        }
    if trials is not None:
        if pruned:
            trials.set_status(dict.fromkeys(pruned, "PRUNED"))
        picture = Path(tuner.project_dir) / "scores.png"
        search_picture(cfg, rows, picture)
        log_summary(
            tracker, rows=rows, best=best, objective=cfg.tuning.objective.metric, picture=picture
        )
    if best is None or top is None:
        return SearchResult(cfg, {}, None, None, rows, str(search_dir(cfg)))
    result = SearchResult(
        apply(cfg, best["values"]),
        best["values"],
        best["score"],
        best["trial_id"],
        rows,
        str(search_dir(cfg)),
        best_epochs=best["epochs"],
    )
    result.retrain_epochs, result.retrain_epochs_from = retrain_epochs(cfg, tuner, top)
    if cfg.tuning.final == "best_weights":
        result.best_model = tuner.load_model(top)
        result.best_history = best_trial_history(tuner, top, cfg.tuning.objective)
    return result


def search_picture(cfg: RunConfig, rows: list[dict[str, Any]], path: Path) -> Path:
    """Draw the objective against each searched hyper-parameter to ``path`` (PNG)."""
    from service.reports.search import score_vs_hyperparameters

    assert cfg.tuning is not None
    space = cfg.tuning.space
    return score_vs_hyperparameters(
        rows,
        keys=list(space),
        log_keys=[k for k, spec in space.items() if spec.sampling == "log"],
        objective=cfg.tuning.objective.metric,
        direction=cfg.tuning.objective.direction,
        path=path,
    )


def is_worker() -> bool:
    """True in a Keras-Tuner worker process (an oracle address set, not the chief)."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get(
        "KERASTUNER_TUNER_ID", ""
    )
