"""Preflight: an output the run cannot write is exit 2 before data is read or anything recorded.

Each case runs `kts run` as a real process through `kts_probe`, which also reports
whether TensorFlow or MLflow were imported: a problem found before either was
imported was found within a second or two, before the data was read and before any
MLflow store or run could exist.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.helpers import CONFIGS, TINY, assert_user_error, free_port, heavy_imports, kts, kts_probe

DEFAULT = str(CONFIGS / "digits_cnn.yaml")
RUN = ["run", DEFAULT, *TINY]


def _unwritable_folder(tmp_path: Path) -> Path:
    """An existing folder this process cannot create files in.

    Mode 0o555 stops everyone but root, and root ignores modes (tests often run as
    root in containers): there, sysfs, where nobody can create a regular file.
    """
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
    else:
        folder = Path("/sys")
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return folder
    os.close(fd)
    os.unlink(name)
    pytest.skip(f"no folder here refuses writes (tried {folder})")


def _bad_folder(tmp_path: Path, how: str) -> tuple[Path, str]:
    """(a folder path that cannot be written, a phrase the error names it by)."""
    if how == "file_in_the_way":
        (tmp_path / "a-file").write_text("not a folder\n")
        return tmp_path / "a-file" / "sub", "is a file, not a folder"
    return _unwritable_folder(tmp_path) / "sub", "cannot write in"


def _nothing_recorded(tmp_path: Path) -> None:
    assert not (tmp_path / "mlflow.db").exists()  # no store, so no MLflow run
    assert not (tmp_path / "mlruns").exists()
    assert not (tmp_path / "runs").exists()  # no run folder, backup or lock
    assert not (tmp_path / "serving_models").exists()


@pytest.mark.parametrize("how", ["file_in_the_way", "unwritable"])
@pytest.mark.parametrize("output", ["work_dir", "export.base_path", "--output-json"])
def test_unwritable_output_is_exit_2_before_anything_runs(tmp_path, output, how):
    bad, phrase = _bad_folder(tmp_path, how)
    if output == "--output-json":
        extra = ["--output-json", str(bad / "summary.json")]
    else:
        extra = ["--set", f"{output}={bad}"]
    result = kts_probe([*RUN, *extra], cwd=tmp_path)
    assert_user_error(result, f"`{output}`", str(bad), phrase)
    assert heavy_imports(result) == ""  # before TensorFlow and MLflow: within seconds
    _nothing_recorded(tmp_path)


@pytest.mark.parametrize(
    "case", ["unknown_scheme", "two_slashes", "file_in_the_way", "unwritable", "not_sqlite", "down"]
)
def test_bad_store_uri_is_exit_2_before_anything_runs(tmp_path, case):
    if case == "unknown_scheme":
        uri, needles = "mlfow://tracking:5000", ["unknown scheme 'mlfow'", "sqlite:///PATH"]
    elif case == "two_slashes":
        uri, needles = "sqlite://mlflow.db", ["three slashes"]
    elif case in ("file_in_the_way", "unwritable"):
        folder, phrase = _bad_folder(tmp_path, case)
        uri, needles = f"sqlite:///{folder}/mlflow.db", [str(folder), phrase]
    elif case == "not_sqlite":
        notes = tmp_path / "notes.db"
        notes.write_text("my notes, not a database\n")
        uri, needles = f"sqlite:///{notes}", ["is not an SQLite database"]
    else:
        uri, needles = f"http://127.0.0.1:{free_port()}", ["unreachable", "tracking.required"]
    result = kts_probe([*RUN, "--set", f"tracking.uri={uri}"], cwd=tmp_path)
    assert_user_error(result, "tracking.uri", *needles)
    assert heavy_imports(result) == ""
    _nothing_recorded(tmp_path)
    if case == "not_sqlite":
        assert notes.read_text() == "my notes, not a database\n"


def test_read_only_store_file_is_exit_2_before_anything_runs(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes read-only files: no read-only SQLite file to test with")
    store = tmp_path / "store.db"
    store.write_bytes(b"")
    store.chmod(0o444)
    result = kts_probe([*RUN, "--set", f"tracking.uri=sqlite:///{store}"], cwd=tmp_path)
    assert_user_error(result, "tracking.uri", f"{store} is read-only")
    assert heavy_imports(result) == ""


def test_bad_store_uri_from_the_environment_names_the_variable(tmp_path):
    result = kts_probe(RUN, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": "mlfow://tracking:5000"})
    assert_user_error(result, "$MLFLOW_TRACKING_URI", "'mlfow://tracking:5000'")
    assert heavy_imports(result) == ""
    _nothing_recorded(tmp_path)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "model_config_list { config { name: 'digits_cnn' base_path: ",
            "not a text ModelServerConfig",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/m/a' } "
            "config { name: 'a' base_path: '/m/b' } }",
            "configured twice",
        ),
    ],
)
def test_corrupt_models_config_is_exit_2_before_training(tmp_path, text, needle):
    config = tmp_path / "serving_models" / "models.config"
    config.parent.mkdir()
    config.write_text(text)
    result = kts_probe(RUN, cwd=tmp_path)
    assert_user_error(
        result,
        "`export.base_path`: received 'serving_models'",
        "serving_models/models.config",
        needle,
    )
    assert heavy_imports(result) == ""
    assert config.read_text() == text  # left as it was
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ bless.metric
def test_bless_metric_of_another_task_is_exit_2_before_tracking(tmp_path):
    # data.task auto: digits turn out to be multiclass once read, which has no test_rmse.
    result = kts([*RUN, "--set", "bless.metric=test_rmse"], cwd=tmp_path)
    assert_user_error(result, "`bless.metric`", "'test_rmse'", "multiclass")
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "serving_models").exists()
