"""ResNet (He, Zhang, Ren & Sun, "Deep residual learning for image recognition",
CVPR 2016) and ResNet v2 (He et al., "Identity mappings in deep residual networks",
ECCV 2016), built from one function and presets as data.

The layout, layer names and conventions are keras.applications' ResNet50 /
ResNet50V2: a 7x7/2 stem conv with bias, batch norm (epsilon 1.001e-5) counted with
its moving statistics, a 3x3/2 max pool, four stages (conv2 ... conv5) of residual
blocks, global average pooling and the classifier. ResNet-18/34 use the paper's
basic block (two 3x3 convs) in that same frame: 11,703,912 and 21,823,208 parameters
at 224x224x3 and 1,000 classes (torchvision's 11,689,512 and 21,797,672 are the same
nets without conv biases and without counting BN's moving statistics).
"""

from __future__ import annotations

from typing import Literal

from service.models import blocks
from service.models.registry import register

FILTERS = (64, 128, 256, 512)
# depth -> (block kind, blocks per stage), Table 1 of the paper.
STAGES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
PRESETS = {
    "resnet18": {"depth": 18},
    "resnet34": {"depth": 34},
    "resnet50": {"depth": 50},
    "resnet50v2": {"depth": 50, "version": 2},
}
BN_EPSILON = 1.001e-5


def resnet(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: Literal[18, 34, 50, 101, 152] = 50,
    version: Literal[1, 2] = 1,
    pooling: Literal["avg", "max"] = "avg",
    resize_to: tuple[int, int] | None = None,
):
    """ResNet-18/34/50/101/152, v1 (post-activation) or v2 (pre-activation).

    Args:
        input_shape: ``(height, width, channels)``; any size works (the stem and every
            stage pad), 224x224x3 in the paper.
        num_classes: output classes (softmax probabilities, float32).
        depth: 18 or 34 (basic blocks), 50, 101 or 152 (bottleneck blocks).
        version: 1 (He et al., 2015) or 2 (pre-activation, He et al., 2016).
        pooling: the global pooling before the classifier.
        resize_to: resize the input to ``(height, width)`` first.

    Layers: ``conv1_conv``, ``pool1_pool``, ``conv{2..5}_block{i}_{j}_conv``, ...,
    ``avg_pool``, ``logits``, ``predictions`` (v2 adds ``post_bn``, ``post_relu``).
    v1 strides in the first block of conv3-5; v2, like Keras, in the last block of
    conv2-4.
    """
    import keras

    name = f"resnet{depth}" + ("v2" if version == 2 else "")
    kind, counts = STAGES[depth]
    inputs, x = blocks.image_input(input_shape, model=name, resize_to=resize_to)
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = keras.layers.Conv2D(64, 7, strides=2, name="conv1_conv")(x)
    if version == 1:
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name="conv1_bn")(x)
        x = keras.layers.Activation("relu", name="conv1_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (filters, count) in enumerate(zip(FILTERS, counts, strict=True), start=2):
        for i in range(1, count + 1):
            if version == 1:
                strides = 2 if i == 1 and stage > 2 else 1
            else:
                strides = 2 if i == count and stage < 5 else 1
            x = blocks.residual_block(
                x,
                filters,
                name=f"conv{stage}_block{i}",
                kind=kind,
                version=version,
                strides=strides,
                bn_epsilon=BN_EPSILON,
            )
    if version == 2:
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name="post_bn")(x)
        x = keras.layers.Activation("relu", name="post_relu")(x)
    x = blocks.global_pooling(x, pooling, name=f"{pooling}_pool")
    outputs = blocks.classifier_head(x, num_classes, model=name)
    return keras.Model(inputs, outputs, name=name)


for _name, _defaults in PRESETS.items():
    register(_name, **_defaults)(resnet)
