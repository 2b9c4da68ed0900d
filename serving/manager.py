"""Which versions of which models are served: loading, labels, polling, status.

Mirrors TensorFlow Serving's manager as seen from outside:

* each model's base path is polled for integer version folders; its version policy
  (``latest`` N, ``all``, ``specific``) picks the versions to serve;
* a new version is loaded **and warmed up** before it takes traffic; an old one is
  unloaded only once a version the policy wants is available, so a version that
  fails to load leaves the previous one serving (its status says END with the error),
  and loads are retried ``max_num_load_retries`` times, ``load_retry_interval`` apart;
* version labels (``stable``, ``canary``) may only point at available versions, unless
  ``allow_version_labels_for_unavailable_models`` lets a *new* label point at one that
  is not loaded yet. A config reload loads first and moves labels after, so moving
  ``stable`` to a version that fails to load leaves ``stable`` where it was;
* per-version states START -> LOADING -> AVAILABLE -> UNLOADING -> END, as
  ``GetModelStatus`` reports them.

Requests never wait on the manager's lock: they read an immutable snapshot of the
available versions, swapped in whole when it changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.config import ModelSettings
from serving.errors import (
    INVALID_ARGUMENT,
    NOT_FOUND,
    OK,
    UNKNOWN,
    ServingError,
    failed_precondition,
    invalid_argument,
    not_found,
)

log = logging.getLogger("kts.serving")

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclass
class VersionRecord:
    """What ``GetModelStatus`` reports for one version."""

    version: int
    state: str = START
    error_code: str = OK
    error_message: str = ""
    failures: int = 0
    next_retry: float = 0.0


@dataclass
class _Model:
    settings: ModelSettings
    records: dict[int, VersionRecord] = field(default_factory=dict)
    ready: Mapping[int, Any] = field(default_factory=dict)  # version -> Servable; swapped whole
    labels: Mapping[str, int] = field(default_factory=dict)


def scan_versions(base_path: str | Path) -> list[int]:
    """Integer-named folders under ``base_path``, ascending (hidden staging folders are not)."""
    path = Path(base_path)
    try:
        entries = list(path.iterdir())
    except OSError:
        return []
    return sorted(int(p.name) for p in entries if p.name.isdigit() and p.is_dir())


class Manager:
    """Loads, serves and unloads model versions.

    Args:
        loader: ``loader(model_name, version, path)`` returns a warmed-up servable
            (with a ``close()``) or raises; a `ServingError` keeps its code.
        max_num_load_retries: retries after a failed load (upstream's default 5).
        load_retry_interval: seconds between those retries (upstream's default 60).
        allow_version_labels_for_unavailable_models: as the upstream flag.
        on_load: told (model, version, "OK" or error code) after each load attempt.
    """

    def __init__(
        self,
        loader: Callable[[str, int, Path], Any],
        *,
        max_num_load_retries: int = 5,
        load_retry_interval: float = 60.0,
        allow_version_labels_for_unavailable_models: bool = False,
        on_load: Callable[[str, int, str], None] | None = None,
    ):
        self._loader = loader
        self._max_retries = max(0, max_num_load_retries)
        self._retry_interval = load_retry_interval
        self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._on_load = on_load
        self._models: dict[str, _Model] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ----------------------------------------------------------------- configure

    def configure(self, settings: Iterable[ModelSettings]) -> None:
        """Serve exactly these models: add new ones, update changed ones, drop the rest.

        Versions are loaded before labels move. Raises FAILED_PRECONDITION (and keeps
        every label where it was) if a label points at a version that is not available.
        """
        wanted = {s.name: s for s in settings}
        with self._lock:
            models = dict(self._models)
            for name in list(models):
                if name not in wanted:
                    self._unload_all(models.pop(name))
            for name, s in wanted.items():
                model = models.get(name)
                if model is None:
                    models[name] = _Model(s)
                else:
                    model.settings = s
            self._models = models
            for model in models.values():
                self._sync(model)
            self._apply_labels(wanted)

    def _apply_labels(self, wanted: Mapping[str, ModelSettings]) -> None:
        problems = []
        for name, s in wanted.items():
            model = self._models[name]
            for label, version in sorted(s.labels.items()):
                if version in model.ready:
                    continue
                is_new = label not in model.labels
                if self._allow_unavailable_labels and is_new:
                    continue
                if model.labels.get(label) == version:
                    continue
                record = model.records.get(version)
                why = (
                    f" (it failed to load: {record.error_message})"
                    if record is not None and record.error_code != OK
                    else ""
                )
                problems.append(
                    f"Request to assign label to version {version} of model {name}, which is not "
                    f"currently available for inference{why}"
                )
        if problems:
            raise failed_precondition("; ".join(problems))
        for name, s in wanted.items():
            self._models[name].labels = dict(s.labels)

    # ------------------------------------------------------------------- polling

    def poll(self) -> None:
        """Look at every base path once; load and unload as the policies say."""
        with self._lock:
            for model in list(self._models.values()):
                self._sync(model)

    def start_polling(self, interval: float) -> None:
        """Poll every ``interval`` seconds in a background thread (none if <= 0)."""
        if interval <= 0:
            return
        self._spawn(self.poll, interval, "version-poller")

    def run_periodically(self, fn: Callable[[], None], interval: float, name: str) -> None:
        """Call ``fn`` every ``interval`` seconds until `stop`; errors are logged."""
        if interval > 0:
            self._spawn(fn, interval, name)

    def _spawn(self, fn: Callable[[], None], interval: float, name: str) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    fn()
                except Exception:  # a poll failure must not end polling
                    log.exception("%s failed", name)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        with self._lock:
            for model in self._models.values():
                self._unload_all(model)

    def _sync(self, model: _Model) -> None:
        s = model.settings
        on_disk = scan_versions(s.base_path)
        aspired = s.policy.aspired(on_disk)
        # Newest first, so the version "latest" resolves to is ready soonest.
        for version in sorted(aspired, reverse=True):
            if version in model.ready:
                continue
            record = model.records.get(version)
            if record is not None and record.error_code != OK:
                if record.failures > self._max_retries or time.monotonic() < record.next_retry:
                    continue
            self._load(model, version, Path(s.base_path) / str(version))
        aspired_ready = any(v in model.ready for v in aspired)
        for version in list(model.ready):
            if version in aspired:
                continue
            gone = version not in on_disk
            if aspired_ready or (not aspired and gone):
                self._unload(model, version)

    def _load(self, model: _Model, version: int, path: Path) -> None:
        name = model.settings.name
        record = model.records.get(version) or VersionRecord(version)
        failures = record.failures if record.error_code != OK else 0
        record = VersionRecord(version, state=LOADING, failures=failures)
        model.records = {**model.records, version: record}
        log.info("Loading servable: {name: %s version: %d} from %s", name, version, path)
        started = time.monotonic()
        try:
            servable = self._loader(name, version, path)
        except Exception as err:
            code = err.code if isinstance(err, ServingError) else UNKNOWN
            message = (
                err.message if isinstance(err, ServingError) else f"{type(err).__name__}: {err}"
            )
            record.state, record.error_code, record.error_message = END, code, message.strip()
            record.failures = failures + 1
            record.next_retry = time.monotonic() + self._retry_interval
            log.error("Loading servable: {name: %s version: %d} failed: %s", name, version, message)
            if self._on_load is not None:
                self._on_load(name, version, code)
            return
        record.state = AVAILABLE
        model.ready = {**model.ready, version: servable}
        log.info(
            "Successfully loaded servable version {name: %s version: %d} in %.2fs",
            name,
            version,
            time.monotonic() - started,
        )
        if self._on_load is not None:
            self._on_load(name, version, OK)

    def _unload(self, model: _Model, version: int) -> None:
        servable = model.ready.get(version)
        record = model.records.get(version) or VersionRecord(version)
        record.state = UNLOADING
        model.ready = {v: s for v, s in model.ready.items() if v != version}
        if servable is not None:
            servable.close()  # in-flight requests keep their own reference
        record.state, record.error_code, record.error_message = END, OK, ""
        model.records = {**model.records, version: record}
        log.info("Unloaded servable version {name: %s version: %d}", model.settings.name, version)

    def _unload_all(self, model: _Model) -> None:
        for version in list(model.ready):
            self._unload(model, version)

    # ------------------------------------------------------------------- lookups

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def servable(self, name: str, version: int | None = None, label: str | None = None) -> Any:
        """The servable a ModelSpec asks for; errors as TensorFlow Serving words them."""
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        model = self._models.get(name)
        if label is not None:
            labels = model.labels if model is not None else {}
            if label not in labels:
                known = ", ".join(sorted(labels)) or "none"
                raise ServingError(
                    INVALID_ARGUMENT,
                    f"Unrecognized servable version label: {label} (labels of model {name}: {known})",
                )
            version = labels[label]
        if model is None:
            request = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            served = ", ".join(self.model_names()) or "none"
            raise not_found(f"Servable not found for request: {request} (models served: {served})")
        ready = model.ready
        if version is None:
            if not ready:
                raise not_found(
                    f"Servable not found for request: Latest({name}) (no version of {name} is "
                    f"available; see its status)"
                )
            return ready[max(ready)]
        servable = ready.get(version)
        if servable is None:
            available = ", ".join(str(v) for v in sorted(ready)) or "none"
            raise not_found(
                f"Servable not found for request: Specific({name}, {version}) (available "
                f"versions: {available})"
            )
        return servable

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionRecord]:
        """Version records, newest first, as ``GetModelStatus`` reports them."""
        if not name:
            raise invalid_argument("Missing model name in request.")
        model = self._models.get(name)
        if label is not None:
            labels = model.labels if model is not None else {}
            if label not in labels:
                raise ServingError(
                    INVALID_ARGUMENT, f"Unrecognized servable version label: {label}"
                )
            version = labels[label]
        records = dict(model.records) if model is not None else {}
        if version is not None:
            record = records.get(version)
            if record is None:
                raise ServingError(NOT_FOUND, f"Could not find version {version} of model {name}")
            return [record]
        if not records:
            raise ServingError(NOT_FOUND, f"Could not find any versions of model {name}")
        return [records[v] for v in sorted(records, reverse=True)]

    def labels(self, name: str) -> dict[str, int]:
        model = self._models.get(name)
        return dict(model.labels) if model is not None else {}

    def settings(self) -> list[ModelSettings]:
        return [m.settings for m in self._models.values()]
