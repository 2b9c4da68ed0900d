"""TensorFlow Serving's text configs: ``models.config``, batching and monitoring files.

* ``models.config`` is a text ``ModelServerConfig`` (``serving_config.md``): one
  ``config { name base_path model_platform model_version_policy version_labels }`` per
  model. `register_version`, `move_label` and `rollback_target` edit it the way a
  release does: a new export becomes ``canary`` (and ``stable`` when there is none yet),
  promotion moves ``stable``; the ``specific`` version policy always lists exactly the
  versions some label points at, so the server loads a version before a label moves
  to it. Writes are atomic (temporary file + rename) and serialised by a lock file.
* ``--batching_parameters_file`` is a text ``BatchingParameters``; ``--monitoring_config_file``
  a text ``MonitoringConfig``. Their protos do not ship in ``tensorflow-serving-api``, so
  the few messages are declared here and parsed with protobuf's own text parser, which
  keeps upstream's syntax (comments, ``{ value: N }`` wrappers) and rejects unknown fields.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from serving.errors import ServingConfigError

STABLE = "stable"
CANARY = "canary"
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


# ------------------------------------------------------------------- version policy


@dataclass(frozen=True)
class VersionPolicy:
    """Which of the versions on disk to serve: ``latest`` N, ``all``, or ``specific`` ones."""

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def aspired(self, on_disk: list[int]) -> list[int]:
        """The versions to load, given the integer version folders found (ascending)."""
        if self.kind == "all":
            return list(on_disk)
        if self.kind == "specific":
            wanted = set(self.versions)
            return [v for v in on_disk if v in wanted]
        return list(on_disk[-max(self.num_versions, 1) :]) if on_disk else []

    def describe(self) -> str:
        if self.kind == "specific":
            return f"specific {list(self.versions)}"
        if self.kind == "latest":
            return f"latest {self.num_versions}"
        return "all"


@dataclass(frozen=True)
class ModelSettings:
    """One served model: name, base path (holding VERSION folders), policy and labels."""

    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = field(default_factory=dict)


def _model_server_config_pb2() -> Any:
    from tensorflow_serving.config import model_server_config_pb2

    return model_server_config_pb2


def settings_from_proto(config: Any, *, source: str = "model config") -> list[ModelSettings]:
    """`ModelSettings` for each model in a ``ModelServerConfig`` message."""
    if config.WhichOneof("config") != "model_config_list":
        raise ServingConfigError(
            f"{source}: only model_config_list is supported; received "
            f"{config.WhichOneof('config') or 'an empty config'}"
        )
    out: list[ModelSettings] = []
    seen: set[str] = set()
    for model in config.model_config_list.config:
        if not model.name:
            raise ServingConfigError(f"{source}: a model config has no `name`")
        if model.name in seen:
            raise ServingConfigError(f"{source}: model {model.name!r} is configured twice")
        seen.add(model.name)
        if not model.base_path:
            raise ServingConfigError(f"{source}: model {model.name!r} has no `base_path`")
        if model.model_platform not in ("", "tensorflow"):
            raise ServingConfigError(
                f"Invalid value for `model_platform` of model {model.name!r}: received "
                f"{model.model_platform!r}; expected 'tensorflow'."
            )
        policy_proto = model.model_version_policy
        choice = policy_proto.WhichOneof("policy_choice")
        if choice == "all":
            policy = VersionPolicy("all")
        elif choice == "specific":
            if not policy_proto.specific.versions:
                raise ServingConfigError(
                    f"{source}: model {model.name!r} has a `specific` version policy with no versions"
                )
            policy = VersionPolicy("specific", versions=tuple(policy_proto.specific.versions))
        else:
            num = policy_proto.latest.num_versions if choice == "latest" else 1
            policy = VersionPolicy("latest", num_versions=max(int(num), 1))
        out.append(
            ModelSettings(
                name=model.name,
                base_path=model.base_path,
                policy=policy,
                labels=dict(model.version_labels),
            )
        )
    return out


def parse_model_server_config(text: str, *, source: str = "model config") -> Any:
    """A ``ModelServerConfig`` message from its text form."""
    from google.protobuf import text_format

    config = _model_server_config_pb2().ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ServingConfigError(f"{source}: not a text ModelServerConfig: {err}") from None
    return config


def read_model_server_config(path: str | Path) -> Any:
    """Read a text ``ModelServerConfig``; a missing file reads as an empty model list."""
    path = Path(path)
    if not path.exists():
        config = _model_server_config_pb2().ModelServerConfig()
        config.model_config_list.SetInParent()
        return config
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ServingConfigError(f"{path}: cannot read model config: {err}") from None
    return parse_model_server_config(text, source=str(path))


def load_model_settings(path: str | Path) -> list[ModelSettings]:
    """The models configured in ``--model_config_file``."""
    path = Path(path)
    if not path.is_file():
        raise ServingConfigError(
            f"Invalid value for `--model_config_file`: received {str(path)!r}; expected an "
            "existing text ModelServerConfig file."
        )
    return settings_from_proto(read_model_server_config(path), source=str(path))


def format_model_server_config(config: Any) -> str:
    from google.protobuf import text_format

    return str(text_format.MessageToString(config))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of ``path`` between processes (a ``.lock`` file)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def write_model_server_config(path: str | Path, config: Any) -> None:
    """Write ``config`` to ``path`` atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".models.config-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(format_model_server_config(config))
            out.flush()
            os.fsync(out.fileno())  # renamed only once its bytes are on disk
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _find_model(config: Any, name: str) -> Any | None:
    for model in config.model_config_list.config:
        if model.name == name:
            return model
    return None


