"""Fair verdicts: the bless gate compares models only on test rows neither fitted on.

Real `kts run`s into a SQLite MLflow store; the champion's gate score is checked
against its SavedModel scored here, on rows recomputed here from the rows' keys.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.config import SplitConfig
from service.data.sources import load_digits
from service.data.split import make_split
from tests.helpers import CONFIGS, kts

DEFAULT = str(CONFIGS / "digits_cnn.yaml")
SMALL = [
    "--set",
    "model.filters=[8]",
    "--set",
    "model.dense_units=32",
    "--set",
    "tuning.enabled=false",
    "--set",
    "training.epochs=2",
]
RULE = "test rows neither model fitted on"


def _client(cwd: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")


def _run(cwd: Path, *overrides: str) -> dict:
    result = kts(["run", DEFAULT, *SMALL, *overrides, "--output-json", "out.json"], cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((cwd / "out.json").read_text())


def _artifact_keys(client, run_id: str, path: str, dst: Path) -> np.ndarray:
    dst.mkdir(parents=True, exist_ok=True)
    local = client.download_artifacts(run_id, path, str(dst))
    return np.load(local, allow_pickle=False)


def _accuracy(export_path: str, digits, rows: np.ndarray) -> float:
    import tensorflow as tf

    serve = tf.saved_model.load(export_path).signatures["serving_default"]
    probs = serve(image=tf.constant(digits.x[rows]))["probabilities"].numpy()
    return float((probs.argmax(axis=1) == digits.y[rows]).mean())


def _export_path(client, version: str) -> str:
    return client.get_model_version("digits_cnn", version).tags["kts.export_path"]


@pytest.mark.slow
def test_gate_scores_both_models_on_rows_neither_fitted_on(tmp_path):
    from pipelines import promotion, steps
    from service.config import validate
    from service.tracking import Tracker

    digits = load_digits()
    client = _client(tmp_path)
    split0 = make_split(digits.y, SplitConfig(), keys=digits.keys, classification=True)

    first = _run(tmp_path)
    assert first["bless_reason"] == "no champion yet"
    champion_fit = _artifact_keys(client, first["run_id"], "split/fit_keys.npy", tmp_path / "a")
    np.testing.assert_array_equal(champion_fit, split0.fit_keys())
    tags = client.get_run(first["run_id"]).data.tags
    assert (tags["kts.split_seed"], tags["kts.split_keys"]) == ("0", "v1:content")

    # Another run seed: the same split, so every test row is one the champion never saw.
    reseeded = _run(tmp_path, "--set", "seed=11")
    assert reseeded["split_fingerprint"] == first["split_fingerprint"]
    assert reseeded["bless_rows"] == len(split0.test)
    assert reseeded["bless_rows_rule"] == RULE
    assert f"on {len(split0.test)} {RULE}" in reseeded["bless_reason"]
    assert reseeded["bless_scores"]["champion"] == pytest.approx(
        _accuracy(first["export"]["path"], digits, split0.test), abs=1e-9
    )
    assert reseeded["bless_scores"]["candidate"] == reseeded["metrics"]["test_accuracy"]

    # Another split seed: the candidate trains on most of the champion's test rows,
    # yet is compared only on its own test rows that the champion did not fit on.
    champion = client.get_model_version_by_alias("digits_cnn", "champion")
    champion_fit = _artifact_keys(client, champion.run_id, "split/fit_keys.npy", tmp_path / "b")
    moved = _run(tmp_path, "--set", "data.split.seed=1")
    split1 = make_split(digits.y, SplitConfig(seed=1), keys=digits.keys, classification=True)
    assert moved["split_fingerprint"] == split1.fingerprint != first["split_fingerprint"]
    unseen = split1.test[~np.isin(digits.keys[split1.test], champion_fit)]
    assert 30 <= len(unseen) < len(split1.test)
    assert moved["bless_rows"] == len(unseen)
    assert f"on {len(unseen)} {RULE}" in moved["bless_reason"]
    used = _artifact_keys(client, moved["run_id"], "bless/row_keys.npy", tmp_path / "c")
    np.testing.assert_array_equal(used, np.sort(digits.keys[unseen]))
    candidate_fit = _artifact_keys(client, moved["run_id"], "split/fit_keys.npy", tmp_path / "d")
    np.testing.assert_array_equal(candidate_fit, split1.fit_keys())
    trained_on_champion_test = np.intersect1d(candidate_fit, digits.keys[split0.test])
    assert len(trained_on_champion_test) > 100  # it did train on the champion's test rows
    assert not np.isin(used, candidate_fit).any()  # ... and is not judged on any of them
    assert not np.isin(used, champion_fit).any()

    scores = moved["bless_scores"]
    assert scores["champion"] == pytest.approx(
        _accuracy(_export_path(client, champion.version), digits, unseen), abs=1e-9
    )
    assert scores["candidate"] == pytest.approx(
        _accuracy(_export_path(client, moved["registered_version"]), digits, unseen), abs=1e-9
    )
    run_tags = client.get_run(moved["run_id"]).data.tags
    assert run_tags["kts.bless_rows"] == str(len(unseen))
    assert run_tags["kts.bless_rows_rule"] == RULE
    assert float(run_tags["kts.bless_champion_score"]) == scores["champion"]
    card = (tmp_path / "runs" / "digits_cnn" / "reports" / "model_card.md").read_text()
    assert f"| rows | {len(unseen)} |" in card.split("## Bless gate")[1]

    # The same decision in process, under other rules and records of the champion
    # (the champion before the last run, whichever way that run went).
    client.set_registered_model_alias("digits_cnn", "champion", champion.version)
    data = load_digits()

    def decide(split_seed: int = 0, min_rows: int = 30, metric: str = "test_accuracy"):
        direction = "min" if metric == "test_loss" else "max"
        cfg = validate(
            {
                "name": "digits_cnn",
                "data": {"split": {"seed": split_seed}},
                "bless": {"min_rows": min_rows, "metric": metric, "direction": direction},
                "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
            }
        )
        parts = steps.split(cfg, data)
        test = parts.split.test
        tracker = Tracker.start(
            uri=cfg.tracking.uri,
            experiment="gate-checks",
            run_name=None,
            required=True,
            fallback_dir=tmp_path,
        )
        try:
            probs = np.eye(10)[data.y[test]]  # a perfect candidate
            return promotion.bless(
                cfg,
                tracker,
                data,
                parts,
                {"test_accuracy": 1.0, "test_loss": 0.0},
                probs.astype("float64"),
            )
        finally:
            tracker.end()

    few = decide(split_seed=1, min_rows=1000)
    assert not few.blessed
    assert f"only {len(unseen)} of this run's {len(split1.test)} test rows" in few.reason
    assert "bless.min_rows is 1000" in few.reason
    assert few.rows == len(unseen)
    assert decide(split_seed=1).blessed  # enough rows: the perfect candidate wins
    # The loss is not recomputed from outputs: no verdict on a subset of the test rows.
    loss = decide(split_seed=1, metric="test_loss")
    assert not loss.blessed
    assert "'test_loss' cannot be recomputed" in loss.reason

    # A champion from before row keys: no fit keys. Same split: its own test part.
    store = Path(client.get_run(champion.run_id).info.artifact_uri.removeprefix("file://"))
    store = store if store.is_absolute() else tmp_path / store
    shutil.rmtree(store / "split")
    other_split = decide(split_seed=1)
    assert not other_split.blessed
    assert "has no record of the rows it fitted on" in other_split.reason
    same_split = decide()
    assert same_split.rule == promotion.SAME_SPLIT_RULE
    assert same_split.rows == len(split0.test)

    # Rows keyed another way cannot be matched against recorded fit keys.
    client.set_tag(champion.run_id, "kts.split_keys", "v1:column:id")
    (store / "split").mkdir()
    np.save(store / "split" / "fit_keys.npy", split0.fit_keys())
    other_keys = decide()
    assert not other_keys.blessed
    assert "keyed by 'v1:column:id'" in other_keys.reason
