"""`kts`: the command line. Thin: parse, validate, hand over to the pipeline.

Exit codes: 0 success; 2 bad user input (one line on stderr naming the field or
file, what was received and what is allowed); 1 internal fault (with traceback).
TensorFlow and MLflow are imported only inside the commands that need them, so
``kts --help`` and ``kts validate`` stay fast.
"""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

import click

from pipelines.commands_describe import describe
from pipelines.commands_runs import runs
from pipelines.commands_serving import COMMANDS as SERVING_COMMANDS
from pipelines.commands_tuning import tune_chief, tune_worker
from pipelines.options import set_option
from service.errors import ConfigDeprecationWarning, Terminated, UserError

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "digits_cnn.yaml"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="keras-training-service", prog_name="kts")
def cli() -> None:
    """keras-training-service: train, tune, track and serve Keras models from one YAML file."""


@cli.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@set_option
@click.option(
    "--output-json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the run summary (run id, metrics, export) as JSON to this file.",
)
def run(config: Path | None, overrides: tuple[str, ...], output_json: Path | None) -> None:
    """Run the pipeline in CONFIG (default: the bundled digits CNN)."""
    from service.config import load_config

    cfg = load_config(config or DEFAULT_CONFIG, overrides)
    from pipelines.runner import run as run_pipeline

    # The runner checks every output (this JSON file's folder too) before it reads data.
    summary = run_pipeline(cfg, output_json=output_json)
    click.echo(summary.to_text())
    if output_json is not None:
        try:
            from service.atomic import write_atomic

            write_atomic(output_json, summary.to_json() + "\n")
        except OSError as err:
            raise UserError(
                f"--output-json: cannot write {output_json} ({err.strerror or err}); the run "
                f"itself finished ({summary.run_id or 'not tracked'})."
            ) from None


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@set_option
def validate(config: Path, overrides: tuple[str, ...]) -> None:
    """Check CONFIG (and overrides) without running anything."""
    from service.config import load_config

    cfg = load_config(config, overrides)
    click.echo(f"{config}: ok (pipeline {cfg.name!r}, model {cfg.model.type!r})")


@cli.command()
@click.option(
    "--markdown",
    is_flag=True,
    help="Print the config reference (docs/config.md) instead of the JSON Schema.",
)
def schema(markdown: bool) -> None:
    """Print the pipeline config's JSON Schema (kts schema > kts.schema.json, for editors)."""
    from service.config import reference

    click.echo(reference.markdown() if markdown else reference.json_text(), nl=False)


for _command in SERVING_COMMANDS:  # kts serve, predict, promote, rollback
    cli.add_command(_command)


cli.add_command(describe)
cli.add_command(runs)
cli.add_command(tune_chief)
cli.add_command(tune_worker)


# A user error is one line a person can read: an echoed value (a whole CSV field, a
# binary header) is cut in the middle; the field name and what is allowed stay.
QUOTED_CHARS = 100
ERROR_CHARS = 2000


def one_line(message: str) -> str:
    """``message`` on one line: each quoted value over `QUOTED_CHARS` characters and
    then the whole line over `ERROR_CHARS` are cut in the middle."""
    import re

    def cut(text: str, limit: int) -> str:
        keep = (limit - 5) // 2
        return text if len(text) <= limit else f"{text[:keep]} ... {text[-keep:]}"

    flat = " ".join(message.split())
    flat = re.sub(
        r"'[^']*'|\"[^\"]*\"",  # quotes paired left to right; only long ones are cut
        lambda m: cut(m.group(0), QUOTED_CHARS),
        flat,
    )
    return cut(flat, ERROR_CHARS)


def _show_note(message, category, filename, lineno, file=None, line=None, *, shown) -> None:
    """A config deprecation is one ``kts: note:`` line on stderr; other warnings as usual."""
    if issubclass(category, ConfigDeprecationWarning):
        click.echo(f"kts: note: {one_line(str(message))}", err=True)
    else:
        shown(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    with warnings.catch_warnings():
        warnings.showwarning = functools.partial(_show_note, shown=warnings.showwarning)
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="kts", standalone_mode=False)
    except UserError as err:
        click.echo(f"kts: error: {one_line(str(err))}", err=True)
        return 2
    except click.exceptions.UsageError as err:
        message = err.format_message().replace("\n", " ")
        command = err.ctx.command_path if err.ctx else "kts"
        click.echo(f"{command}: error: {message} (see '{command} --help')", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("kts: aborted", err=True)
        return 130
    except Terminated:
        click.echo("kts: terminated (SIGTERM)", err=True)
        return 143
    except click.exceptions.Exit as err:
        return err.exit_code
    except click.ClickException as err:
        click.echo(f"kts: error: {err.format_message()}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
