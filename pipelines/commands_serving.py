"""`kts serve`, `kts predict`, `kts promote`, `kts rollback`: the serving side of the CLI.

``kts serve`` takes TensorFlow Serving's flag names (``--port=8500`` and ``--port 8500``
both work; booleans accept ``--enable_batching``, ``--enable_batching=true|false``).
Nothing here imports TensorFlow at module level, so ``kts --help`` stays fast; the
`serving` package raises its own errors and this module turns bad input into
`UserError` (exit code 2, one line on stderr).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from pipelines.stderr import native_stderr_muted
from service.errors import UserError, invalid_value

DEFAULT_MODEL_CONFIG = Path("serving_models") / "models.config"
_TRUE = ("true", "1", "yes", "t", "y")
_FALSE = ("false", "0", "no", "f", "n")


def _bool(flag: str, value: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise invalid_value(flag, value, ["true", "false"])


def _bool_option(name: str, default: bool, help_text: str) -> Any:
    return click.option(
        name,
        is_flag=False,
        flag_value="true",
        default="true" if default else "false",
        show_default=True,
        metavar="[=true|false]",
        help=help_text,
    )


def _as_user_error(err: Exception) -> UserError:
    return UserError(str(err).replace("\n", " "))


def _quiet_tensorflow() -> None:
    from pipelines.stderr import quiet_tensorflow

    quiet_tensorflow()


@click.command(context_settings={"show_default": True})
@click.option("--port", type=int, default=8500, help="gRPC port (0 disables gRPC).")
@click.option("--rest_api_port", type=int, default=0, help="REST port (0 disables REST).")
@click.option(
    "--model_name", default="default", help="Name of the model (ignored with --model_config_file)."
)
@click.option(
    "--model_base_path",
    default="",
    help="Folder of integer version folders (ignored with --model_config_file).",
)
@click.option(
    "--model_config_file",
    default="",
    help="Text ModelServerConfig: models, version policies, labels.",
)
@click.option(
    "--model_config_file_poll_wait_seconds",
    type=int,
    default=0,
    help="Re-read --model_config_file this often (0: never).",
)
@click.option(
    "--file_system_poll_wait_seconds",
    type=int,
    default=1,
    help="Look for new versions this often (0: only at start).",
)
@_bool_option("--enable_batching", False, "Batch concurrent Predict requests.")
@click.option(
    "--batching_parameters_file",
    default="",
    help="Text BatchingParameters (max_batch_size, batch_timeout_micros, ...).",
)
@click.option(
    "--monitoring_config_file",
    default="",
    help="Text MonitoringConfig; prometheus_config { enable: true } serves metrics on the REST port.",
)
@click.option(
    "--metrics_port",
    type=int,
    default=0,
    help="Also serve Prometheus metrics on this port (/metrics).",
)
@_bool_option(
    "--enable_model_warmup",
    True,
    "Replay assets.extra/tf_serving_warmup_requests before serving a version.",
)
@click.option(
    "--num_request_iterations_for_warmup",
    type=int,
    default=0,
    help="Times each warm-up record is replayed (used if > 0).",
)
@click.option(
    "--max_num_load_retries", type=int, default=5, help="Retries after a failed version load."
)
@click.option(
    "--load_retry_interval_micros", type=int, default=60_000_000, help="Wait between load retries."
)
@_bool_option(
    "--allow_version_labels_for_unavailable_models",
    False,
    "Let a new label point at a version not loaded yet.",
)
@_bool_option("--rest_api_enable_cors_support", False, "Add CORS headers to REST answers.")
@click.option(
    "--grpc_max_threads",
    type=int,
    default=None,
    help="gRPC handler threads [default: max(64, 4 x CPUs)].",
)
@click.option(
    "--max_request_bytes",
    type=int,
    default=64 * 1024 * 1024,
    help="Largest request body (REST 413, gRPC RESOURCE_EXHAUSTED).",
)
@click.option(
    "--host", default="0.0.0.0", help="Address to bind (TF Serving binds all interfaces)."
)
def serve(**flags: Any) -> None:
    """Serve SavedModels over TensorFlow Serving's gRPC and REST APIs (its flag names)."""
    from serving.errors import ServingConfigError
    from serving.server import ServerOptions, check_options
    from serving.server import serve as run_server

    for name in (
        "enable_batching",
        "enable_model_warmup",
        "allow_version_labels_for_unavailable_models",
        "rest_api_enable_cors_support",
    ):
        flags[name] = _bool(f"--{name}", flags[name])
    if flags["grpc_max_threads"] is None:
        del flags["grpc_max_threads"]
    elif flags["grpc_max_threads"] < 1:
        raise invalid_value("--grpc_max_threads", flags["grpc_max_threads"], "a positive integer")
    for name in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        if flags[name] and not Path(flags[name]).is_file():
            raise invalid_value(f"--{name}", flags[name], "an existing file")
    options = ServerOptions(**flags)
    try:
        checked = check_options(options)
        _quiet_tensorflow()
        run_server(options, checked)
    except ServingConfigError as err:
        raise _as_user_error(err) from None


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--server",
    required=True,
    metavar="HOST:PORT",
    help="The server's REST (or, with --protocol grpc, gRPC) address.",
)
@click.option("--model", required=True, help="Served model name.")
@click.option("--protocol", type=click.Choice(["rest", "grpc"]), default="rest", show_default=True)
@click.option("--version", "model_version", type=int, default=None, help="Ask for this version.")
@click.option("--label", default=None, help="Ask for the version with this label (stable, canary).")
@click.option(
    "--signature_name", default=None, help="Signature to call (default: serving_default)."
)
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait.")
def predict(
    file: Path,
    server: str,
    model: str,
    protocol: str,
    model_version: int | None,
    label: str | None,
    signature_name: str | None,
    timeout: float,
) -> None:
    """Send FILE (a TF Serving REST predict body: {"instances": ...} or {"inputs": ...}) and print the answer."""
    if model_version is not None and label is not None:
        raise UserError("Invalid value for `--label`: pass either --version or --label, not both.")
    if ":" not in server:
        raise invalid_value("--server", server, "HOST:PORT")
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(
            f"Invalid value for FILE: cannot read {str(file)!r} ({err.__class__.__name__})."
        ) from None
    try:
        document = json.loads(text)
    except ValueError as err:
        raise UserError(f"Invalid value for FILE: {str(file)!r} is not JSON ({err}).") from None
    if not isinstance(document, dict) or not ({"instances", "inputs"} & set(document)):
        raise UserError(
            f"Invalid value for FILE: {str(file)!r} must be a JSON object with 'instances' (row "
            "format) or 'inputs' (columnar format)."
        )
    if signature_name:
        document["signature_name"] = signature_name
    from serving.client import ServingClientError

    try:
        if protocol == "rest":
            from serving.client import RestClient

            rest = RestClient(server, timeout=timeout)
            answer = rest.post(model, "predict", document, version=model_version, label=label)
        else:
            _quiet_tensorflow()
            from serving.client import GrpcClient

            with native_stderr_muted():
                grpc_client = GrpcClient(server, timeout=timeout)
                answer = grpc_client.predict_json(
                    model, document, version=model_version, label=label
                )
    except ServingClientError as err:
        raise UserError(f"{server} answered {err.code}: {err.message}".replace("\n", " ")) from None
    click.echo(json.dumps(answer, indent=2, allow_nan=True))


