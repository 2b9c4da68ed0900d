"""The spine end to end: digits -> split -> CNN -> MLflow -> TF-Serving export."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.config import SplitConfig
from service.data.sources import load_digits
from service.data.split import make_split
from tests.helpers import CONFIGS, kts

DEFAULT = CONFIGS / "digits_cnn.yaml"
NO_SEARCH = ["--set", "tuning.enabled=false"]  # the spine itself; tests/test_tuning.py searches


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_kts_run_tracks_and_exports(tmp_path, digits, monkeypatch):
    import mlflow.pyfunc
    import tensorflow as tf
    from mlflow.tracking import MlflowClient

    result = kts(
        [
            "run",
            str(DEFAULT),
            *NO_SEARCH,
            "--set",
            "training.epochs=3",
            "--output-json",
            "out.json",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out.json").read_text())
    assert set(summary) >= {"run_id", "experiment", "metrics", "export"}
    assert summary["run_id"] in result.stdout
    assert "mlflow ui --backend-store-uri" in result.stdout
    assert "kts serve --model_name=digits_cnn" in result.stdout
    assert summary["export"]["version"] == 1

    # MLflow: the embedded default store in the working directory holds the run.
    assert (tmp_path / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["training.epochs"] == "3"
    assert params["model.type"] == "simple_cnn"
    assert params["training.optimizer.name"] == "adam"
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == list(range(summary["epochs_run"]))
    assert len(client.get_metric_history(run.info.run_id, "accuracy")) == summary["epochs_run"]
    assert run.data.metrics["test_accuracy"] == pytest.approx(summary["metrics"]["test_accuracy"])
    assert run.data.tags["kts.split_fingerprint"] == summary["split_fingerprint"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.resolved.yaml", "split.json"} <= artifacts

    # Export: named signature, raw pixels in, and it reproduces the logged test score
    # on the same (recomputed) test split.
    assert summary["blessed"] is True
    assert summary["registered_version"] == "1"
    assert summary["registered_alias"] == "champion"
    champion = client.get_model_version_by_alias("digits_cnn", "champion")
    assert champion.run_id == summary["run_id"]
    assert champion.tags["kts.serving_version"] == "1"
    export = summary["export"]["path"]

    # The registered version is the run's logged MLflow model: signature and input
    # example from the export, tagged with the serving version, answering as it does.
    logged = client.get_logged_model(champion.source.removeprefix("models:/"))
    assert logged.source_run_id == summary["run_id"]
    assert logged.tags["kts.serving_version"] == "1"
    assert logged.tags["kts.export_path"] == export
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    pyfunc = mlflow.pyfunc.load_model("models:/digits_cnn@champion")
    assert pyfunc.metadata.get_input_schema().input_names() == ["image"]
    assert set(pyfunc.metadata.get_output_schema().input_names()) == {
        "probabilities",
        "class_ids",
    }
    example = pyfunc.input_example
    assert np.asarray(example["image"]).shape[1:] == (8, 8, 1)
    rows = digits.x[:5]
    expected = tf.saved_model.load(export).signatures["serving_default"](image=tf.constant(rows))
    answer = pyfunc.predict({"image": rows})
    np.testing.assert_allclose(
        answer["probabilities"], expected["probabilities"].numpy(), atol=1e-6
    )
    np.testing.assert_array_equal(answer["class_ids"], expected["class_ids"].numpy())
    loaded = tf.saved_model.load(export)
    serve = loaded.signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["image"]
    assert set(serve.structured_outputs) == {"probabilities", "class_ids"}
    # The run's split, recomputed from the rows' keys (the run's seed plays no part).
    split = make_split(digits.y, SplitConfig(), keys=digits.keys, classification=True)
    assert split.fingerprint == summary["split_fingerprint"]
    out = serve(image=tf.constant(digits.x[split.test]))
    probs = out["probabilities"].numpy()
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out["class_ids"].numpy(), probs.argmax(axis=1))
    accuracy = float((out["class_ids"].numpy() == digits.y[split.test]).mean())
    assert accuracy == pytest.approx(summary["metrics"]["test_accuracy"], abs=1e-9)

    # A second run (gate off) gets the next version and a second MLflow run.
    again = kts(
        [
            "run",
            str(DEFAULT),
            *NO_SEARCH,
            "--set",
            "training.epochs=1",
            "--set",
            "bless.enabled=false",
        ],
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "serving_models" / "digits_cnn").iterdir()) == [
        "1",
        "2",
    ]
    experiment = client.get_experiment_by_name("digits_cnn")
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_export_matches_in_memory_model(tmp_path, keras_seed):
    import tensorflow as tf

    from pipelines import steps
    from service.config import load_config
    from service.training.runtime import configure

    cfg = load_config(
        DEFAULT,
        [
            "training.epochs=1",
            f"export.base_path={tmp_path / 'models'}",
            f"work_dir={tmp_path / 'runs'}",
        ],
    )
    runtime = configure(seed=cfg.seed, precision="float32", distribution="none")
    data = steps.ingest(cfg)
    parts = steps.split(cfg, data)
    trained = steps.train(cfg, data, parts, runtime=runtime, callbacks=[])
    exported = steps.export(cfg, data, trained)
    assert exported.version == 1

    sample = data.x[parts.split.test[:50]]
    expected = trained.model.predict(sample, verbose=0)
    serve = tf.saved_model.load(exported.path).signatures["serving_default"]
    out = serve(image=tf.constant(sample))
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["class_ids"].numpy(), expected.argmax(axis=1))
