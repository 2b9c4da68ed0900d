"""Preflight: every place a run will write, checked before data is read or anything recorded.

A run writes to its run folder (``work_dir/<name>``: resolved config, backups, lock),
the export base path (``BASE/NAME/VERSION`` and ``BASE/models.config``), the
``--output-json`` file, and the MLflow store (a local SQLite file and its artifact
folder, or a server). An unwritable folder, a read-only mount, a file where a folder
should be, a ``models.config`` that does not parse or a tracking URI no store answers
on would otherwise be found after training (and after an MLflow run was created);
here each is a one-line `UserError` (exit 2) within a second, before TensorFlow or
MLflow is imported.

Nothing is created: a missing folder is checked by writing a probe file into its
nearest existing parent (removed at once), which is where it will be created.

Example:
    >>> check_outputs(cfg, output_json=Path("out/summary.json"))  # raises UserError
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from service.config import RunConfig
from service.errors import UserError

FOLDER = "a folder this process can create and write in"
# Stores MLflow opens through SQLAlchemy (``postgresql+psycopg2://`` etc.) or Databricks:
# checked by MLflow itself when the run starts.
OTHER_STORES = ("postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")


def _problem(value: object, field: str, problem: str, expected: str = FOLDER) -> UserError:
    return UserError(
        f"Invalid value for `{field}`: received {str(value)!r}; {problem}; expected {expected}."
    )


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest parent that exists (something always does: / or .)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def _cannot_write(folder: Path) -> str | None:
    """Why a file cannot be created in ``folder``, or None. A real write, since mode
    bits say nothing about read-only mounts and nothing to root."""
    try:
        fd, name = tempfile.mkstemp(prefix=".kts-preflight-", dir=folder)
    except OSError as err:
        return err.strerror or type(err).__name__
    os.close(fd)
    os.unlink(name)
    return None


def check_folder(field: str, value: object, folder: Path) -> None:
    """``folder`` exists as a writable folder, or can be created as one.

    Raises:
        UserError: naming ``field`` and ``value``, what is in the way and what is expected.
    """
    base = _existing_ancestor(folder)
    if not base.is_dir():
        where = "" if base == Path(os.path.abspath(folder)) else f" (on the way to {folder})"
        raise _problem(value, field, f"{base} is a file, not a folder{where}")
    reason = _cannot_write(base)
    if reason is not None:
        where = "" if base == Path(os.path.abspath(folder)) else f" (to create {folder})"
        raise _problem(value, field, f"cannot write in {base}{where}: {reason}")


def check_file(field: str, value: object, path: Path) -> None:
    """``path`` can be written as a file: not a folder, its folder writable or creatable."""
    if path.is_dir():
        raise _problem(value, field, f"{path} is a folder", "the path of a file to write")
    if path.exists() and not os.access(path, os.W_OK):
        raise _problem(value, field, f"{path} is read-only", "a file this process can write")
    check_folder(field, value, path.parent)


def check_export(cfg: RunConfig) -> None:
    """``export.base_path`` and ``BASE/NAME`` writable; ``BASE/models.config`` parses."""
    from serving.config import read_model_server_config, settings_from_proto
    from serving.errors import ServingConfigError

    field, base = "export.base_path", Path(cfg.export.base_path)
    check_folder(field, cfg.export.base_path, base / cfg.export_name)
    config = base / "models.config"
    if not config.exists():
        return
    if not config.is_file():
        raise _problem(base, field, f"{config} is not a file", "a text ModelServerConfig file")
    if not os.access(config, os.W_OK):
        raise _problem(base, field, f"{config} is read-only", "a models.config this run can update")
    try:
        settings_from_proto(read_model_server_config(config), source=str(config))
    except ServingConfigError as err:
        raise _problem(
            base,
            field,
            f"its models.config does not parse ({err})",
            "a text ModelServerConfig there (TensorFlow Serving's --model_config_file) or "
            "none: fix or move that file",
        ) from None


def check_tracking(cfg: RunConfig) -> None:
    """The tracking URI's scheme; a local store's folder, file and artifact folder; a
    required server's health."""
    from service.tracking import (
        check_reachable,
        check_sqlite_file,
        local_artifact_folder,
        resolve_uri,
        sqlite_path,
        unreachable_error,
    )

    uri = resolve_uri(cfg.tracking.uri)
    field = "tracking.uri" if cfg.tracking.uri else "tracking.uri ($MLFLOW_TRACKING_URI)"
    if not cfg.tracking.uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        field = "tracking.uri (default)"
    scheme = urlparse(uri).scheme
    kind = scheme.split("+", 1)[0]
    expected = (
        "sqlite:///PATH (a local store), http(s)://HOST:PORT (a tracking server), "
        "file:///PATH, or a postgresql/mysql/mssql database URI"
    )
    if kind == "sqlite":
        db = sqlite_path(uri)
        if db is None:
            if uri.startswith("sqlite:///"):
                return  # in memory: nothing on disk
            raise _problem(uri, field, "an SQLite URI needs three slashes and a path", expected)
        check_folder(field, uri, db.parent)
        check_sqlite_file(db)
        artifacts = local_artifact_folder(uri, cfg.experiment)
        if artifacts is not None:
            check_folder(f"{field} (artifacts of experiment {cfg.experiment!r})", uri, artifacts)
    elif kind in ("http", "https"):
        if not urlparse(uri).netloc:
            raise _problem(uri, field, "no host", expected)
        if cfg.tracking.required:
            reason = check_reachable(uri)
            if reason is not None:
                raise unreachable_error(uri, reason)
    elif kind == "file" or (not scheme and uri):
        check_folder(field, uri, Path(urlparse(uri).path if scheme else uri))
    elif kind not in OTHER_STORES:
        raise _problem(uri, field, f"unknown scheme {scheme or '(none)'!r}", expected)


def check_outputs(
    cfg: RunConfig, *, output_json: Path | None = None, is_chief: bool = True
) -> None:
    """Check every place a run of ``cfg`` writes; the first problem is a `UserError`.

    Args:
        output_json: the ``--output-json`` path, if any.
        is_chief: False on a multi-worker run's other workers, which neither export
            (their copy goes under the run folder) nor track.
    """
    check_folder("work_dir", cfg.work_dir, cfg.run_dir)
    if is_chief and cfg.export.enabled:
        check_export(cfg)
    if output_json is not None:
        check_file("--output-json", output_json, output_json)
    if is_chief and cfg.tracking.enabled:
        check_tracking(cfg)
