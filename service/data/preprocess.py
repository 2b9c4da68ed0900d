"""Preprocessing fitted on the train split only and carried inside the model.

Serving clients then send raw inputs (digits pixel values 0..16, raw table
columns, plain strings), and no statistic can leak from validation or test rows.

| data kind | layers (in order)                                                   |
|-----------|---------------------------------------------------------------------|
| image     | per-channel `Normalization`                                         |
| tabular   | per-feature `Normalization`, then an optional fixed PCA or LDA projection |
| sequence  | per-channel `Normalization`                                         |
| text      | `TextVectorization` (vocabulary from train) -> int token ids       |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Preprocessor:
    """Fitted preprocessing layers and what the model behind them receives."""

    layers: list[Any]
    output_shape: tuple[int, ...]
    builder_options: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def __call__(self, tensor):
        for layer in self.layers:
            tensor = layer(tensor)
        return tensor


def _projection_layer(name: str, kernel: np.ndarray, bias: np.ndarray):
    import keras

    layer = keras.layers.Dense(kernel.shape[1], trainable=False, name=name)
    layer.build((None, kernel.shape[0]))
    layer.set_weights([kernel.astype("float32"), bias.astype("float32")])
    return layer


def fit_preprocessing(data: Any, train_rows: np.ndarray, cfg: Any) -> Preprocessor:
    """Fit the preprocessing for ``data`` on ``train_rows`` only.

    Args:
        data: a `service.data.sources.Dataset`.
        train_rows: indices of the train split.
        cfg: the `data.preprocessing` config section.
    """
    import keras

    x_train = data.x[train_rows]
    if data.kind == "text":
        vectorize = keras.layers.TextVectorization(
            max_tokens=cfg.max_tokens,
            output_sequence_length=cfg.sequence_length,
            name="vectorize",
        )
        vectorize.adapt(x_train.astype(str))
        vocab = int(vectorize.vocabulary_size())
        return Preprocessor(
            [vectorize],
            (cfg.sequence_length,),
            builder_options={"vocab_size": vocab},
            stats={"vocabulary_size": vocab},
        )

    layers: list[Any] = []
    shape = tuple(x_train.shape[1:])
    stats: dict[str, Any] = {}
    z = x_train
    if cfg.normalize:
        norm = keras.layers.Normalization(axis=-1, name="normalize")
        norm.adapt(x_train)
        layers.append(norm)
        mean = np.asarray(norm.mean).reshape(-1)
        var = np.asarray(norm.variance).reshape(-1)
        stats.update(mean=mean, variance=var)
        z = (x_train - mean) / np.sqrt(np.maximum(var, keras.config.epsilon()))
    if data.kind == "tabular" and (cfg.pca or cfg.lda):
        from sklearn.decomposition import PCA
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        from service.errors import UserError

        n = cfg.pca or cfg.lda
        if cfg.pca:
            if n > min(z.shape):
                raise UserError(
                    f"Invalid value for `data.preprocessing.pca`: received {n}; expected at "
                    f"most {min(z.shape)} (features and train rows)"
                )
            pca = PCA(n_components=n).fit(z)
            kernel = pca.components_.T
            bias = -pca.mean_ @ kernel
            layers.append(_projection_layer("pca", kernel, bias))
        else:
            if data.task not in ("multiclass", "binary"):
                raise UserError("data.preprocessing.lda: needs a classification task")
            limit = min(z.shape[1], (data.num_classes or 2) - 1)
            if n > limit:
                raise UserError(
                    f"Invalid value for `data.preprocessing.lda`: received {n}; expected at "
                    f"most {limit} (classes - 1)"
                )
            lda = LinearDiscriminantAnalysis(n_components=n, solver="svd")
            lda.fit(z, data.y[train_rows])
            kernel = lda.scalings_[:, :n]
            bias = -lda.xbar_ @ kernel
            layers.append(_projection_layer("lda", kernel, bias))
        shape = (n,)
    return Preprocessor(layers, shape, stats=stats)


def assemble(core, pre: Preprocessor, *, raw_shape: tuple[int, ...], input_name: str, text: bool):
    """``raw input -> preprocessing -> core``: one model that serving can call with raw data."""
    import keras

    if text:
        inputs = keras.Input(shape=(), dtype="string", name=input_name)
    else:
        inputs = keras.Input(shape=raw_shape, name=input_name)
    outputs = core(pre(inputs))
    return keras.Model(inputs, outputs, name=core.name)


def with_normalization(core, x_train: np.ndarray, *, input_name: str):
    """Return ``core`` behind a `Normalization` layer adapted on ``x_train`` only.

    The pipeline's model for array data with ``normalize`` and nothing else (as
    `fit_preprocessing` + `assemble` build it), for callers that hold arrays but
    no `Dataset` (benchmarks, tests of the reports).
    """
    import keras

    norm = keras.layers.Normalization(axis=-1, name="normalize")
    norm.adapt(x_train)
    shape = tuple(x_train.shape[1:])
    pre = Preprocessor([norm], shape)
    return assemble(core, pre, raw_shape=shape, input_name=input_name, text=False)
