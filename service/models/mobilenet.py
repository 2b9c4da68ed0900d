"""MobileNet (Howard et al., "MobileNets: Efficient convolutional neural networks
for mobile vision applications", 2017) and MobileNetV2 (Sandler et al.,
"MobileNetV2: Inverted residuals and linear bottlenecks", CVPR 2018).

v1 is a 3x3/2 conv and 13 depthwise separable blocks; v2 a 3x3/2 conv, 17 inverted
residual blocks and a 1x1 conv to 1280. Both scale their widths by ``alpha`` and are
laid out as keras.applications builds them: 4,253,864 and 3,538,984 parameters at
224x224x3, 1,000 classes, alpha 1.0. Strided depthwise convs pad 'same', which at
even sizes is exactly Keras' explicit pad; it also lets any input size through.
"""

from __future__ import annotations

from typing import Any

from service.models import blocks
from service.models.registry import register

# (pointwise filters, stride) of the 13 depthwise separable blocks (Table 1).
V1_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    *[(512, 1)] * 5,
    (1024, 2),
    (1024, 1),
)
# (filters c, repeats n, first stride s, expansion t) of each v2 stage (Table 2).
V2_STAGES = (
    (16, 1, 1, 1),
    (24, 2, 2, 6),
    (32, 3, 2, 6),
    (64, 4, 2, 6),
    (96, 3, 1, 6),
    (160, 3, 2, 6),
    (320, 1, 1, 6),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a width to a multiple of ``divisor``, never more than 10% below (as Keras)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@register("mobilenet")
def mobilenet(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    alpha: float = 1.0,
    depth_multiplier: int = 1,
    dropout: float = 1e-3,
    resize_to: tuple[int, int] | None = None,
):
    """MobileNet v1 (Howard et al., 2017): depthwise separable convs, width ``alpha``.

    Args:
        input_shape: ``(height, width, channels)``; any size (224x224x3 in the paper).
        num_classes: output classes (softmax probabilities, float32).
        alpha: width multiplier (1.0, 0.75, 0.5, 0.25 in the paper).
        depth_multiplier: depthwise channel multiplier (the paper's resolution
            multiplier is the input size).
        dropout: before the classifier (Keras' default 1e-3), in ``[0, 1)``.
        resize_to: resize the input to ``(height, width)`` first.

    Layers: ``conv1_conv``/``_bn``/``_relu6``, ``block{i}_dw`` and ``block{i}_pw_conv``
    (+ ``_bn``, ``_relu6``), ``avg_pool``, ``logits``, ``predictions``.
    """
    import keras

    blocks.check_positive("model.alpha", alpha)
    blocks.check_positive("model.depth_multiplier", depth_multiplier)
    blocks.check_rate("model.dropout", dropout)
    inputs, x = blocks.image_input(input_shape, model="mobilenet", resize_to=resize_to)
    x = blocks.conv_block(x, int(32 * alpha), 3, strides=2, name="conv1", activation_fn="relu6")
    for i, (filters, strides) in enumerate(V1_BLOCKS, start=1):
        x = blocks.depthwise_separable_conv(
            x,
            int(filters * alpha),
            strides=strides,
            depth_multiplier=depth_multiplier,
            activation_fn="relu6",
            name=f"block{i}",
        )
    x = blocks.global_pooling(x, "avg", name="avg_pool")
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = blocks.classifier_head(x, num_classes, model="mobilenet")
    return keras.Model(inputs, outputs, name="mobilenet")


@register("mobilenetv2")
def mobilenetv2(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    alpha: float = 1.0,
    dropout: float = 0.0,
    resize_to: tuple[int, int] | None = None,
):
    """MobileNetV2 (Sandler et al., 2018): inverted residuals, linear bottlenecks.

    Args:
        input_shape: ``(height, width, channels)``; any size (224x224x3 in the paper).
        num_classes: output classes (softmax probabilities, float32).
        alpha: width multiplier; widths are rounded to multiples of 8.
        dropout: before the classifier (Keras uses none), in ``[0, 1)``.
        resize_to: resize the input to ``(height, width)`` first.

    Layers: ``conv1_conv``, ``block{k}_expand_conv``, ``block{k}_dw``,
    ``block{k}_project_conv``, ``block{k}_add``, ``conv_last_conv``, ``avg_pool``,
    ``logits``, ``predictions``.
    """
    import keras

    blocks.check_positive("model.alpha", alpha)
    blocks.check_rate("model.dropout", dropout)
    bn: dict[str, Any] = {"bn_epsilon": 1e-3, "bn_momentum": 0.999}
    inputs, x = blocks.image_input(input_shape, model="mobilenetv2", resize_to=resize_to)
    x = blocks.conv_block(
        x, make_divisible(32 * alpha), 3, strides=2, name="conv1", activation_fn="relu6", **bn
    )
    k = 0
    for filters, repeats, stride, expansion in V2_STAGES:
        for r in range(repeats):
            x = blocks.inverted_residual(
                x,
                make_divisible(int(filters * alpha)),
                expansion=expansion,
                strides=stride if r == 0 else 1,
                name=f"block{k}",
                **bn,
            )
            k += 1
    last = make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = blocks.conv_block(x, last, 1, name="conv_last", activation_fn="relu6", **bn)
    x = blocks.global_pooling(x, "avg", name="avg_pool")
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = blocks.classifier_head(x, num_classes, model="mobilenetv2")
    return keras.Model(inputs, outputs, name="mobilenetv2")
