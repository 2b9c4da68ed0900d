"""The house rules that are code, not prose: import layers and no cycles."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO


def test_import_contracts_hold():
    """`lint-imports` (the contracts in pyproject.toml, also run by `make lint`) passes:
    service < tuning < pipelines, serving alone, no cycle inside a package."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; "
            "sys.exit(lint_imports_command())",
            "--no-cache",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " kept, 0 broken." in result.stdout, result.stdout[-3000:]
