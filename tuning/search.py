"""The search: a HyperModel over the run config, a tuner factory and the search driver.

Space, algorithm and execution stay apart (keras-tuner's own split): `tuning.space`
declares the hyper-parameters (`tuning.space`), `make_tuner` picks the oracle
(random, grid, bayesian, hyperband) and the HyperModel builds and fits one trial
from the run's own model builder and trainer, on the run's one split: trials fit on
train and are scored on validation; test is never touched here.

Tuner state lives in ``runs/<name>/tuning/search-<id>/`` (``id`` hashes everything
that decides the search) and is reloaded (``overwrite=False``), so a killed search
started again with the same config continues without re-running finished trials.
In Keras-Tuner's distributed mode (``KERASTUNER_TUNER_ID`` etc.) the chief process
serves the oracle and workers run the trials.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.config import RunConfig
from tuning.space import apply, declare, trial_values
from tuning.tracking import TrialTracker, log_summary

BuildFn = Callable[[RunConfig, Any, Any], Any]  # (cfg, dataset, train_rows) -> keras.Model


@dataclass
class SearchResult:
    """What a search found: the best trial's config and the table of all trials."""

    config: RunConfig
    best_values: dict[str, Any]
    best_score: float | None
    best_trial_id: str | None
    trials: list[dict[str, Any]] = field(default_factory=list)
    directory: str = ""


def search_id(cfg: RunConfig) -> str:
    """Hash of what decides a search (data, model, training, tuning, seed)."""
    data = cfg.to_dict()
    keep = {k: data[k] for k in ("seed", "data", "model", "training", "tuning")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


def search_dir(cfg: RunConfig) -> Path:
    """Where the tuner keeps its state: ``runs/<name>/tuning/``."""
    return cfg.run_dir / "tuning"


def trial_epochs(cfg: RunConfig) -> int:
    assert cfg.tuning is not None
    return cfg.tuning.epochs or cfg.training.epochs


def make_hypermodel(cfg: RunConfig, data: Any, split: Any, build_model: BuildFn) -> Any:
    """A `keras_tuner.HyperModel` whose trials are ``cfg`` with the trial's values applied."""
    import keras_tuner

    from service.training import trainer

    assert cfg.tuning is not None
    space = cfg.tuning.space
    tr, va = split.train, split.validation
    epochs = trial_epochs(cfg)

    def trial_config(hp: Any) -> RunConfig:
        values = declare(hp, space)
        values.setdefault("training.epochs", epochs)  # schedules span the trial's epochs
        return apply(cfg, values)

    def one_hot(trial_cfg: RunConfig) -> int | None:
        return data.num_classes if trial_cfg.training.loss == "categorical_crossentropy" else None

    class RunConfigHyperModel(keras_tuner.HyperModel):
        def build(self, hp: Any) -> Any:
            trial_cfg = trial_config(hp)
            model = build_model(trial_cfg, data, tr)
            steps = max(1, math.ceil(len(tr) / trial_cfg.training.batch_size))
            trainer.compile_model(model, trial_cfg.training, data.task, steps_per_epoch=steps)
            return model

        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
            trial_cfg = trial_config(hp)
            bs = trial_cfg.training.batch_size
            hot = one_hot(trial_cfg)
            train_ds = trainer.make_dataset(
                data.x[tr], data.y[tr], batch_size=bs, shuffle=True, seed=cfg.seed, one_hot=hot
            )
            val_ds = trainer.make_dataset(
                data.x[va], data.y[va], batch_size=bs, shuffle=False, seed=0, one_hot=hot
            )
            callbacks = list(kwargs.pop("callbacks", []))
            if cfg.tuning is not None and cfg.tuning.early_stopping:
                callbacks += trainer.standard_callbacks(trial_cfg.training, backup_dir=None)
            weights = (
                trainer.class_weights(trial_cfg.training, data.y[tr], data.class_names)
                if data.task in ("multiclass", "binary")
                else None
            )
            return model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=kwargs.pop("epochs", epochs),
                initial_epoch=kwargs.pop("initial_epoch", 0),
                callbacks=callbacks,
                verbose=0,
                class_weight=weights,
                shuffle=False,
            )

    return RunConfigHyperModel()


