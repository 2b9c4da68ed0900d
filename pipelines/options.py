"""Command-line options that several `kts` commands share, each defined once.

A leaf module: the command modules and `pipelines.cli` import it, it imports none
of them (and nothing heavy), so ``kts --help`` stays fast.
"""

from __future__ import annotations

import click

set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a dotted config key, e.g. --set training.epochs=3 (repeatable).",
)
