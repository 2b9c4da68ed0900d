"""Inception: GoogLeNet / Inception v1 (Szegedy et al., "Going deeper with
convolutions", CVPR 2015) and Inception v3 (Szegedy et al., "Rethinking the
Inception architecture for computer vision", CVPR 2016).

Both are a stem, a stack of Inception modules and global average pooling. The
modules are data: each is a list of branches of `Conv` / `Pool` / `Split` steps
(see `service.models.blocks.inception_module`). Inception v3 is laid out as
keras.applications' InceptionV3 (convs without bias, batch norm without scale, the
concatenations named ``mixed0`` ... ``mixed10``): 23,851,784 parameters at
299x299x3 and 1,000 classes.
"""

from __future__ import annotations

from typing import Any

from service.models import blocks
from service.models.blocks import Conv, Pool, Split
from service.models.registry import register

# ---------------------------------------------------------------- GoogLeNet
# Table 1 of the paper: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
GOOGLENET_MODULES = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
GOOGLENET_POOL_AFTER = ("3b", "4e")  # 3x3/2 max pool between the groups
GOOGLENET_AUX_AFTER = ("4a", "4d")  # where the two auxiliary classifiers attach


def googlenet_module(c1: int, r3: int, c3: int, r5: int, c5: int, pool_proj: int):
    """The four branches of one GoogLeNet Inception module."""
    return (
        (Conv(c1),),
        (Conv(r3), Conv(c3, 3)),
        (Conv(r5), Conv(c5, 5)),
        (Pool("max", 3, 1), Conv(pool_proj)),
    )


@register("inception_v1")
def inception_v1(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    batch_norm: bool = False,
    lrn: bool = True,
    dropout: float = 0.4,
    aux_heads: bool = False,
    resize_to: tuple[int, int] | None = None,
):
    """GoogLeNet (Szegedy et al., 2014): 9 Inception modules, 22 weight layers deep.

    Args:
        input_shape: ``(height, width, channels)``; any size (every step pads 'same'),
            224x224x3 in the paper; with ``aux_heads`` at least 65x65.
        num_classes: output classes (softmax probabilities, float32).
        batch_norm: batch norm after every conv (the later BN-Inception style) instead
            of conv biases.
        lrn: local response normalization after the stem's first pool and second conv.
        dropout: before the classifier (0.4 in the paper), in ``[0, 1)``.
        aux_heads: add the paper's two auxiliary classifiers (after 4a and 4d); the
            model then has three outputs ``[predictions, aux1_predictions,
            aux2_predictions]``, to be weighted 1, 0.3, 0.3 in the loss at training.
        resize_to: resize the input to ``(height, width)`` first.
    """
    import keras

    from service.models.layers import LocalResponseNormalization

    blocks.check_rate("model.dropout", dropout)
    conv: dict[str, Any] = {"batch_norm": batch_norm}
    inputs, x = blocks.image_input(
        input_shape,
        model="inception_v1",
        resize_to=resize_to,
        min_size=65 if aux_heads else 1,
    )
    x = blocks.conv_block(x, 64, 7, strides=2, name="conv1", **conv)
    x = blocks.pooling(x, "max", pool_size=3, strides=2, padding="same", name="pool1")
    if lrn:  # Caffe's GoogLeNet LRN: local_size 5, alpha 1e-4 (divided by n), beta 0.75
        x = LocalResponseNormalization(2, bias=1.0, alpha=2e-5, beta=0.75, name="norm1")(x)
    x = blocks.conv_block(x, 64, 1, name="conv2_reduce", **conv)
    x = blocks.conv_block(x, 192, 3, name="conv2", **conv)
    if lrn:
        x = LocalResponseNormalization(2, bias=1.0, alpha=2e-5, beta=0.75, name="norm2")(x)
    x = blocks.pooling(x, "max", pool_size=3, strides=2, padding="same", name="pool2")
    aux: list[Any] = []
    for key, widths in GOOGLENET_MODULES.items():
        name = f"inception{key}"
        x = blocks.inception_module(
            x, googlenet_module(*widths), name=name, conv=conv, concat_name=name
        )
        if aux_heads and key in GOOGLENET_AUX_AFTER:
            aux.append(_aux_head(x, num_classes, name=f"aux{len(aux) + 1}", conv=conv))
        if key in GOOGLENET_POOL_AFTER:
            x = blocks.pooling(
                x, "max", pool_size=3, strides=2, padding="same", name=f"pool{key[0]}"
            )
    x = blocks.global_pooling(x, "avg", name="avg_pool")
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = blocks.classifier_head(x, num_classes, model="inception_v1")
    return keras.Model(inputs, [outputs, *aux] if aux else outputs, name="inception_v1")


