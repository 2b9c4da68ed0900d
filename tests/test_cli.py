"""The `kts` entry point: fast help, exit codes."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO, kts, kts_env

PROBE = """
import sys
from pipelines.cli import main
code = None
try:
    code = main({argv!r})
finally:
    heavy = sorted(m for m in ("tensorflow", "keras", "mlflow") if m in sys.modules)
    print("HEAVY=" + ",".join(heavy))
sys.exit(code)
"""


def _probe(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)],
        cwd=REPO,
        env=kts_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_help_does_not_import_tensorflow():
    result = _probe(["--help"])
    assert result.returncode == 0, result.stderr
    assert "Usage: kts" in result.stdout
    assert "run" in result.stdout
    assert "validate" in result.stdout
    assert result.stdout.rstrip().endswith("HEAVY=")


def test_validate_does_not_import_tensorflow():
    result = _probe(["validate", "pipelines/configs/digits_cnn.yaml"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("HEAVY=")


def test_run_help_lists_options(tmp_path):
    result = kts(["run", "--help"], cwd=tmp_path)
    assert result.returncode == 0
    for flag in ("--set", "--output-json"):
        assert flag in result.stdout


def test_version(tmp_path):
    result = kts(["--version"], cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("kts, version ")
