"""A hyper-parameter search at a glance: the objective against each searched key."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.reports._common import panel_grid, save

STATUS_STYLE = {  # status -> (colour, label); other statuses have no score to draw
    "COMPLETED": ("tab:blue", "completed"),
    "PRUNED": ("0.6", "pruned (Hyperband)"),
}


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def score_vs_hyperparameters(
    rows: Sequence[Mapping[str, Any]],
    *,
    keys: Sequence[str],
    objective: str,
    direction: str = "max",
    log_keys: Sequence[str] = (),
    path: str | Path,
) -> Path:
    """One scatter panel per hyper-parameter: each trial's score against its value.

    Args:
        rows: one per trial, ``{"trial_id", "status", "score", "values": {key: value}}``
            (`tuning.search.trial_rows`); trials without a score (failed) are counted
            in the title, not drawn; a trial where a key was inactive (conditional) is
            not drawn in that key's panel.
        keys: the hyper-parameters, one panel each (in this order).
        objective: the score's name (the y axis); ``direction`` ``max`` or ``min``
            decides which trial is starred as the best.
        log_keys: numeric keys drawn on a log x axis (log-sampled ranges).
        path: the PNG to write.

    Numeric values are drawn on a numeric axis; choices, booleans and lists as
    categories (slightly jittered so equal values stay visible).
    """
    scored = [r for r in rows if r.get("score") is not None and math.isfinite(float(r["score"]))]
    unscored = len(rows) - len(scored)
    best = None
    if scored:
        pick = max if direction == "max" else min
        best = pick(scored, key=lambda r: float(r["score"]))["trial_id"]
    panels = list(keys) or ["(no hyper-parameters)"]
    # Fixed spacing: the constrained layout engine measured every tick label twice and
    # took half of this picture's second (drawn at the end of each search).
    fig, axes = panel_grid(
        len(panels), max_cols=3, width=4.0, height=3.0, title_height=0.5, layout=None
    )
    rows_of_panels = -(-len(panels) // 3)
    inches = 3.0 * rows_of_panels + 0.5
    fig.subplots_adjust(
        left=0.08,
        right=0.98,
        bottom=0.75 / inches,
        top=1 - 0.6 / inches,
        wspace=0.35,
        hspace=0.75 / 3.0 * 2,
    )
    rng = np.random.default_rng(0)
    for ax, key in zip(axes, panels, strict=False):
        present = [r for r in scored if key in r.get("values", {})]
        values = [r["values"][key] for r in present]
        if _numeric(values):
            xs = np.asarray(values, dtype="float64")
            if key in log_keys and len(xs) and (xs > 0).all():
                ax.set_xscale("log")
        else:
            categories = sorted({_label(v) for v in values})
            where = {c: i for i, c in enumerate(categories)}
            xs = np.asarray([where[_label(v)] for v in values], dtype="float64")
            xs = xs + rng.uniform(-0.12, 0.12, len(xs))
            ax.set_xticks(range(len(categories)))
            ax.set_xticklabels(categories, rotation=20 if len(categories) > 3 else 0)
            ax.set_xlim(-0.5, max(len(categories) - 0.5, 0.5))
        ys = np.asarray([float(r["score"]) for r in present], dtype="float64")
        for status, (colour, label) in STATUS_STYLE.items():
            mask = np.asarray([r["status"] == status for r in present], dtype=bool)
            if mask.any():
                ax.scatter(xs[mask], ys[mask], s=28, color=colour, label=label, zorder=2)
        for i, r in enumerate(present):
            if r["trial_id"] == best:
                ax.scatter(
                    [xs[i]], [ys[i]], s=160, marker="*", color="tab:red", label="best", zorder=3
                )
        if not present:
            ax.text(0.5, 0.5, "no scored trial", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(key, fontsize="medium")
        ax.set_ylabel(objective)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[0].legend(handles, labels, fontsize="small")
    failed = f", {unscored} without a score" if unscored else ""
    fig.suptitle(f"{objective} of {len(scored)} trials{failed}")
    return save(fig, path)