def _aux_head(x, num_classes: int, *, name: str, conv: dict):
    """Auxiliary classifier: 5x5/3 avg pool, 1x1 conv 128, fc 1024, dropout 0.7."""
    import keras

    x = blocks.pooling(x, "avg", pool_size=5, strides=3, name=f"{name}_pool")
    x = blocks.conv_block(x, 128, 1, name=f"{name}_conv1x1", **conv)
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    x = keras.layers.Dense(1024, activation="relu", name=f"{name}_fc")(x)
    x = keras.layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return blocks.classifier_head(
        x,
        num_classes,
        model="inception_v1",
        name=f"{name}_predictions",
        logits_name=f"{name}_logits",
    )


# ------------------------------------------------------------- Inception v3
def _v3_a(pool_proj: int):  # 35x35 modules (figure 5)
    return (
        (Conv(64),),
        (Conv(48), Conv(64, 5)),
        (Conv(64), Conv(96, 3), Conv(96, 3)),
        (Pool("avg", 3, 1), Conv(pool_proj)),
    )


def _v3_c(c7: int):  # 17x17 modules with factorized 7x7 convs (figure 6)
    return (
        (Conv(192),),
        (Conv(c7), Conv(c7, (1, 7)), Conv(192, (7, 1))),
        (Conv(c7), Conv(c7, (7, 1)), Conv(c7, (1, 7)), Conv(c7, (7, 1)), Conv(192, (1, 7))),
        (Pool("avg", 3, 1), Conv(192)),
    )


_SPLIT_1x3_3x1 = Split(((Conv(384, (1, 3)),), (Conv(384, (3, 1)),)))
V3_MODULES = (
    _v3_a(32),
    _v3_a(64),
    _v3_a(64),
    (  # mixed3: grid reduction 35 -> 17
        (Conv(384, 3, 2, "valid"),),
        (Conv(64), Conv(96, 3), Conv(96, 3, 2, "valid")),
        (Pool("max", 3, 2, "valid"),),
    ),
    _v3_c(128),
    _v3_c(160),
    _v3_c(160),
    _v3_c(192),
    (  # mixed8: grid reduction 17 -> 8
        (Conv(192), Conv(320, 3, 2, "valid")),
        (Conv(192), Conv(192, (1, 7)), Conv(192, (7, 1)), Conv(192, 3, 2, "valid")),
        (Pool("max", 3, 2, "valid"),),
    ),
    *[  # mixed9, mixed10: expanded filter banks at 8x8 (figure 7)
        (
            (Conv(320),),
            (Conv(384), _SPLIT_1x3_3x1),
            (Conv(448), Conv(384, 3), _SPLIT_1x3_3x1),
            (Pool("avg", 3, 1), Conv(192)),
        )
    ]
    * 2,
)
# The stem: (filters, kernel, strides, padding); "pool" is a 3x3/2 max pool.
V3_STEM: tuple[tuple[int, int, int, str] | str, ...] = (
    (32, 3, 2, "valid"),
    (32, 3, 1, "valid"),
    (64, 3, 1, "same"),
    "pool",
    (80, 1, 1, "valid"),
    (192, 3, 1, "valid"),
    "pool",
)
V3_CONV: dict[str, Any] = {"batch_norm": True, "bn_scale": False, "use_bias": False}
V3_MIN_SIZE = 75


@register("inception_v3")
def inception_v3(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    dropout: float = 0.0,
    resize_to: tuple[int, int] | None = None,
):
    """Inception v3 (Szegedy et al., 2015) as keras.applications builds it.

    Args:
        input_shape: ``(height, width, channels)``, at least 75x75 (299x299x3 in the paper).
        num_classes: output classes (softmax probabilities, float32).
        dropout: before the classifier (Keras uses none; the paper 0.2), in ``[0, 1)``.
        resize_to: resize the input to ``(height, width)`` first, e.g. ``[299, 299]``.

    Layers: ``stem{i}_conv``/``_bn``/``_relu``, ``stem_pool{i}``, modules ``mixed0`` ...
    ``mixed10`` (the concatenations; Grad-CAM usually looks at ``mixed10``),
    ``avg_pool``, ``logits``, ``predictions``.
    """
    import keras

    blocks.check_rate("model.dropout", dropout)
    inputs, x = blocks.image_input(
        input_shape, model="inception_v3", resize_to=resize_to, min_size=V3_MIN_SIZE
    )
    pools = convs = 0
    for step in V3_STEM:
        if isinstance(step, str):  # "pool"
            pools += 1
            x = blocks.pooling(x, "max", pool_size=3, strides=2, name=f"stem_pool{pools}")
        else:
            convs += 1
            filters, kernel, strides, padding = step
            x = blocks.conv_block(
                x, filters, kernel, strides=strides, padding=padding, name=f"stem{convs}", **V3_CONV
            )
    for k, branches in enumerate(V3_MODULES):
        x = blocks.inception_module(
            x, branches, name=f"mixed{k}", conv=V3_CONV, concat_name=f"mixed{k}"
        )
    x = blocks.global_pooling(x, "avg", name="avg_pool")
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = blocks.classifier_head(x, num_classes, model="inception_v3")
    return keras.Model(inputs, outputs, name="inception_v3")
