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


# PCA / LDA are fitted on at most this many train rows (evenly spaced), held in memory.
PROJECTION_SAMPLE = 100_000


def _sample(rows: np.ndarray, limit: int) -> np.ndarray:
    rows = np.sort(np.asarray(rows))
    if len(rows) <= limit:
        return rows
    return rows[np.linspace(0, len(rows) - 1, limit).astype("int64")]


def fit_preprocessing(data: Any, train_rows: np.ndarray, cfg: Any) -> Preprocessor:
    """Fit the preprocessing for ``data`` on ``train_rows`` only, by streaming.

    Normalization comes from the rows' moments (`service.data.scan.moments`: the
    checking pass's, or one more streaming read); the text vocabulary from
    `TextVectorization.adapt` over a stream of the rows; PCA and LDA from a bounded,
    evenly spaced sample of the rows (its size is ``stats["projection_rows"]``).

    Args:
        data: a `service.data.sources.Dataset`.
        train_rows: indices of the rows to fit on (the train part, or train +
            validation for a final fit).
        cfg: the `data.preprocessing` config section.
    """
    import keras

    from service.data.scan import moments

    if data.kind == "text":
        from service.data.stream import part_dataset

        vectorize = keras.layers.TextVectorization(
            max_tokens=cfg.max_tokens,
            output_sequence_length=cfg.sequence_length,
            name="vectorize",
        )
        texts = part_dataset(
            data,
            train_rows,
            data_cfg=None,
            batch_size=1024,
            training=False,
            seed=0,
            with_targets=False,
        )
        vectorize.adapt(texts)
        vocab = int(vectorize.vocabulary_size())
        return Preprocessor(
            [vectorize],
            (cfg.sequence_length,),
            builder_options={"vocab_size": vocab},
            stats={"vocabulary_size": vocab},
        )

    layers: list[Any] = []
    shape = tuple(data.input_shape)
    stats: dict[str, Any] = {}
    mean = var = None
    if cfg.normalize:
        m = moments(data, train_rows)
        mean, var = m.mean, m.variance
        norm = keras.layers.Normalization(
            axis=-1, mean=mean.astype("float32"), variance=var.astype("float32"), name="normalize"
        )
        norm.build((None, *shape))
        layers.append(norm)
        stats.update(mean=mean, variance=var)
    if data.kind == "tabular" and (cfg.pca or cfg.lda):
        from sklearn.decomposition import PCA
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        from service.errors import UserError

        sample = _sample(train_rows, PROJECTION_SAMPLE)
        z = data.take(sample).astype("float64")
        if mean is not None and var is not None:
            z = (z - mean) / np.sqrt(np.maximum(var, keras.config.epsilon()))
        stats["projection_rows"] = len(sample)
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
            lda.fit(z, data.y[sample])
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
