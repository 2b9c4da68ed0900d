"""Promotion and rollback: move a version label in ``models.config``, loading first.

``promote`` points a label (``stable`` by default) at a version only after that version
has loaded and warmed up: on the running server when one is given (``--server``, the
gRPC address; two ``HandleReloadConfigRequest`` calls, the first serving the version,
the second moving the label -- the order TensorFlow Serving's ``serving_config.md``
asks for), otherwise in this process. If the load fails the label stays where it was.
``rollback`` promotes the newest version on disk below the label's current one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serving.config import (
    STABLE,
    ModelSettings,
    model_settings,
    move_label,
    read_model_server_config,
    rollback_target,
)
from serving.errors import ServingConfigError, ServingError
from serving.manager import scan_versions


@dataclass(frozen=True)
class LabelMove:
    """What a promotion or rollback did."""

    model: str
    label: str
    previous: int | None
    version: int


def _load_locally(settings: ModelSettings, version: int) -> None:
    from serving.servable import Servable

    path = Path(settings.base_path) / str(version)
    try:
        servable = Servable(settings.name, version, path)
        servable.warmup()
        servable.close()
    except ServingError as err:
        raise ServingConfigError(
            f"version {version} of model {settings.name!r} failed to load: {err.message}"
        ) from None
    except Exception as err:  # anything TensorFlow raises while loading
        raise ServingConfigError(
            f"version {version} of model {settings.name!r} failed to load: {type(err).__name__}: {err}"
        ) from None


def _serve_version_on(
    server: str, config_path: Path, settings: ModelSettings, version: int, timeout: float
) -> None:
    from serving.client import GrpcClient, ServingClientError

    config = read_model_server_config(config_path)
    for model in config.model_config_list.config:
        if model.name == settings.name:
            policy = model.model_version_policy
            if (
                policy.WhichOneof("policy_choice") == "specific"
                and version not in policy.specific.versions
            ):
                policy.specific.versions.append(version)
    client = GrpcClient(server, timeout=timeout)
    try:
        client.reload_config(config)
        deadline = time.monotonic() + timeout
        while True:
            state = client.status(settings.name, version=version)[0]
            if state["state"] == "AVAILABLE":
                return
            if state["state"] == "END" and state["error_code"] != "OK":
                raise ServingConfigError(
                    f"version {version} of model {settings.name!r} failed to load on {server}: "
                    f"{state['error_message']}"
                )
            if time.monotonic() > deadline:
                raise ServingConfigError(
                    f"version {version} of model {settings.name!r} did not load on {server} within {timeout:.0f}s"
                )
            time.sleep(0.2)
    except ServingClientError as err:
        raise ServingConfigError(
            f"server {server} refused to load version {version} of {settings.name!r}: {err}"
        ) from None
    finally:
        client.close()


def _push_config(server: str, config_path: Path, timeout: float) -> None:
    from serving.client import GrpcClient, ServingClientError

    client = GrpcClient(server, timeout=timeout)
    try:
        client.reload_config(read_model_server_config(config_path))
    except ServingClientError as err:
        raise ServingConfigError(f"server {server} refused the new labels: {err}") from None
    finally:
        client.close()


def promote(
    config_path: str | Path,
    model_name: str,
    version: int,
    *,
    label: str = STABLE,
    server: str | None = None,
    timeout: float = 120.0,
    log: Callable[[str], None] | None = None,
) -> LabelMove:
    """Load ``version`` of ``model_name``, then point ``label`` at it in ``config_path``.

    Raises:
        ServingConfigError: unknown model or version, or the version does not load (the
            label is then left unchanged).
    """
    path = Path(config_path)
    settings = model_settings(path, model_name)
    on_disk = scan_versions(settings.base_path)
    if version not in on_disk:
        raise ServingConfigError(
            f"Invalid value for VERSION: received {version}; expected one of the versions of "
            f"{model_name!r} under {settings.base_path}: {', '.join(map(str, on_disk)) or '(none)'}."
        )
    if log is not None:
        log(
            f"loading version {version} of {model_name!r} {'on ' + server if server else 'locally'} ..."
        )
    if server:
        _serve_version_on(server, path, settings, version, timeout)
    else:
        _load_locally(settings, version)
    previous = move_label(path, model_name=model_name, version=version, label=label)
    if server:
        try:
            _push_config(server, path, timeout)
        except ServingConfigError:
            if previous is not None:
                move_label(path, model_name=model_name, version=previous, label=label)
            raise
    return LabelMove(model_name, label, previous, version)


def rollback(
    config_path: str | Path,
    model_name: str,
    *,
    label: str = STABLE,
    server: str | None = None,
    timeout: float = 120.0,
    log: Callable[[str], None] | None = None,
) -> LabelMove:
    """Point ``label`` back at the newest version on disk below its current one (loading it first)."""
    settings = model_settings(config_path, model_name)
    target = rollback_target(settings, scan_versions(settings.base_path), label)
    return promote(
        config_path, model_name, target, label=label, server=server, timeout=timeout, log=log
    )
