"""MLflow tracking for a pipeline run.

Tracking must never break training (the house rule borrowed from MLflow's own Keras
callback): once the run is open, a failing tracking call is reported once on
stderr and training goes on. In strict mode (``KTS_STRICT=1``, `service.strict`;
the test suite sets it) tracking errors are raised instead, so they get fixed.

An unreachable tracking server at start is a user problem (exit 2, naming the
URI) unless ``tracking.required: false``, in which case the run records into a
local SQLite store that the summary names.

A local SQLite store is created kill-safely (`ensure_sqlite_store`): MLflow's schema
migrations run on a temporary file that is renamed into place when they are done, so
a kill during the first run never leaves a store no later run can open.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from service.errors import UserError
from service.failpoints import failpoint
from service.strict import strict

DEFAULT_URI = "sqlite:///mlflow.db"

# MLflow 3 sends usage telemetry from a background thread: pointless in air-gapped
# clusters, and its thread edits os.environ while HTTP calls iterate it (KeyError
# '_MLFLOW_TELEMETRY_SESSION_ID' seen here). Off unless the user turns it on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def resolve_uri(configured: str | None) -> str:
    """`tracking.uri`, else ``$MLFLOW_TRACKING_URI``, else the embedded SQLite store."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def check_reachable(uri: str, timeout: float = 5.0) -> str | None:
    """Return None if the store at ``uri`` answers, else a short reason."""
    if not uri.startswith(("http://", "https://")):
        return None
    import requests

    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as err:
        return type(err).__name__
    return None if response.ok else f"HTTP {response.status_code}"


def unreachable_error(uri: str, reason: str) -> UserError:
    """The one message for a required tracking server that does not answer."""
    return UserError(
        f"tracking.uri: the MLflow tracking server at {uri} is unreachable "
        f"({reason}); start it, fix the URI, or set tracking.required: false."
    )