def _sync_policy(model: Any) -> None:
    """Serve exactly the labelled versions (unless the policy already serves all)."""
    if model.model_version_policy.WhichOneof("policy_choice") == "all":
        return
    targets = sorted(set(model.version_labels.values()))
    if not targets:
        return
    model.model_version_policy.specific.ClearField("versions")
    model.model_version_policy.specific.versions.extend(targets)


def register_version(
    config_path: str | Path,
    *,
    model_name: str,
    base_path: str | Path,
    version: int,
    label: str = CANARY,
) -> dict[str, int]:
    """Record a new export in ``models.config``: ``label`` -> ``version``.

    The model entry is created when missing (``stable`` then points at this version
    too). Returns the model's labels after the change.
    """
    path = Path(config_path)
    with _locked(path):
        config = read_model_server_config(path)
        model = _find_model(config, model_name)
        if model is None:
            model = config.model_config_list.config.add()
            model.name = model_name
            model.model_platform = "tensorflow"
        model.base_path = str(Path(base_path).resolve())
        model.version_labels[label] = int(version)
        if STABLE not in model.version_labels:
            model.version_labels[STABLE] = int(version)
        _sync_policy(model)
        write_model_server_config(path, config)
        return dict(model.version_labels)


def move_label(
    config_path: str | Path, *, model_name: str, version: int, label: str = STABLE
) -> int | None:
    """Point ``label`` of ``model_name`` at ``version``; returns the version it pointed at.

    Raises:
        ServingConfigError: the file has no such model.
    """
    path = Path(config_path)
    with _locked(path):
        config = read_model_server_config(path)
        model = _find_model(config, model_name)
        if model is None:
            raise ServingConfigError(_unknown_model(path, config, model_name))
        previous = model.version_labels.get(label)
        model.version_labels[label] = int(version)
        _sync_policy(model)
        write_model_server_config(path, config)
        return int(previous) if previous is not None else None


def model_settings(config_path: str | Path, model_name: str) -> ModelSettings:
    """The one model ``model_name`` from a ``models.config``."""
    path = Path(config_path)
    config = read_model_server_config(path)
    for settings in settings_from_proto(config, source=str(path)):
        if settings.name == model_name:
            return settings
    raise ServingConfigError(_unknown_model(path, config, model_name))


def rollback_target(settings: ModelSettings, on_disk: list[int], label: str = STABLE) -> int:
    """The version a rollback moves ``label`` to: the newest one on disk below it."""
    current = settings.labels.get(label)
    if current is None:
        raise ServingConfigError(
            f"model {settings.name!r} has no {label!r} label to roll back; labels: "
            f"{dict(settings.labels) or 'none'}"
        )
    older = [v for v in on_disk if v < current]
    if not older:
        raise ServingConfigError(
            f"model {settings.name!r}: no version older than {label} version {current} under "
            f"{settings.base_path} (versions on disk: {on_disk or 'none'})"
        )
    return older[-1]