_config_option = click.option(
    "--model_config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_MODEL_CONFIG,
    show_default=True,
    help="The models.config whose label moves (written by the export).",
)
_label_option = click.option(
    "--label", default="stable", show_default=True, help="The label to move."
)
_server_option = click.option(
    "--server",
    default=None,
    metavar="HOST:PORT",
    help="A running server's gRPC address: load the version there first, then move the label there too.",
)


def _move(action: str, run: Any) -> None:
    from serving.errors import ServingConfigError

    try:
        with native_stderr_muted():
            move = run()
    except ServingConfigError as err:
        raise _as_user_error(err) from None
    previous = "(none)" if move.previous is None else move.previous
    click.echo(f"{action} {move.model!r}: {move.label} {previous} -> {move.version}")


@click.command()
@click.argument("name")
@click.argument("version", type=int)
@_config_option
@_label_option
@_server_option
def promote(
    name: str, version: int, model_config_file: Path, label: str, server: str | None
) -> None:
    """Point NAME's label (stable) at VERSION in models.config, after VERSION loads."""
    if not model_config_file.is_file():
        raise invalid_value(
            "--model_config_file", str(model_config_file), "an existing models.config"
        )
    from serving import release

    _move(
        "promoted",
        lambda: release.promote(
            model_config_file, name, version, label=label, server=server, log=_log
        ),
    )


@click.command()
@click.argument("name")
@_config_option
@_label_option
@_server_option
def rollback(name: str, model_config_file: Path, label: str, server: str | None) -> None:
    """Point NAME's label (stable) back at the previous version, after it loads."""
    if not model_config_file.is_file():
        raise invalid_value(
            "--model_config_file", str(model_config_file), "an existing models.config"
        )
    from serving import release

    _move(
        "rolled back",
        lambda: release.rollback(model_config_file, name, label=label, server=server, log=_log),
    )


def _log(message: str) -> None:
    click.echo(message)


COMMANDS = (serve, predict, promote, rollback)
