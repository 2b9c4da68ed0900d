"""The `kts` entry point: fast help, exit codes."""

from __future__ import annotations

from tests.helpers import kts, kts_probe


def test_help_does_not_import_tensorflow():
    result = kts_probe(["--help"])
    assert result.returncode == 0, result.stderr
    assert "Usage: kts" in result.stdout
    assert "run" in result.stdout
    assert "validate" in result.stdout
    assert result.stdout.rstrip().endswith("HEAVY=")


def test_validate_does_not_import_tensorflow():
    result = kts_probe(["validate", "pipelines/configs/digits_cnn.yaml"])
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
