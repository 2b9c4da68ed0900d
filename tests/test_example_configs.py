"""Every example config in pipelines/configs/ validates and runs end to end on CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from tests.helpers import CONFIGS, kts

EXAMPLES = sorted(p.name for p in CONFIGS.glob("*.yaml"))
QUICK = ["--set", "training.epochs=1", "--set", "tracking.reports=false"]


def write_reviews(path, rows: int = 240, seed: int = 0) -> None:
    """A small generated review CSV: the label follows the sentiment words."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    good = ["great", "excellent", "lovely", "superb", "enjoyable"]
    bad = ["awful", "boring", "terrible", "dull", "broken"]
    filler = ["the", "movie", "plot", "actor", "scene", "was", "really", "quite", "and"]
    texts, labels = [], []
    for i in range(rows):
        label = "pos" if i % 2 else "neg"
        words = list(rng.choice(filler, 8)) + list(rng.choice(good if label == "pos" else bad, 2))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)


def test_there_are_examples_for_every_kind_of_data():
    assert {
        "digits_cnn.yaml",
        "breast_cancer_mlp.yaml",
        "sunspots_gru.yaml",
        "text_cnn_csv.yaml",
    } <= set(EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_end_to_end(tmp_path, name):
    import tensorflow as tf

    write_reviews(tmp_path / "reviews.csv")
    searches = "tuning" in yaml.safe_load((CONFIGS / name).read_text())
    quick = [*QUICK, "--set", "tuning.max_trials=2"] if searches else QUICK  # 2 trials show it
    result = kts(["run", str(CONFIGS / name), *quick, "--output-json", "out.json"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["export"]["version"] == 1
    metrics = summary["metrics"]
    assert ("test_accuracy" in metrics) or ("test_mae" in metrics)

    serve = tf.saved_model.load(summary["export"]["path"]).signatures["serving_default"]
    ((input_name, spec),) = serve.structured_input_signature[1].items()
    if spec.dtype == tf.string:
        batch = tf.constant(["a great and lovely movie", "boring awful plot"])
    else:
        batch = tf.zeros([2, *spec.shape[1:]], spec.dtype)
    out = serve(**{input_name: batch})
    (values,) = [out[k] for k in ("probabilities", "predictions", "reconstructions") if k in out]
    assert values.dtype == tf.float32
    assert values.shape[0] == 2
    assert np.isfinite(values.numpy()).all()
