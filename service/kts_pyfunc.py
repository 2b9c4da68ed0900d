"""The MLflow model logged for every exported version: a pyfunc over its SavedModel.

MLflow copies this file into the logged model (``code/kts_pyfunc.py``) and imports it
as the model's loader module, so it imports nothing of ours: ``mlflow.pyfunc.load_model``,
``mlflow models serve`` and the MLflow UI need only MLflow and TensorFlow. The model's
data is the exported TF-Serving version itself; `predict` calls its ``serving_default``
signature (raw inputs, preprocessing in the graph) and returns its named outputs
(``probabilities`` and ``class_ids``, or ``predictions``) as NumPy arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ServingSignature:
    """``predict({input_name: array})`` -> ``{output_name: array}`` via ``serving_default``."""

    def __init__(self, saved_model: str):
        import tensorflow as tf

        self._fn = tf.saved_model.load(saved_model).signatures["serving_default"]
        ((self._name, spec),) = self._fn.structured_input_signature[1].items()
        self._dtype = spec.dtype

    def predict(self, model_input: Any, params: Any = None) -> dict[str, np.ndarray]:
        import tensorflow as tf

        if isinstance(model_input, dict):
            x = model_input[self._name]
        elif hasattr(model_input, "iloc"):  # a pandas DataFrame of one column
            x = np.stack(model_input.iloc[:, 0].to_numpy())
        else:
            x = model_input
        out = self._fn(**{self._name: tf.constant(np.asarray(x), dtype=self._dtype)})
        return {name: value.numpy() for name, value in out.items()}


def _load_pyfunc(path: str) -> ServingSignature:
    """MLflow's loader-module entry point; ``path`` is the model's data (the SavedModel)."""
    return ServingSignature(path)
