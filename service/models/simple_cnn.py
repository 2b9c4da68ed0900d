"""The Keras quick-start convnet, sized by options.

Reference: the Keras "Simple MNIST convnet" example (F. Chollet), itself in the
line of LeCun et al., "Gradient-based learning applied to document recognition"
(1998): conv -> pool stages, then a small fully connected head.
"""

from __future__ import annotations

from typing import Literal

from service.errors import UserError
from service.models.registry import register


@register("simple_cnn")
def simple_cnn(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    filters: tuple[int, ...] = (32, 64),
    kernel_size: int = 3,
    padding: Literal["same", "valid"] = "same",
    pooling: Literal["max", "avg"] = "max",
    batch_norm: bool = False,
    activation: str = "relu",
    dense_units: int = 128,
    dropout: float = 0.25,
):
    """Small configurable CNN: `len(filters)` conv+pool stages and a dense head.

    Args:
        input_shape: ``(height, width, channels)`` of one image.
        num_classes: number of classes; the output is softmax probabilities (float32).
        filters: output channels of each conv stage, e.g. ``(32, 64)``.
        kernel_size: square kernel side of every conv.
        padding: ``"same"`` keeps the spatial size through each conv; ``"valid"`` shrinks it.
        pooling: 2x2 pooling after each conv stage.
        batch_norm: add batch normalization after each conv.
        activation: hidden activation (any Keras activation name).
        dense_units: width of the hidden dense layer (0 to drop it).
        dropout: dropout rate before the classifier, in ``[0, 1)``.

    Layers are named ``block{i}_conv``, ``block{i}_pool``, ``head_dense`` and
    ``predictions`` so summaries and Grad-CAM can find them.
    """
    import keras
    from keras import layers

    if len(input_shape) != 3:
        raise UserError(
            f"Invalid value for `input_shape`: received {tuple(input_shape)}; "
            "expected (height, width, channels) for model `simple_cnn`."
        )
    if not filters:
        raise UserError(
            "Invalid value for `model.filters`: received (); expected at least one stage."
        )
    if not 0.0 <= dropout < 1.0:
        raise UserError(
            f"Invalid value for `model.dropout`: received {dropout}; expected 0 <= dropout < 1."
        )

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    pool_cls = layers.MaxPooling2D if pooling == "max" else layers.AveragePooling2D
    for i, width in enumerate(filters, start=1):
        x = layers.Conv2D(
            width, kernel_size, padding=padding, use_bias=not batch_norm, name=f"block{i}_conv"
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = layers.Activation(activation, name=f"block{i}_act")(x)
        if x.shape[1] >= 2 and x.shape[2] >= 2:
            x = pool_cls(2, name=f"block{i}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    if dense_units:
        x = layers.Dense(dense_units, activation=activation, name="head_dense")(x)
    x = layers.Dense(num_classes, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="simple_cnn")
