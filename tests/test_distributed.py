"""Multi-worker training: two local processes with TF_CONFIG on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import CONFIGS, free_port, kts_env


@pytest.mark.slow
@pytest.mark.xdist_group("heavy")
def test_two_workers_train_in_lockstep_and_only_the_chief_exports(tmp_path):
    import tensorflow as tf

    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        cwd = tmp_path / f"worker{index}"
        cwd.mkdir()
        env = kts_env(
            {
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}
                )
            }
        )
        args = [
            sys.executable,
            "-m",
            "pipelines.cli",
            "run",
            str(CONFIGS / "digits_cnn.yaml"),
            "--set",
            "training.distribution=multi_worker",
            "--set",
            "tuning.enabled=false",
            "--set",
            "training.epochs=2",
            "--set",
            "model.filters=[8]",
            "--set",
            "model.dense_units=16",
            "--output-json",
            "out.json",
        ]
        procs.append(
            subprocess.Popen(
                args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]

    chief = json.loads((tmp_path / "worker0" / "out.json").read_text())
    worker = json.loads((tmp_path / "worker1" / "out.json").read_text())
    assert chief["run_id"] is not None
    assert worker["run_id"] is None  # only the chief tracks
    assert chief["export"]["version"] == 1
    assert not (tmp_path / "worker1" / "serving_models").exists()  # only the chief exports
    assert (tmp_path / "worker0" / "mlflow.db").exists()
    assert not (tmp_path / "worker1" / "mlflow.db").exists()
    assert chief["split_fingerprint"] == worker["split_fingerprint"]
    # Each worker read its own rows of the train part: disjoint, equal in number
    # (equal steps), together all of it but at most one row.
    shards = [
        np.load(next((tmp_path / f"worker{i}" / "runs").glob(f"*/shards/worker-{i}.npy")))
        for i in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) > 0
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    from pipelines import steps
    from service.config import load_config

    cfg = load_config(CONFIGS / "digits_cnn.yaml")
    train = steps.split(cfg, steps.ingest(cfg)).split.train
    both = np.concatenate(shards)
    assert set(both.tolist()) <= set(train.tolist())
    assert len(both) >= len(train) - 1

    a = tf.saved_model.load(chief["export"]["path"])
    b = tf.saved_model.load(worker["export"]["path"])
    weights_a = sorted((v.name, v.numpy()) for v in a.variables)
    weights_b = sorted((v.name, v.numpy()) for v in b.variables)
    assert len(weights_a) == len(weights_b) > 0
    for (name_a, wa), (name_b, wb) in zip(weights_a, weights_b, strict=True):
        assert name_a == name_b
        np.testing.assert_array_equal(wa, wb)
