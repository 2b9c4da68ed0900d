"""The model every target serves: the digits CNN, trained one quick epoch and exported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.serving.load import MODEL_NAME


@dataclass(frozen=True)
class Trained:
    """The trained model, its data and its export.

    Attributes:
        model: the Keras model (normalization layer + ``simple_cnn``).
        x: all 1,797 digit images, float32 ``[1797, 8, 8, 1]``; the first 1,200 trained it.
        exported: `serving.export.Exported` (``path``: the version folder, ``version``).
    """

    model: Any
    x: np.ndarray
    exported: Any

    @property
    def model_dir(self) -> Path:
        """The model's folder (``BASE/digits``) that servers are pointed at."""
        return Path(self.exported.path).parent


def train_and_export(workdir: Path) -> Trained:
    """The digits CNN from the model zoo, one quick epoch, exported for serving.

    ``service.models.build("simple_cnn")`` behind the train-split normalization, seed 42,
    trained on the first 1,200 images of scikit-learn's digits, exported with
    `serving.export.export_saved_model` to ``workdir/models/digits/1`` with ten warm-up
    records.
    """
    import keras
    from sklearn.datasets import load_digits

    from service import models
    from service.data.preprocess import with_normalization
    from serving.export import export_saved_model

    keras.utils.set_random_seed(42)
    bunch = load_digits()
    x = bunch.images.astype("float32")[..., None]
    core = models.build("simple_cnn", input_shape=(8, 8, 1), num_classes=10)
    model = with_normalization(core, x[:1200], input_name="image")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:1200], bunch.target[:1200], epochs=1, batch_size=32, verbose=0)
    exported = export_saved_model(
        model,
        base_path=workdir / "models",
        model_name=MODEL_NAME,
        input_name="image",
        task="multiclass",
        class_names=[str(i) for i in range(10)],
        warmup_inputs=x[1200:1210],
    )
    return Trained(model=model, x=x, exported=exported)
