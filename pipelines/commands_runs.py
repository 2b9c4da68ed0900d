"""`kts runs`: recent runs and their key metrics, for terminals without a browser."""

from __future__ import annotations

import click

from service.errors import UserError

KEY_METRICS = ("test_accuracy", "test_f1_macro", "test_roc_auc", "test_rmse", "test_loss")


@click.command()
@click.option("--experiment", help="Experiment name (default: every experiment).")
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default="sqlite:///mlflow.db",
    show_default=True,
    help="MLflow store to read (also $MLFLOW_TRACKING_URI).",
)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
def runs(experiment: str | None, tracking_uri: str, limit: int) -> None:
    """List recent runs with status, blessing, export version and test metrics."""
    from pathlib import Path

    from service.tracking import check_reachable

    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        if not db.is_file():
            raise UserError(
                f"--tracking-uri: no MLflow store at {db.resolve()}; run `kts run` here first "
                "or point --tracking-uri at your store."
            )
    reason = check_reachable(tracking_uri)
    if reason:
        raise UserError(f"--tracking-uri: {tracking_uri} is unreachable ({reason}).")

    import logging

    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = client.search_experiments()
    if experiment is not None:
        chosen = [e for e in experiments if e.name == experiment]
        if not chosen:
            names = ", ".join(sorted(e.name for e in experiments)) or "(none)"
            raise UserError(
                f"Invalid value for `--experiment`: received {experiment!r}; expected one of {names}."
            )
        experiments = chosen
    found = client.search_runs(
        [e.experiment_id for e in experiments],
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    names = {e.experiment_id: e.name for e in experiments}
    header = ["run", "experiment", "status", "blessed", "export"]
    metrics = [m for m in KEY_METRICS if any(m in r.data.metrics for r in found)]
    rows = [header + [m.removeprefix("test_") for m in metrics]]
    for r in found:
        tags = r.data.tags
        rows.append(
            [
                r.info.run_id[:12],
                names.get(r.info.experiment_id, "?"),
                r.info.status,
                {"True": "yes", "False": "no"}.get(tags.get("kts.blessed", ""), "-"),
                tags.get("kts.export_version", "-"),
                *(f"{r.data.metrics[m]:.4f}" if m in r.data.metrics else "-" for m in metrics),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) + len(metrics))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if not found:
        click.echo("(no runs)")
