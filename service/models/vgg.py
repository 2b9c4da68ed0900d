"""VGG (Simonyan & Zisserman, "Very deep convolutional networks for large-scale
image recognition", ICLR 2015).

Five stages of 3x3 'same' convs (64, 128, 256, 512, 512 filters), each closed by a
2x2 max pool, then fc 4096, fc 4096 and the classifier. The configurations differ
only in convs per stage, kept here as data. Layer names follow keras.applications
(``block1_conv1`` ... ``block5_pool``, ``fc1``, ``fc2``), so VGG-16 and VGG-19 have
exactly its parameter counts: 138,357,544 and 143,667,240 at 224x224x3, 1,000 classes.
"""

from __future__ import annotations

from typing import Literal

from service.models import blocks
from service.models.registry import register

WIDTHS = (64, 128, 256, 512, 512)
# Convs per stage of the paper's configurations A (11), B (13), D (16), E (19).
CONVS_PER_STAGE = {
    11: (1, 1, 2, 2, 2),
    13: (2, 2, 2, 2, 2),
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}
PRESETS = {"vgg11": {"depth": 11}, "vgg16": {"depth": 16}, "vgg19": {"depth": 19}}
MIN_SIZE = 32  # five 2x2 poolings


def vgg(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: Literal[11, 13, 16, 19] = 16,
    batch_norm: bool = False,
    pooling: Literal["max", "avg", "l2"] = "max",
    fc_units: int = 4096,
    dropout: float = 0.5,
    resize_to: tuple[int, int] | None = None,
):
    """VGG-11/13/16/19 (Simonyan & Zisserman, 2015).

    Args:
        input_shape: ``(height, width, channels)``, at least 32x32 (224x224x3 in the paper).
        num_classes: output classes (softmax probabilities, float32).
        depth: weight layers: 11, 13, 16 or 19.
        batch_norm: batch norm after each conv (the later "vgg_bn" variant).
        pooling: the five stage poolings: max (the paper), average or L2.
        fc_units: width of fc1 and fc2 (0 drops them: flatten straight to the classifier).
        dropout: after fc1 and fc2, as in the paper (no parameters), in ``[0, 1)``.
        resize_to: resize the input to ``(height, width)`` first.
    """
    import keras

    blocks.check_rate("model.dropout", dropout)
    inputs, x = blocks.image_input(
        input_shape, model=f"vgg{depth}", resize_to=resize_to, min_size=MIN_SIZE
    )
    for stage, (width, convs) in enumerate(
        zip(WIDTHS, CONVS_PER_STAGE[depth], strict=True), start=1
    ):
        for j in range(1, convs + 1):
            name = f"block{stage}_conv{j}"
            if batch_norm:
                x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=name)(x)
                x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
                x = keras.layers.Activation("relu", name=f"{name}_relu")(x)
            else:
                x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=name)(x)
        x = blocks.pooling(x, pooling, pool_size=2, name=f"block{stage}_pool")
    x = keras.layers.Flatten(name="flatten")(x)
    if fc_units:
        for name in ("fc1", "fc2"):
            x = keras.layers.Dense(fc_units, activation="relu", name=name)(x)
            if dropout:
                x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    outputs = blocks.classifier_head(x, num_classes, model=f"vgg{depth}")
    return keras.Model(inputs, outputs, name=f"vgg{depth}")


for _name, _defaults in PRESETS.items():
    register(_name, **_defaults)(vgg)