def default_run_name(prefix: str) -> str:
    """``<prefix>-<UTC yyyymmdd-HHMMSS>-<4 hex>``: distinct for every run of a config.

    Not MLflow's generated names: those come from Python's `random`, which the run has
    just seeded, so every run of one config would get the same name.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{prefix}-{stamp}-{os.urandom(2).hex()}"


# ------------------------------------------------------------ the local store
SQLITE_HEADER = b"SQLite format 3\x00"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI; None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def new_experiment_artifacts(uri: str) -> str | None:
    """Where `Tracker.start` puts a new experiment's artifacts (None: the store decides).

    Beside a non-default SQLite file (``mlartifacts/``), not in the working directory.
    """
    db = sqlite_path(uri)
    if db is None or uri == DEFAULT_URI:
        return None
    return (db.parent / "mlartifacts").resolve().as_uri()


def local_artifact_folder(uri: str, experiment: str) -> Path | None:
    """The local folder runs of ``experiment`` in the SQLite store ``uri`` write artifacts
    to (the experiment's own location if it exists), or None when they go elsewhere."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    db = sqlite_path(uri)
    if db is None:
        return None
    location = None
    if db.is_file() and db.stat().st_size:
        import sqlite3

        try:
            con = sqlite3.connect(str(db), timeout=60)
            try:
                row = con.execute(
                    "SELECT artifact_location FROM experiments WHERE name = ?", (experiment,)
                ).fetchone()
            finally:
                con.close()
        except sqlite3.Error:
            row = None  # not (yet) an MLflow schema: the store's default applies
        location = row[0] if row else None
    # MLflow's default root for a SQLite store: ./mlruns of the working directory.
    location = location or new_experiment_artifacts(uri) or str(Path("mlruns").resolve())
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    return Path(location) if not parsed.scheme else None


def _store_contents(db: Path) -> tuple[list[str], dict[str, int]]:
    """(tables a schema migration left behind, rows in runs and registered_models) of ``db``.

    Opened with the standard library: a hot journal of a killed writer is rolled
    back, nothing else is changed. MLflow's table names are read, not its code run.
    """
    import sqlite3

    con = sqlite3.connect(str(db), timeout=60)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        records = {
            table: int(con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            if table in tables
            else 0
            for table in ("runs", "registered_models")
        }
    finally:
        con.close()
    return sorted(t for t in tables if t.startswith("_alembic_tmp_")), records


def _half_created_error(db: Path, problem: str, records: dict[str, int]) -> UserError:
    held = ", ".join(f"{n} in {table}" for table, n in records.items())
    return UserError(
        f"tracking.uri: {db} is an MLflow store whose schema migration was interrupted "
        f"({problem}) and it holds records ({held}), so it is not rebuilt; back it up, "
        f"then repair it with `mlflow db upgrade sqlite:///{db.resolve()}` (first dropping "
        "any _alembic_tmp_* table), or point tracking.uri at another store."
    )


def check_sqlite_file(db: Path) -> None:
    """Raise `UserError` unless ``db`` is absent, empty, or an SQLite store MLflow can open
    (a half-created one holding no runs is fine: `ensure_sqlite_store` rebuilds it)."""
    if not db.exists():
        return
    if not db.is_file():
        raise UserError(
            f"Invalid value for `tracking.uri`: received sqlite:///{db}; {db} is not a file; "
            "expected the path of an SQLite database file (created if missing)."
        )
    try:
        with db.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as err:
        raise UserError(f"tracking.uri: cannot read {db} ({err.strerror}).") from None
    if not os.access(db, os.W_OK):
        raise UserError(
            f"Invalid value for `tracking.uri`: received sqlite:///{db}; {db} is read-only; "
            "expected an SQLite store this process can write to."
        )
    if head and head != SQLITE_HEADER:
        raise UserError(
            f"Invalid value for `tracking.uri`: received sqlite:///{db}; {db} is not an SQLite "
            "database; expected an MLflow SQLite store or a path where one can be created."
        )
    if head:
        leftovers, records = _store_contents(db)
        if leftovers and any(records.values()):
            raise _half_created_error(db, f"table {leftovers[0]} left over", records)


@contextmanager
def _creation_lock(db: Path) -> Iterator[None]:
    """Serialise store creation and repair between processes (a hidden lock file)."""
    import fcntl

    with open(db.with_name(f".{db.name}.create.lock"), "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        except OSError:
            pass  # a file system without locks: creation still goes through a temp file
        yield


def _temp_stores(db: Path) -> list[Path]:
    return sorted(db.parent.glob(f".{db.name}.creating-*"))


def _create_store(db: Path) -> None:
    """Run MLflow's migrations on a temporary file, then rename it to ``db``.

    Called under `_creation_lock`: a temporary file found here belongs to a creator
    that was killed, and is removed.
    """
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for leftover in _temp_stores(db):
        leftover.unlink(missing_ok=True)
    tmp = db.with_name(f".{db.name}.creating-{os.getpid()}")
    try:
        store = SqlAlchemyStore(f"sqlite:///{tmp.resolve()}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
        store.engine.dispose()
        failpoint("store.migrated")
        os.replace(tmp, db)
    finally:
        for path in (tmp, tmp.with_name(tmp.name + "-journal")):
            path.unlink(missing_ok=True)


def _rebuild(db: Path, problem: str) -> None:
    """Move a half-created store holding nothing aside and create a fresh one."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    aside = db.with_name(f"{db.name}.broken-{stamp}")
    os.replace(db, aside)
    journal = db.with_name(db.name + "-journal")
    if journal.exists():
        os.replace(journal, aside.with_name(aside.name + "-journal"))
    sys.stderr.write(
        f"kts: note: {db} was a half-created MLflow store ({problem}; no runs inside): "
        f"moved it to {aside.name} and created a new one.\n"
    )
    _create_store(db)


def ensure_sqlite_store(db: Path, *, repair: str | None = None) -> None:
    """Make ``db`` a complete MLflow store, kill-safely.

    A missing (or empty) store is created under a temporary name in the same folder and
    renamed into place once MLflow's schema migrations are done; a kill at any point
    leaves either no store or a complete one (and a temporary file the next creator
    removes). A store whose migration was interrupted by an older version (tables named
    ``_alembic_tmp_*``) is moved aside and rebuilt when it holds no runs or registered
    models, else `UserError` says how to repair it. ``repair`` (why MLflow could not
    open the store) forces that decision for a store without left-over tables.
    """
    db.parent.mkdir(parents=True, exist_ok=True)
    healthy = db.is_file() and db.stat().st_size > 0 and repair is None
    if healthy and not _store_contents(db)[0] and not _temp_stores(db):
        return  # the common case: no lock, no MLflow import
    with _creation_lock(db):
        if not db.is_file() or db.stat().st_size == 0:
            _create_store(db)
            return
        leftovers, records = _store_contents(db)
        problem = f"table {leftovers[0]} left over" if leftovers else repair
        if problem is None:
            for leftover in _temp_stores(db):  # a creator killed after its rename
                leftover.unlink(missing_ok=True)
            return
        if any(records.values()):
            raise _half_created_error(db, problem, records)
        _rebuild(db, problem)


def open_client(uri: str) -> Any:
    """An `MlflowClient` on ``uri``; a local SQLite store is made complete first.

    An existing SQLite store MLflow cannot open (an interrupted migration without
    left-over tables, an out-of-date schema) is rebuilt when it holds nothing, else a
    `UserError` names it and the repair.
    """
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    db = sqlite_path(uri)
    if db is None:
        return MlflowClient(tracking_uri=uri)
    check_sqlite_file(db)
    ensure_sqlite_store(db)
    client = MlflowClient(tracking_uri=uri)
    try:
        client.search_experiments(max_results=1)  # opens (and verifies) the store now
    except Exception as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        ensure_sqlite_store(db, repair=f"MLflow could not open it: {reason}")
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    return client


ATTEMPT_TAG = "kts.attempt"  # names the attempt (state.json) that created a run


def _run_of_attempt(client: Any, exp_id: str, attempt: str) -> str | None:
    """The run created by ``attempt`` in experiment ``exp_id``, if there is one."""
    found = client.search_runs(
        [exp_id], filter_string=f"tags.`{ATTEMPT_TAG}` = '{attempt}'", max_results=1
    )
    return found[0].info.run_id if found else None


PROBE_TIMEOUT_S = 5.0  # the /health probe after a failed call
NOTE_ITEMS = 8  # calls a note names before "and N more"


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class Guard:
    """The tracking rule for one run and the trial runs under it (state they share).

    `call` runs one MLflow call. A failure is reported once on stderr (one line) and
    the run goes on; the call's name is remembered for the run's summary (`note`). When
    the store is an HTTP tracking server and its ``/health`` no longer answers after a
    failed call, tracking is *lost*: no further call is sent in this run (each would
    first wait out MLflow's own retries, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, minutes
    by default) and each one skipped is remembered too. Other failures (a deleted run,
    a refused request) lose only that call. In strict mode (`service.strict`) the
    failure is raised instead.
    """

    def __init__(self, uri: str):
        self.uri = uri
        self.lost: str | None = None  # why nothing more is sent, once the server is gone
        self.missed: list[str] = []  # calls that failed or were skipped, in order, once each
        self.first_error: str | None = None
        self._reported = False
        self._lock = threading.Lock()

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, str | None]:
        """``(fn(*args, **kwargs), None)``, or ``(None, why)`` when it failed or was
        skipped; ``what`` names the call (what it records or reads) for messages."""
        if self.lost is not None:
            with self._lock:
                self._miss(what)
            return None, self.lost
        try:
            return fn(*args, **kwargs), None
        except Exception as err:
            if strict():
                raise
            why = _one_line(f"{type(err).__name__}: {err}")
            down = check_reachable(self.uri, timeout=PROBE_TIMEOUT_S)
            with self._lock:  # trials' runs are created from a worker thread
                self._miss(what)
                self.first_error = self.first_error or why
                if down is not None and self.lost is None:
                    self.lost = f"the tracking server {self.uri} stopped answering ({down})"
                    # MLflow's own threads (system metrics, async logging) would each log
                    # the same loss again: this line says it once.
                    logging.getLogger("mlflow").setLevel(logging.CRITICAL)
                    self._reported = True
                    sys.stderr.write(
                        f"kts: warning: MLflow tracking lost: {self.lost} at {what} ({why}); "
                        "nothing more is sent to it, the run goes on.\n"
                    )
                elif not self._reported:
                    self._reported = True
                    sys.stderr.write(
                        f"kts: warning: MLflow tracking failed ({what}: {why}); the run goes "
                        "on, further tracking errors are not shown.\n"
                    )
            return None, self.lost or why

    def _miss(self, what: str) -> None:
        if what not in self.missed:
            self.missed.append(what)

    def note(self, run_id: str) -> str | None:
        """One line for the run's summary naming what MLflow did not record or give
        back, or None when every call went through."""
        if not self.missed:
            return None
        calls = ", ".join(self.missed[:NOTE_ITEMS])
        if len(self.missed) > NOTE_ITEMS:
            calls += f" and {len(self.missed) - NOTE_ITEMS} more"
        if self.lost is not None:
            return (
                f"MLflow tracking lost: {self.lost}; not recorded: {calls}; MLflow run "
                f"{run_id} is incomplete (and may still show RUNNING)"
            )
        return (
            f"MLflow calls failed, not recorded or read: {calls} (the first failed with "
            f"{self.first_error})"
        )


class Tracker:
    """One MLflow run, opened by `start` and closed by `end`.

    Use `log_*` for params, metrics, tags and artifacts; `epoch_callback()` gives
    a Keras callback that logs every epoch's metrics in one `log_batch` call. Every
    MLflow call goes through `guarded` (or `attempt`): see `Guard`. A tracker made for
    a trial's run passes its parent's ``guard``, so the whole run reports once.
    """

    def __init__(
        self,
        client: Any,
        run_id: str,
        experiment: str,
        uri: str,
        fallback_note: str,
        *,
        guard: Guard | None = None,
    ):
        self.client = client
        self.run_id = run_id
        self.experiment = experiment
        self.uri = uri
        self.fallback_note = fallback_note
        self.guard = guard or Guard(uri)
        self.resumed = False
        self._pending: list[Any] = []
        self._system: Any = None
        self._logged: set[tuple[str, int]] | None = None

    # ------------------------------------------------------------- start
    @classmethod
    def start(
        cls,
        *,
        uri: str | None,
        experiment: str,
        run_name: str | None,
        required: bool,
        fallback_dir: Path,
        tags: Mapping[str, str] | None = None,
        resume_run_id: str | None = None,
        attempt: str | None = None,
    ) -> Tracker:
        """Open a run in ``experiment`` (created if missing).

        With ``resume_run_id`` (a run of an interrupted attempt) that run is
        reopened instead of creating a new one, so a resumed training continues
        the same MLflow run. ``attempt`` (a token the caller wrote down before this
        call) is set as the new run's tag `ATTEMPT_TAG`; without ``resume_run_id``,
        a run already carrying it (created by an attempt killed before it could note
        the run's id) is reopened instead of creating a second one.
        """
        uri = resolve_uri(uri)
        note = ""
        reason = check_reachable(uri)
        if reason is not None:
            if required:
                raise unreachable_error(uri, reason)
            fallback_dir.mkdir(parents=True, exist_ok=True)
            local = f"sqlite:///{(fallback_dir / 'mlflow.db').resolve()}"
            note = f"tracking server {uri} unreachable ({reason}); recorded locally in {local}"
            uri = local
        client = open_client(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            exp_id = client.create_experiment(
                experiment, artifact_location=new_experiment_artifacts(uri)
            )
        else:
            exp_id = found.experiment_id
        run_id = None
        if not resume_run_id and attempt:
            resume_run_id = _run_of_attempt(client, exp_id, attempt)
        if resume_run_id:
            try:
                old = client.get_run(resume_run_id)
            except Exception:  # deleted or from another store: start afresh
                old = None
            if old is not None and old.info.experiment_id == exp_id:
                client.update_run(resume_run_id, status="RUNNING")
                run_id = resume_run_id
        if run_id is None:
            new_tags = {**(tags or {}), **({ATTEMPT_TAG: attempt} if attempt else {})}
            run_id = client.create_run(
                exp_id, run_name=run_name or default_run_name(experiment), tags=new_tags
            ).info.run_id
            failpoint("run.created")
        tracker = cls(client, run_id, experiment, uri, note)
        tracker.resumed = run_id == resume_run_id
        return tracker

    # ----------------------------------------------------------- logging
    def guarded(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` under the tracking rule (`Guard`): None when it failed
        (reported once on stderr; raised in strict mode, `service.strict`). Every MLflow
        call of a run goes through here or `attempt`, this class's own and those made
        elsewhere (the bless gate, the registry, trial runs)."""
        return self.guard.call(what, fn, *args, **kwargs)[0]

    def attempt(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, str | None]:
        """Like `guarded`, for a caller that must tell a failure from a None result:
        ``(result, None)``, or ``(None, why it failed)``."""
        return self.guard.call(what, fn, *args, **kwargs)

    def tracking_note(self) -> str | None:
        """What MLflow did not record or give back during this run (`Guard.note`)."""
        return self.guard.note(self.run_id)

    def log_batch(
        self,
        *,
        params: Sequence[Any] = (),
        metrics: Sequence[Any] = (),
        tags: Sequence[Any] = (),
        background: bool = False,
    ) -> None:
        """One MLflow ``log_batch`` of entity objects; ``background`` returns at once
        and the call is awaited by `flush` (and `end`)."""
        kinds = [k for k, v in (("params", params), ("metrics", metrics), ("tags", tags)) if v]
        op = self.guarded(
            f"log_batch ({', '.join(kinds)})",
            self.client.log_batch,
            self.run_id,
            params=list(params),
            metrics=list(metrics),
            tags=list(tags),
            synchronous=not background,
        )
        if background and op is not None:
            self._pending.append(op)

    def log_params(self, params: Mapping[str, Any], *, background: bool = False) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.log_batch(params=items[i : i + 100], background=background)

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, *, background: bool = False
    ) -> None:
        """Log ``metrics`` at ``step`` in one call; ``background`` returns at once.

        Background calls are awaited by `flush` (and `end`), so a slow tracking
        server overlaps with training instead of stalling it.
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        logged = self._logged_before()
        items = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if (k, step or 0) not in logged
        ]
        logged.update((m.key, m.step) for m in items)
        if items:
            self.log_batch(metrics=items, background=background)

    def _logged_before(self) -> set[tuple[str, int]]:
        """(metric, step) pairs a resumed run already holds: `log_metrics` skips them, so
        an attempt that redoes a step after a kill never logs a metric step twice."""
        if self._logged is None:
            self._logged = set()
            run = (
                self.guarded("get_run", self.client.get_run, self.run_id) if self.resumed else None
            )
            for key in run.data.metrics if run is not None else ():
                if key.startswith("system/"):
                    continue  # MLflow's monitor logs those itself (resumed at its last step)
                history = self.guarded(
                    "get_metric_history", self.client.get_metric_history, self.run_id, key
                )
                self._logged.update((key, m.step) for m in history or [])
        return self._logged

    def flush(self) -> None:
        """Wait for background logging calls to finish."""
        pending, self._pending = self._pending, []
        for op in pending:
            self.guarded("log_batch (in the background)", op.wait)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.log_batch(tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self.guarded(
            f"log_dict {artifact_file}", self.client.log_dict, self.run_id, data, artifact_file
        )

    def log_text(self, text: str, artifact_file: str) -> None:
        self.guarded(
            f"log_text {artifact_file}", self.client.log_text, self.run_id, text, artifact_file
        )

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        name = f"{artifact_path}/{Path(path).name}" if artifact_path else Path(path).name
        self.guarded(
            f"log_artifact {name}", self.client.log_artifact, self.run_id, str(path), artifact_path
        )

    def log_dataset(self, data: Any, parts: Any) -> None:
        """Record the data as an MLflow dataset input (digest, schema) per split part."""
        self.guarded("log_dataset", self._log_dataset, data, parts)

    def _log_dataset(self, data: Any, parts: Any) -> None:
        import hashlib

        import numpy as np
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import Dataset as DatasetEntity
        from mlflow.entities import DatasetInput, InputTag

        # File sources ("csv:data/train.csv") are recorded by absolute path; built-in
        # ones ("sklearn.datasets.load_digits") as a code source tagged with the loader.
        kind, _, where = data.source.partition(":")
        source: Any
        if where and Path(where).exists():
            from mlflow.data.dataset_source_registry import resolve_dataset_source

            source = resolve_dataset_source(str(Path(where).resolve()))
        else:
            source = CodeDatasetSource(tags={"kts.data_source": data.source})
        # The digest covers the index (labels, row identities, shape), not the pixels:
        # computing it never reads the data again.
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(data.y).tobytes())
        if data.keys is not None:
            digest.update(np.ascontiguousarray(data.keys).tobytes())
        digest.update(repr((data.source, tuple(data.input_shape), data.class_names)).encode())
        from mlflow.types.schema import Schema, TensorSpec

        dtype = np.dtype(object) if data.kind == "text" else np.dtype("float32")
        schema = Schema([TensorSpec(dtype, (-1, *data.input_shape), name=data.input_name)])
        dataset = MetaDataset(  # type: ignore[abstract]
            source=source,
            name=Path(where).name if where else data.source.rsplit(".", 1)[-1],
            digest=digest.hexdigest()[:8],
            schema=schema,
        )
        # The entity MLflow's own (private) `_to_mlflow_entity` makes, from the public dict.
        fields = dataset.to_dict()
        entity = DatasetEntity(
            name=fields["name"],
            digest=fields["digest"],
            source_type=fields["source_type"],
            source=fields["source"],
            schema=fields.get("schema"),
            profile=fields.get("profile"),
        )
        inputs = [
            DatasetInput(
                entity,
                tags=[
                    InputTag("mlflow.data.context", "full"),
                    InputTag("kts.split_fingerprint", parts.fingerprint),
                    InputTag("kts.rows", str(len(data))),
                ],
            )
        ]
        self.client.log_inputs(self.run_id, datasets=inputs)

    def start_system_metrics(self, interval_s: float) -> None:
        """Sample CPU, memory, disk, network (and GPU where NVML is present) every
        ``interval_s`` seconds into ``system/*`` metrics of this run, until `end`.

        MLflow's own monitor, on a daemon thread; a resumed run continues its steps.
        """
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = self.guarded(
            "system_metrics",
            SystemMetricsMonitor,
            self.run_id,
            sampling_interval=interval_s,
            samples_before_logging=1,
            resume_logging=self.resumed,
            tracking_uri=self.uri,
        )
        if monitor is not None:
            monitor.start()
            self._system = monitor

    def log_serving_model(
        self, export_path: str | Path, *, example: Mapping[str, Any], tags: Mapping[str, Any]
    ) -> str | None:
        """Log the exported SavedModel as this run's MLflow model ``model``; its URI.

        A pyfunc (`service/kts_pyfunc.py`) over the export's ``serving_default``
        signature, with that signature as the MLflow signature (named tensors) and
        ``example`` (``{input_name: a few raw rows}``) as its input example, so the UI
        shows both and ``mlflow models serve`` / ``mlflow.pyfunc.load_model`` answer
        like the served version. ``tags`` go on the logged model (the serving version).
        None when tracking failed (reported once; the run goes on).
        """
        return self.guarded("log_model", self._log_serving_model, export_path, example, tags)

    def _log_serving_model(
        self, export_path: str | Path, example: Mapping[str, Any], tags: Mapping[str, Any]
    ) -> str:
        import mlflow
        import mlflow.pyfunc
        import numpy as np
        import tensorflow as tf
        from mlflow.models import Model, infer_signature

        serve = tf.saved_model.load(str(export_path)).signatures["serving_default"]
        inputs = {k: np.asarray(v) for k, v in example.items()}
        outputs = {
            k: v.numpy() for k, v in serve(**{k: tf.constant(v) for k, v in inputs.items()}).items()
        }
        # The logged model belongs to this run's experiment. Left to itself `Model.log`
        # creates it in MLflow's active experiment (0, "Default", in a process that
        # never called `set_experiment`), and the run's page shows "Logged models (0)".
        run = self.client.get_run(self.run_id)
        ready = self._logged_model_of_run(run.info.experiment_id)
        if ready is not None:
            return f"models:/{ready}"  # logged by an attempt killed before registering it
        logged = self.client.create_logged_model(
            run.info.experiment_id,
            name="model",
            source_run_id=self.run_id,
            tags={k: str(v) for k, v in tags.items()},
            params=dict(run.data.params),
        )
        with self._fluent_store():
            info = Model.log(
                artifact_path=None,
                name="model",
                flavor=mlflow.pyfunc,
                run_id=self.run_id,
                model_id=logged.model_id,
                loader_module="kts_pyfunc",
                data_path=str(export_path),
                code_paths=[str(Path(__file__).with_name("kts_pyfunc.py"))],
                signature=infer_signature(inputs, outputs),
                input_example=inputs,
                pip_requirements=[
                    f"tensorflow=={tf.__version__}",
                    f"mlflow=={mlflow.__version__}",
                ],
            )
        return str(info.model_uri)

    def _logged_model_of_run(self, experiment_id: str) -> str | None:
        """The id of this run's READY logged model ``model``; unfinished ones (a kill
        while it was written) are deleted, so the run ends with exactly one."""
        found = self.client.search_logged_models(
            [experiment_id], filter_string=f"source_run_id = '{self.run_id}'"
        )
        ready = None
        for model in found:
            if model.name != "model" or model.source_run_id != self.run_id:
                continue
            if str(model.status) == "READY" and ready is None:
                ready = model.model_id
            else:
                self.client.delete_logged_model(model.model_id)
        return ready

    @contextmanager
    def _fluent_store(self) -> Iterator[None]:
        """MLflow's global tracking URI set to this run's store for the duration.

        `Model.log` and the registry's lookup of a logged model (`models:/m-...`) go
        through the global store, which may be another one (the fallback store, or the
        default ``sqlite:///mlflow.db`` while this run records to a server).
        """
        import mlflow

        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)

    def register(
        self, name: str, *, source: str, alias: str, tags: Mapping[str, Any]
    ) -> str | None:
        """`register_version` of ``source`` under ``alias`` in this run's store (guarded)."""

        def call() -> str:
            with self._fluent_store():
                return register_version(
                    self.client, name, run_id=self.run_id, source=source, tags=tags, alias=alias
                )

        return self.guarded("register", call)

    def close_abandoned(self, run_id: str) -> None:
        """End ``run_id`` as KILLED if it is still RUNNING: the run of an earlier attempt
        that will never be continued (another config, or `training.resume: false`)."""
        from mlflow.exceptions import MlflowException

        def close() -> None:
            try:
                run = self.client.get_run(run_id)
            except MlflowException:
                return  # deleted, or recorded in another store
            if run.info.status == "RUNNING":
                self.client.set_terminated(run_id, "KILLED")

        self.guarded("end abandoned run", close)

    def end(self, status: str = "FINISHED") -> None:
        if self._system is not None:
            self.guarded("system_metrics", self._system.finish)
            self._system = None
        self.flush()
        self.guarded(f"end the run ({status})", self.client.set_terminated, self.run_id, status)

    def logged_steps(self, metric: str = "loss") -> set[int]:
        """Steps already logged for ``metric`` (epochs of an interrupted attempt)."""
        history = self.guarded(
            "get_metric_history", self.client.get_metric_history, self.run_id, metric
        )
        return {m.step for m in history or []}

    def epoch_callback(self, journal: Path | None = None):
        """A Keras callback logging each epoch's logs as metrics (step = epoch).

        The epoch's `log_batch` runs in the background (MLflow's async queue, in
        order) while the next callbacks (the backup) and the next epochs proceed: a slow
        or busy tracking server never stalls training. Calls are awaited when training
        ends (and by `flush` / `end`). Each epoch is first appended to the
        local ``journal`` (JSON lines), before the backup is written: when a killed
        run resumes, epochs in the journal that never reached MLflow are logged then,
        and epochs MLflow already has are skipped. No step is lost or duplicated.
        """
        import json

        import keras

        tracker = self
        done = self.logged_steps() if self.resumed else set()
        if journal is not None:
            if self.resumed and journal.is_file():
                for line in journal.read_text().splitlines():
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by the kill
                    if entry["step"] not in done:
                        self.log_metrics(entry["metrics"], step=entry["step"])
                        done.add(entry["step"])
            elif not self.resumed:
                journal.unlink(missing_ok=True)

        class _EpochMetrics(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                self._log(epoch, logs)
                if journal is not None:  # the run's own training, not a tuning trial
                    failpoint("train.epoch_logged")

            def _log(self, epoch, logs):
                if epoch in done:
                    return
                metrics = {
                    k: float(v)
                    for k, v in (logs or {}).items()
                    if isinstance(v, (int, float)) or hasattr(v, "__float__")
                }
                if journal is not None:
                    with journal.open("a") as f:
                        f.write(json.dumps({"step": epoch, "metrics": metrics}) + "\n")
                tracker.log_metrics(metrics, step=epoch, background=True)

            def on_train_end(self, logs=None):
                tracker.flush()

        return _EpochMetrics()

    def ui_command(self) -> str:
        """The command that opens the MLflow UI on this run's store."""
        if self.uri.startswith(("http://", "https://")):
            return f"open {self.uri}"
        return f"mlflow ui --backend-store-uri {self.uri}"


# ------------------------------------------------------------- model registry
CHAMPION = "champion"  # the blessed version: exported and served under the `stable` label
CHALLENGER = "challenger"  # the latest candidate that did not beat the champion


def champion_version(client: Any, name: str) -> Any | None:
    """The registered model version carrying the `champion` alias, or None when there is
    none (no such model, or no such alias). Any other failure (a store that does not
    answer) is raised: "no champion" and "cannot tell" are not the same verdict."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def register_version(
    client: Any,
    name: str,
    *,
    run_id: str,
    source: str,
    tags: Mapping[str, Any],
    alias: str = CHAMPION,
) -> str:
    """Register ``source`` as a version of ``name`` under ``alias``; return the version.

    Idempotent, so that a run killed part way and started again ends with one version:
    a version of ``name`` already made from ``run_id`` is reused (a killed attempt
    created it), and the alias is set whether or not it was already. A new `champion`
    also takes the `challenger` alias off an older version (the challenger lost to the
    previous champion, which this one beat).
    """
    version = version_of_run(client, name, run_id)
    if version is None:
        version = create_version(client, name, run_id=run_id, source=source, tags=tags)
    set_alias(client, name, alias, version)
    return version


def version_of_run(client: Any, name: str, run_id: str) -> str | None:
    """The (lowest) registered version of ``name`` made from run ``run_id``, or None."""
    found = [
        int(v.version)
        for v in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if v.run_id == run_id
    ]
    return str(min(found)) if found else None


def create_version(
    client: Any, name: str, *, run_id: str, source: str, tags: Mapping[str, Any]
) -> str:
    """A new version of ``name`` (created if missing) from ``source``; no alias yet."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)
    version = client.create_model_version(
        name,
        source,
        run_id=run_id,
        tags={k: str(v) for k, v in tags.items()},
        # A logged model (`models:/<id>`) is registered by its id (an HTTP server
        # refuses the bare source).
        model_id=source.removeprefix("models:/") if source.startswith("models:/m-") else None,
    )
    failpoint("register.version_created")
    return str(version.version)


def set_alias(client: Any, name: str, alias: str, version: str) -> None:
    """Point ``alias`` at ``version`` (a `champion` also ends the `challenger` alias)."""
    from mlflow.exceptions import MlflowException

    client.set_registered_model_alias(name, alias, version)
    if alias == CHAMPION:
        try:
            client.delete_registered_model_alias(name, CHALLENGER)
        except MlflowException:
            pass  # there was no challenger
    failpoint("register.aliased")
