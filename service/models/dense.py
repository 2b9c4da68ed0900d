"""Dense nets: the multilayer perceptron (Rumelhart, Hinton & Williams, "Learning
representations by back-propagating errors", Nature 1986).

Hidden layers are Dense -> (BatchNorm) -> activation -> (Dropout); the output layer's
activation is chosen from the task so it pairs with the loss (softmax + categorical
cross-entropy, sigmoid + binary cross-entropy, linear + mean squared error).
"""

from __future__ import annotations

from typing import Literal

from service.errors import invalid_value
from service.models import blocks
from service.models.registry import register

Activation = Literal["sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu"]

# Weight initialisation that keeps activations' variance steady through depth:
# He for the ReLU family (He et al., 2015), LeCun normal for SELU's self-normalisation
# (Klambauer et al., 2017), Glorot for the saturating sigmoid/tanh (Glorot & Bengio, 2010).
INITIALIZER = {
    "sigmoid": "glorot_uniform",
    "tanh": "glorot_uniform",
    "relu": "he_normal",
    "leaky_relu": "he_normal",
    "elu": "he_normal",
    "gelu": "he_normal",
    "selu": "lecun_normal",
}


@register("mlp")
def mlp(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    units: tuple[int, ...] = (256, 128),
    activation: Activation = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
    l1: float = 0.0,
    l2: float = 0.0,
    task: blocks.Task = "multiclass",
):
    """Multilayer perceptron with configurable widths, activation and regularization.

    Args:
        input_shape: any shape; inputs with more than one axis are flattened first
            (layer ``flatten``), e.g. ``(8, 8, 1)`` digits become 64 features.
        num_classes: output units (classes, labels or regression targets; binary: 1).
        units: width of each hidden layer, e.g. ``[256, 128]``; ``[]`` is a linear model.
        activation: hidden activation: sigmoid, tanh, relu, leaky_relu, elu, selu, gelu.
        dropout: after each hidden layer, in ``[0, 1)`` (SELU uses AlphaDropout, which
            keeps its self-normalising mean and variance).
        batch_norm: batch normalization between each Dense and its activation.
        l1: L1 penalty on every kernel (sparse weights).
        l2: L2 penalty (weight decay) on every kernel.
        task: picks the output activation: multiclass -> softmax, binary / multilabel
            -> sigmoid, regression -> linear (always float32).

    Layers: ``dense{i}``, ``dense{i}_bn``, ``dense{i}_{activation}``, ``dense{i}_dropout``,
    ``logits``, ``predictions``.
    """
    import keras

    blocks.check_rate("model.dropout", dropout)
    if any(u <= 0 for u in units):
        raise invalid_value("model.units", tuple(units), "positive widths")
    for field, value in (("model.l1", l1), ("model.l2", l2)):
        if value < 0:
            raise invalid_value(field, value, ">= 0")
    regularizer = keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None
    shape = tuple(input_shape)
    if not shape or any(d < 1 for d in shape):
        raise invalid_value("input_shape", shape, "positive dimensions for `mlp`")
    inputs = keras.Input(shape=shape, name="features")
    x = keras.layers.Flatten(name="flatten")(inputs) if len(shape) > 1 else inputs
    for i, width in enumerate(units, start=1):
        x = keras.layers.Dense(
            width,
            use_bias=not batch_norm,
            kernel_initializer=INITIALIZER[activation],
            kernel_regularizer=regularizer,
            name=f"dense{i}",
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"dense{i}_bn")(x)
        x = keras.layers.Activation(activation, name=f"dense{i}_{activation}")(x)
        if dropout:
            drop = keras.layers.AlphaDropout if activation == "selu" else keras.layers.Dropout
            x = drop(dropout, name=f"dense{i}_dropout")(x)
    outputs = blocks.classifier_head(
        x, num_classes, task=task, model="mlp", kernel_regularizer=regularizer
    )
    return keras.Model(inputs, outputs, name="mlp")