def _tracked(base: type, cfg: RunConfig, trials: TrialTracker | None) -> type:
    """``base`` (a Keras-Tuner tuner class) that logs each trial as an MLflow child run."""
    import keras

    assert cfg.tuning is not None
    space = cfg.tuning.space
    objective = cfg.tuning.objective

    class Tracked(base):  # type: ignore[misc, valid-type]
        _child: Any = None

        def _populate_initial_space(self) -> None:
            # Declaring the space is enough (the default builds whole models to find
            # the conditional hyper-parameters, which `declare` registers directly).
            hp = self.oracle.get_space()
            declare(hp, space)
            self.oracle.update_space(hp)

        def on_trial_begin(self, trial: Any) -> None:
            super().on_trial_begin(trial)
            keras.backend.clear_session()
            keras.utils.set_random_seed(cfg.seed)  # every trial starts from the same seed
            self._child = None
            if trials is not None:
                values = trial_values(space, trial.hyperparameters.values)
                self._child = trials.start(trial.trial_id, values)

        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
            if self._child is not None:
                kwargs["callbacks"] = [*kwargs.get("callbacks", []), self._child.epoch_callback()]
            return super().run_trial(trial, *args, **kwargs)

        def on_trial_end(self, trial: Any) -> None:
            # The child run is closed before the tuner saves the trial as done: a kill
            # in between re-runs the trial and replaces its unfinished child run.
            if self._child is not None:
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
            keras.backend.clear_session()
            super().on_trial_end(trial)

    Tracked.__name__ = f"Tracked{base.__name__}"
    return Tracked


def make_tuner(cfg: RunConfig, hypermodel: Any, trials: TrialTracker | None = None) -> Any:
    """The configured Keras-Tuner tuner, its state under `search_dir` (resumed, not overwritten)."""
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
    }
    bases = {
        "random": keras_tuner.RandomSearch,
        "grid": keras_tuner.GridSearch,
        "bayesian": keras_tuner.BayesianOptimization,
        "hyperband": keras_tuner.Hyperband,
    }
    cls = _tracked(bases[tuning.tuner], cfg, trials)
    if tuning.tuner == "hyperband":
        return cls(
            hypermodel, max_epochs=trial_epochs(cfg), factor=tuning.hyperband_factor, **common
        )
    return cls(hypermodel, max_trials=tuning.max_trials, **common)


def trial_rows(oracle: Any, cfg: RunConfig) -> list[dict[str, Any]]:
    """One row per trial the oracle knows: id, status, score and config values."""
    assert cfg.tuning is not None
    rows = []
    for trial_id, trial in sorted(oracle.trials.items()):
        status = str(getattr(trial.status, "value", trial.status))
        rows.append(
            {
                "trial_id": trial_id,
                "status": status,
                "score": trial.score,
                "values": trial_values(cfg.tuning.space, trial.hyperparameters.values),
            }
        )
    return rows


def run_search(
    cfg: RunConfig,
    data: Any,
    split: Any,
    *,
    build_model: BuildFn,
    tracker: Any = None,
) -> SearchResult:
    """Search, then return the best trial's config (the configured one if none finished).

    With a ``tracker`` (the pipeline's run), every trial is a child run of it and it
    gets the best trial and a trials table. In Keras-Tuner's distributed mode the
    chief only serves the oracle (this returns when the workers are done) and a
    worker only runs trials.
    """
    assert cfg.tuning is not None
    trials = TrialTracker(tracker, search_id(cfg)) if tracker is not None else None
    tuner = make_tuner(cfg, make_hypermodel(cfg, data, split, build_model), trials)
    tuner.search(epochs=trial_epochs(cfg), verbose=0)
    if is_worker():
        return SearchResult(cfg, {}, None, None, [], str(search_dir(cfg)))
    rows = trial_rows(tuner.oracle, cfg)
    best_trials = tuner.oracle.get_best_trials(1)
    best = None
    if best_trials:
        top = best_trials[0]
        best = {
            "trial_id": top.trial_id,
            "score": top.score,
            "values": trial_values(cfg.tuning.space, top.hyperparameters.values),
        }
    if tracker is not None:
        log_summary(tracker, rows=rows, best=best, objective=cfg.tuning.objective.metric)
    if best is None:
        return SearchResult(cfg, {}, None, None, rows, str(search_dir(cfg)))
    return SearchResult(
        apply(cfg, best["values"]),
        best["values"],
        best["score"],
        best["trial_id"],
        rows,
        str(search_dir(cfg)),
    )


def is_worker() -> bool:
    """True in a Keras-Tuner worker process (an oracle address set, not the chief)."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get(
        "KERASTUNER_TUNER_ID", ""
    )
