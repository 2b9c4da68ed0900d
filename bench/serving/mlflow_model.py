"""MLflow's best case: a pyfunc model that calls the exported SavedModel's signature.

Imported only when the MLflow models are saved (it imports MLflow). `servers` registers
this module with cloudpickle to be pickled by value, so ``mlflow models serve`` loads
the class without importing the benchmark's code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mlflow.pyfunc import PythonModel


class SavedModelSignature(PythonModel):
    """Calls ``serving_default`` of the SavedModel in artifact ``saved_model`` directly."""

    def load_context(self, context: Any) -> None:
        """Load the SavedModel's ``serving_default`` signature."""
        import tensorflow as tf

        self.fn = tf.saved_model.load(context.artifacts["saved_model"]).signatures[
            "serving_default"
        ]

    # ``model_input`` stays unannotated: MLflow reads predict's type hints as the
    # model's input schema, and the saved signature already says what it is.
    def predict(self, context: Any, model_input, params: Any = None) -> np.ndarray:
        """Class probabilities, float32 ``[batch, 10]``, of images ``[batch, 8, 8, 1]``."""
        return self.fn(image=np.asarray(model_input, dtype=np.float32))["probabilities"].numpy()
