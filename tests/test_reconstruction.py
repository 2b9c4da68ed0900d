"""`data.task: reconstruction`: the conv autoencoder from a pipeline config."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import CONFIGS, assert_user_error, kts

CONFIG = CONFIGS / "digits_autoencoder.yaml"


@pytest.mark.slow
def test_autoencoder_pipeline_reconstructs_and_exports(tmp_path):
    import tensorflow as tf
    from PIL import Image

    from service.config import SplitConfig
    from service.data.sources import load_digits
    from service.data.split import make_split

    result = kts(
        ["run", str(CONFIG), "--set", "training.epochs=6", "--output-json", "out.json"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out.json").read_text())
    assert {"test_loss", "test_mae", "test_rmse"} <= set(summary["metrics"])

    # The export maps raw pixels to reconstructions in pixel units, input-shaped, and
    # scores as the run did on the same split.
    digits = load_digits()
    split = make_split(digits.y, SplitConfig(), keys=digits.keys, classification=True)
    assert split.fingerprint == summary["split_fingerprint"]
    loaded = tf.saved_model.load(summary["export"]["path"])
    assert list(loaded.signatures) == ["serving_default"]  # no Classify / Regress
    test = digits.x[split.test]
    out = loaded.signatures["serving_default"](image=tf.constant(test))
    assert set(out) == {"reconstructions"}
    recon = out["reconstructions"].numpy()
    assert recon.shape == test.shape
    assert recon.dtype == np.float32
    assert recon.min() >= digits.x.min() - 1e-4  # mapped back into the pixel range
    assert recon.max() <= digits.x.max() + 1e-4
    mae = float(np.abs(recon - test).mean())
    assert mae == pytest.approx(summary["metrics"]["test_mae"], rel=1e-4)
    # Better than the best constant image (the train split's per-pixel median).
    constant = np.median(digits.x[split.train], axis=0)
    assert mae < float(np.abs(test - constant).mean())

    reports = tmp_path / "runs" / "digits_autoencoder" / "reports"
    for name in ("reconstructions.png", "projection.png", "learning_curves.png"):
        pixels = np.asarray(Image.open(reports / name).convert("L"), dtype="float64")
        assert pixels.var() > 0, name
    card = (reports / "model_card.md").read_text()
    assert "reconstructions.png" in card
    assert "confusion_matrix.png" not in card.split("Not drawn")[0]


@pytest.mark.parametrize(
    ("changes", "needles"),
    [
        (
            {"data": {"source": "breast_cancer", "task": "reconstruction"}},
            ["data.task", "'reconstruction'", "tabular", "needs images"],
        ),
        ({"model": {"type": "simple_cnn"}}, ["model.type", "'simple_cnn'", "conv_autoencoder"]),
    ],
)
def test_reconstruction_needs_images_and_an_input_shaped_model(tmp_path, changes, needles):
    import yaml

    config = yaml.safe_load(CONFIG.read_text())
    config.update(changes)
    config["tracking"] = {"enabled": False}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    result = kts(["run", str(path), "--set", "training.epochs=1"], cwd=tmp_path, timeout=300)
    assert_user_error(result, *needles)
    assert not (tmp_path / "serving_models").exists()
