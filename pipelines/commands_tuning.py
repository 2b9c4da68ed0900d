"""`kts tune-chief` and `kts tune-worker`: a search spread over processes or pods.

Keras-Tuner's own distributed mode: every process reads ``KERASTUNER_TUNER_ID``,
``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``; the chief (an id with
``chief`` in it) serves the oracle over gRPC and workers ask it for trials, run
them and report back. Workers wait for a late chief and exit 0 when the oracle says
the search is done; the chief returns once every worker has been told so. The
chief owns the MLflow parent run (tagged with the search id); workers find it and
log each trial as its child run. Tuning only picks hyper-parameters: a following
``kts run`` of the same config reloads the finished search and trains the best.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from pipelines.options import set_option
from service.errors import UserError

DEFAULT_PORT = "8000"
PARENT_WAIT_S = float(os.environ.get("KTS_TUNING_PARENT_WAIT_S", "300"))


def _set_role(role: str) -> None:
    """Fill in Keras-Tuner's variables for ``role``; a contradicting id is a `UserError`."""
    env = os.environ
    tuner_id = env.get("KERASTUNER_TUNER_ID")
    if role == "chief":
        tuner_id = env.setdefault("KERASTUNER_TUNER_ID", "chief")
        env.setdefault("KERASTUNER_ORACLE_IP", "0.0.0.0")
        if "chief" not in tuner_id:
            raise UserError(
                f"Invalid value for `KERASTUNER_TUNER_ID`: received {tuner_id!r}; "
                "the chief's id must contain 'chief' (e.g. 'chief')."
            )
    else:
        if "KERASTUNER_ORACLE_IP" not in env:
            raise UserError(
                "Missing `KERASTUNER_ORACLE_IP`: received nothing; expected the chief's "
                "address (host name or IP of `kts tune-chief`)."
            )
        tuner_id = env.setdefault(
            "KERASTUNER_TUNER_ID", f"tuner-{os.uname().nodename}-{os.getpid()}"
        )
        if "chief" in tuner_id:
            raise UserError(
                f"Invalid value for `KERASTUNER_TUNER_ID`: received {tuner_id!r}; "
                "a worker's id must not contain 'chief'."
            )
    port = env.setdefault("KERASTUNER_ORACLE_PORT", DEFAULT_PORT)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(
            f"Invalid value for `KERASTUNER_ORACLE_PORT`: received {port!r}; "
            "expected a port number 1-65535."
        )


def _find_parent(cfg: Any, search: str) -> Any:
    """The chief's open parent run of this search (waits for a late chief), or None."""
    from mlflow.tracking import MlflowClient

    from service.tracking import Tracker, resolve_uri
    from tuning.tracking import SEARCH_TAG

    uri = resolve_uri(cfg.tracking.uri)
    client = MlflowClient(tracking_uri=uri)
    deadline = time.monotonic() + PARENT_WAIT_S
    while True:
        try:
            exp = client.get_experiment_by_name(cfg.experiment)
            runs = (
                client.search_runs(
                    [exp.experiment_id],
                    # The chief's run only: trials' child runs carry the search tag too.
                    filter_string=f"tags.`{SEARCH_TAG}` = '{search}' "
                    "and tags.`kts.tuning.role` = 'chief' and attributes.status = 'RUNNING'",
                    max_results=1,
                )
                if exp is not None
                else []
            )
        except Exception:  # the store may not exist yet (the chief creates it)
            runs = []
        if runs:
            return Tracker(client, runs[0].info.run_id, cfg.experiment, uri, "")
        if time.monotonic() > deadline:
            sys.stderr.write(
                f"kts: warning: no running tune-chief parent run for search {search} after "
                f"{PARENT_WAIT_S:.0f}s; this worker's trials are not tracked.\n"
            )
            return None
        time.sleep(1.0)


def _tune(config: Path, overrides: tuple[str, ...], role: str) -> None:
    from service.config import load_config

    cfg = load_config(config, overrides)
    if cfg.tuning is None:
        raise UserError(f"{config}: `tuning` is not set; add a tuning section with a space.")
    _set_role(role)
    from pipelines.stderr import quiet_tensorflow

    quiet_tensorflow()
    from pipelines import steps
    from service.tracking import Tracker
    from service.training.runtime import configure
    from tuning.search import run_search, search_id
    from tuning.tracking import SEARCH_TAG

    # A worker's trials use the configured strategy (several GPUs of one pod: mirrored);
    # the chief only serves the oracle.
    distribution = cfg.training.distribution if role == "worker" else "none"
    runtime = configure(seed=cfg.seed, precision=cfg.training.precision, distribution=distribution)
    data = steps.ingest(cfg)
    parts = steps.split(cfg, data)
    search = search_id(cfg)
    tracker = None
    if cfg.tracking.enabled:
        if role == "chief":
            tracker = Tracker.start(
                uri=cfg.tracking.uri,
                experiment=cfg.experiment,
                run_name=f"{cfg.name}-search",
                required=cfg.tracking.required,
                fallback_dir=cfg.run_dir,
                tags={SEARCH_TAG: search, "kts.tuning.role": "chief"},
            )
        else:
            tracker = _find_parent(cfg, search)
    try:
        result = run_search(
            cfg,
            data,
            parts.split,
            build_model=steps.build_model,
            tracker=tracker,
            strategy=runtime.distributed_strategy,
        )
    except BaseException:
        if tracker is not None and role == "chief":
            tracker.end("FAILED")
        raise
    if role == "chief":
        if tracker is not None:
            tracker.end("FINISHED")
        done = sum(r["status"] == "COMPLETED" for r in result.trials)
        click.echo(f"search {search}: {done}/{len(result.trials)} trials completed")
        click.echo(f"best trial: {result.best_trial_id} (score {result.best_score})")
        for key, value in sorted(result.best_values.items()):
            click.echo(f"  {key} = {value}")
    else:
        click.echo(f"worker {os.environ['KERASTUNER_TUNER_ID']}: search {search} is done")


config_argument = click.argument("config", type=click.Path(dir_okay=False, path_type=Path))


@click.command("tune-chief")
@config_argument
@set_option
def tune_chief(config: Path, overrides: tuple[str, ...]) -> None:
    """Serve the search in CONFIG to workers (Keras-Tuner's oracle); exit when it is done.

    Reads KERASTUNER_TUNER_ID (default 'chief'), KERASTUNER_ORACLE_IP (address to
    bind, default 0.0.0.0) and KERASTUNER_ORACLE_PORT (default 8000). CONFIG and any
    --set must match the workers'.
    """
    _tune(config, overrides, "chief")


@click.command("tune-worker")
@config_argument
@set_option
def tune_worker(config: Path, overrides: tuple[str, ...]) -> None:
    """Run trials of the search in CONFIG for the chief at KERASTUNER_ORACLE_IP:PORT.

    Each worker needs its own KERASTUNER_TUNER_ID (without 'chief'); it exits 0
    when the chief says the search is done. CONFIG and any --set must match the chief's.
    """
    _tune(config, overrides, "worker")
