"""Preprocessing fitted on the train split and carried inside the model.

Serving clients then send raw inputs (digits pixel values 0..16, not z-scores),
and no statistic can leak from validation or test rows.
"""

from __future__ import annotations

import numpy as np


def with_normalization(core, x_train: np.ndarray, *, input_name: str):
    """Return ``core`` behind a `Normalization` layer adapted on ``x_train`` only.

    The mean and variance are per channel (last axis). The returned model takes
    raw inputs named ``input_name`` and has the same outputs as ``core``.
    """
    import keras

    norm = keras.layers.Normalization(axis=-1, name="normalize")
    norm.adapt(x_train)
    inputs = keras.Input(shape=x_train.shape[1:], name=input_name)
    outputs = core(norm(inputs))
    return keras.Model(inputs, outputs, name=core.name)
