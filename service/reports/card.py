"""A one-page Markdown model card: data, split, metrics, parameters, layers, pictures."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from service.errors import invalid_value


def format_value(value: Any) -> str:
    """Text for a table cell: floats with 4 decimals (or 4 significant digits if tiny/huge)."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if math.isfinite(value) and (value == 0 or 1e-3 <= abs(value) < 1e6):
        return f"{value:.4f}"
    return f"{value:.4g}"


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _cell(value: Any, *, metric: bool = False) -> str:
    text = format_value(value) if metric else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(data: Mapping[str, Any], header: tuple[str, str], *, metric: bool) -> list[str]:
    rows = _flatten(data)
    if not rows:
        return ["_none recorded_", ""]
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {_cell(k)} | {_cell(v, metric=metric)} |" for k, v in rows.items()]
    return [*lines, ""]


def _title(file_name: str) -> str:
    return Path(file_name).stem.replace("_", " ").capitalize()


def model_card(
    path: str | Path,
    *,
    name: str,
    data: Mapping[str, Any],
    split: Mapping[str, Any],
    metrics: Mapping[str, Any],
    params: Mapping[str, Any],
    images: Sequence[str],
    layer_table: str | None,
    skipped: Mapping[str, str] | None = None,
    bless: Mapping[str, Any] | None = None,
) -> Path:
    """Write a one-page Markdown model card.

    What it is for: one page to read in the MLflow artifact view (or any Markdown
    viewer) that says what the model was trained on, how well it does and what it
    looks like inside.

    Args:
        path: the ``.md`` file to write; pictures are linked relative to its folder.
        name: model name, the page title.
        data: data source facts (e.g. ``{"source": "sklearn digits", "rows": 1797}``).
        split: split facts (sizes, fingerprint, class counts); nested dicts become
            dotted keys.
        metrics: final metrics, e.g. ``{"test_accuracy": 0.9733}``; floats shown
            with 4 decimals (4 significant digits when tiny or huge).
        params: hyper-parameters (flattened config values), shown as given.
        images: picture files to embed, relative to the card's folder (absolute paths
            are made relative).
        layer_table: the ``describe`` per-layer table as plain text, or None.
        skipped: picture name -> why it was not drawn (listed under "Not drawn").
        bless: the bless gate's verdict and the rows it compared on (e.g.
            ``{"blessed": True, "rows": 268, "rows_rule": "..."}``); a "Bless gate"
            section after the metrics when given.

    Returns:
        ``path``.
    """
    if not name:
        raise invalid_value("name", name, "a non-empty model name")
    out = Path(path)
    lines = [f"# Model card: {name}", ""]
    sections = [
        ("Data", data, ("field", "value")),
        ("Split", split, ("field", "value")),
        ("Metrics", metrics, ("metric", "value")),
        *([("Bless gate", bless, ("field", "value"))] if bless else []),
        ("Parameters", params, ("parameter", "value")),
    ]
    for title, table, header in sections:
        metric = title in ("Metrics", "Bless gate")
        lines += [f"## {title}", "", *_table(table, header, metric=metric)]
    if layer_table:
        lines += ["## Layers", "", "```text", layer_table.rstrip("\n"), "```", ""]
    if images or skipped:
        lines += ["## Pictures", ""]
    for image in images:
        rel = Path(image)
        if rel.is_absolute():
            rel = Path(os.path.relpath(rel, out.parent.resolve()))
        link = rel.as_posix()
        if " " in link:
            link = f"<{link}>"
        lines += [f"### {_title(rel.name)}", "", f"![{_title(rel.name)}]({link})", ""]
    if skipped:
        lines += ["### Not drawn", ""]
        lines += [f"- {_cell(k)}: {_cell(v)}" for k, v in skipped.items()]
        lines.append("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    return out
