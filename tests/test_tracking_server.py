"""Tracking against a real `mlflow server` on 127.0.0.1 over HTTP, and with it down."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import CONFIGS, assert_user_error, free_port, kts

DEFAULT = str(CONFIGS / "digits_cnn.yaml")
SMALL = [
    "--set",
    "tuning.enabled=false",  # tracking, not the search (tests/test_tuning.py)
    "--set",
    "model.filters=[8]",
    "--set",
    "model.dense_units=32",
    "--set",
    "training.epochs=3",
]


@pytest.mark.slow
def test_run_against_http_server_records_everything(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient
    from PIL import Image

    result = kts(
        [
            "run",
            DEFAULT,
            *SMALL,
            "--set",
            f"tracking.uri={mlflow_server}",
            "--set",
            "tracking.experiment=http-e2e",
            "--set",
            "tracking.system_metrics_interval=1",
            "--set",
            "registry.model_name=http-e2e",
            "--output-json",
            "out.json",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out.json").read_text())
    assert not (tmp_path / "mlflow.db").exists()  # nothing in the local default store
    assert not (tmp_path / "mlruns").exists()  # artifacts went to the server too

    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(summary["run_id"])
    params = run.data.params
    assert params["training.epochs"] == "3"
    assert params["model.filters"] == "[8]"
    assert params["data.split.train"] == "0.7"
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == list(range(summary["epochs_run"]))
    assert run.data.metrics["test_accuracy"] == pytest.approx(summary["metrics"]["test_accuracy"])
    assert run.data.tags["kts.precision"] == "float32"
    assert run.data.tags["kts.strategy"] == "none"

    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    assert inputs[0].dataset.digest
    assert "features" in inputs[0].dataset.schema or "tensor" in inputs[0].dataset.schema.lower()
    tags = {t.key: t.value for t in inputs[0].tags}
    assert tags["kts.split_fingerprint"] == summary["split_fingerprint"]

    reports = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "reports")}
    expected = {
        "learning_curves.png",
        "confusion_matrix.png",
        "grad_cam.png",
        "projection.png",
        "model_card.md",
        "layers.txt",
    }
    assert expected <= reports, reports
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(client.download_artifacts(run.info.run_id, "reports", scratch))
        for name in sorted(expected):
            if name.endswith(".png"):
                pixels = np.asarray(Image.open(local / name).convert("L"), dtype="float64")
                assert pixels.var() > 0, name
        card = (local / "model_card.md").read_text()
        assert summary["split_fingerprint"] in card
        assert "learning_curves.png" in card
        assert "test_accuracy" in card

    # System metrics, sampled every second while the run was open.
    cpu = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    assert len(cpu) >= 2
    assert all(0 <= m.value <= 100 * 64 for m in cpu)
    assert client.get_metric_history(run.info.run_id, "system/system_memory_usage_megabytes")

    # The run's MLflow model, through the server's artifact proxy: the registered
    # champion, with the export's signature, answering as the export does.
    version = client.get_model_version_by_alias("http-e2e", "champion")
    assert version.run_id == run.info.run_id
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.tags["kts.serving_version"] == str(summary["export"]["version"])
    _assert_pyfunc_matches_export(mlflow_server, version.source, summary["export"]["path"])


def _assert_pyfunc_matches_export(uri: str, model_uri: str, export: str) -> None:
    import mlflow
    import mlflow.pyfunc
    import tensorflow as tf

    from service.data.sources import load_digits

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(previous)
    assert model.metadata.get_input_schema().input_names() == ["image"]
    assert np.asarray(model.input_example["image"]).shape[1:] == (8, 8, 1)
    rows = load_digits().x[:7]
    served = tf.saved_model.load(export).signatures["serving_default"](image=tf.constant(rows))
    answer = model.predict({"image": rows})
    np.testing.assert_allclose(answer["probabilities"], served["probabilities"].numpy(), atol=1e-6)
    np.testing.assert_array_equal(answer["class_ids"], served["class_ids"].numpy())


def test_unreachable_server_exits_2_naming_the_uri(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    result = kts(
        ["run", DEFAULT, *SMALL, "--set", f"tracking.uri={uri}"], cwd=tmp_path, timeout=300
    )
    assert_user_error(result, uri, "unreachable", "tracking.required: false")
    assert not (tmp_path / "serving_models").exists()


@pytest.mark.slow
def test_unreachable_server_not_required_trains_and_records_locally(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"http://127.0.0.1:{free_port()}"
    result = kts(
        [
            "run",
            DEFAULT,
            *SMALL,
            "--set",
            f"tracking.uri={uri}",
            "--set",
            "tracking.required=false",
            "--set",
            "tracking.reports=false",
            "--output-json",
            "out.json",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out.json").read_text())
    local = tmp_path / "runs" / "digits_cnn" / "mlflow.db"
    assert local.is_file()
    assert str(local) in result.stdout  # the summary names the local store
    assert any(uri in note for note in summary["notes"])
    run = MlflowClient(tracking_uri=f"sqlite:///{local}").get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert summary["export"]["version"] == 1