def _unknown_model(path: Path, config: Any, name: str) -> str:
    known = [m.name for m in config.model_config_list.config]
    return (
        f"Invalid value for model name: received {name!r}; expected one of "
        f"{', '.join(repr(k) for k in known) or '(none)'} (from {path})."
    )


# ------------------------------------------------------------ batching / monitoring


@cache
def _text_messages() -> dict[str, Any]:
    """Message classes for ``BatchingParameters`` and ``MonitoringConfig`` (upstream field numbers)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="kts/serving_text_configs.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )

    def message(name: str, fields: list[tuple[str, int, int, str, bool]]) -> None:
        m = proto.message_type.add(name=name)
        for fname, number, ftype, type_name, repeated in fields:
            f = m.field.add(
                name=fname,
                number=number,
                type=ftype,
                label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL,
            )
            if type_name:
                f.type_name = type_name

    i64, s, b = (
        ".google.protobuf.Int64Value",
        ".google.protobuf.StringValue",
        ".google.protobuf.BoolValue",
    )
    msg = F.TYPE_MESSAGE
    message(
        "BatchingParameters",
        [
            ("max_batch_size", 1, msg, i64, False),
            ("batch_timeout_micros", 2, msg, i64, False),
            ("max_enqueued_batches", 3, msg, i64, False),
            ("num_batch_threads", 4, msg, i64, False),
            ("thread_pool_name", 5, msg, s, False),
            ("allowed_batch_sizes", 6, F.TYPE_INT64, "", True),
            ("pad_variable_length_inputs", 7, F.TYPE_BOOL, "", False),
            ("enable_large_batch_splitting", 8, msg, b, False),
            ("max_execution_batch_size", 9, msg, i64, False),
        ],
    )
    message(
        "PrometheusConfig",
        [("enable", 1, F.TYPE_BOOL, "", False), ("path", 2, F.TYPE_STRING, "", False)],
    )
    message(
        "MonitoringConfig",
        [("prometheus_config", 1, msg, ".tensorflow.serving.PrometheusConfig", False)],
    )
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"tensorflow.serving.{name}")
        )
        for name in ("BatchingParameters", "MonitoringConfig")
    }


def _parse_text_file(path: str | Path, message_name: str, flag: str) -> Any:
    from google.protobuf import text_format

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ServingConfigError(
            f"Invalid value for `{flag}`: received {str(path)!r}; expected a readable text "
            f"{message_name} file ({err.__class__.__name__})."
        ) from None
    message = _text_messages()[message_name]()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        raise ServingConfigError(f"{path}: not a text {message_name}: {err}") from None
    return message


@dataclass(frozen=True)
class BatchingParameters:
    """The batching knobs TensorFlow Serving reads (defaults are upstream's)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ServingConfigError(
                    f"Invalid value for `{name}`: received {getattr(self, name)}; expected >= 1."
                )
        if self.batch_timeout_micros < 0:
            raise ServingConfigError(
                f"Invalid value for `batch_timeout_micros`: received {self.batch_timeout_micros}; "
                "expected >= 0."
            )
        sizes = list(self.allowed_batch_sizes)
        if sizes and (sizes != sorted(set(sizes)) or sizes[-1] != self.max_batch_size):
            raise ServingConfigError(
                f"Invalid value for `allowed_batch_sizes`: received {sizes}; expected strictly "
                f"increasing sizes ending with max_batch_size ({self.max_batch_size})."
            )


def read_batching_parameters(path: str | Path) -> BatchingParameters:
    """Parse ``--batching_parameters_file`` (TensorFlow Serving's text format)."""
    msg = _parse_text_file(path, "BatchingParameters", "--batching_parameters_file")
    values: dict[str, Any] = {}
    for name in (
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
    ):
        if msg.HasField(name):
            values[name] = int(getattr(msg, name).value)
    values["allowed_batch_sizes"] = tuple(int(v) for v in msg.allowed_batch_sizes)
    values["pad_variable_length_inputs"] = bool(msg.pad_variable_length_inputs)
    return BatchingParameters(**values)


def read_monitoring_config(path: str | Path) -> str | None:
    """The Prometheus path from ``--monitoring_config_file``, or None when not enabled."""
    msg = _parse_text_file(path, "MonitoringConfig", "--monitoring_config_file")
    prometheus = msg.prometheus_config
    if not prometheus.enable:
        return None
    return prometheus.path or PROMETHEUS_PATH
