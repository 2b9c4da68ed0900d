"""AlexNet (Krizhevsky, Sutskever & Hinton, "ImageNet classification with deep
convolutional neural networks", NeurIPS 2012).

Five convs (96@11x11/4, 256@5x5, 384@3x3, 384@3x3, 256@3x3) with local response
normalization after the first two and overlapping 3x3/2 max pooling, then three
fully connected layers (4096, 4096, classes) with dropout 0.5. Single tower by
default: 62,378,344 parameters at 227x227x3 and 1,000 classes (LRN has none). With
``towers=2`` conv2, conv4 and conv5 only see their own half of the channels, as on
the paper's two GPUs (a grouped convolution): 60,965,224 parameters.
"""

from __future__ import annotations

from typing import Literal

from service.models import blocks
from service.models.registry import register

# (name, filters, kernel, stride, grouped when towers=2, LRN after, max pool after)
CONVS = (
    ("conv1", 96, 11, 4, False, True, True),
    ("conv2", 256, 5, 1, True, True, True),
    ("conv3", 384, 3, 1, False, False, False),
    ("conv4", 384, 3, 1, True, False, False),
    ("conv5", 256, 3, 1, True, False, True),
)
MIN_SIZE = 67  # smallest input for which pool5 still has a 1x1 output


@register("alexnet")
def alexnet(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    towers: Literal[1, 2] = 1,
    lrn: bool = True,
    batch_norm: bool = False,
    fc_units: int = 4096,
    dropout: float = 0.5,
    resize_to: tuple[int, int] | None = None,
):
    """AlexNet (Krizhevsky et al., 2012), single tower unless ``towers=2``.

    Args:
        input_shape: ``(height, width, channels)``, at least 67x67; the paper's
            effective input is 227x227x3.
        num_classes: output classes (softmax probabilities, float32).
        towers: 2 groups conv2/conv4/conv5 as in the paper's two-GPU layout.
        lrn: local response normalization after conv1 and conv2 (``norm1``, ``norm2``).
        batch_norm: a modern variant: batch norm after every conv (usually with
            ``lrn: false``).
        fc_units: width of fc6 and fc7.
        dropout: before fc7 and the classifier, in ``[0, 1)``.
        resize_to: resize the input to ``(height, width)`` first, e.g. ``[227, 227]``.

    Layers: ``conv1`` ... ``conv5`` (+ ``_bn``, ``_relu``), ``norm1``, ``pool1``, ...,
    ``fc6``, ``fc7``, ``logits``, ``predictions``.
    """
    import keras

    from service.models.layers import LocalResponseNormalization

    blocks.check_rate("model.dropout", dropout)
    blocks.check_positive("model.fc_units", fc_units)
    inputs, x = blocks.image_input(
        input_shape, model="alexnet", resize_to=resize_to, min_size=MIN_SIZE
    )
    for name, filters, kernel, stride, grouped, norm, pool in CONVS:
        x = keras.layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="valid" if stride > 1 else "same",
            groups=towers if grouped else 1,
            use_bias=not batch_norm,
            name=name,
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        x = keras.layers.Activation("relu", name=f"{name}_relu")(x)
        if norm and lrn:
            x = LocalResponseNormalization(name=f"norm{name[-1]}")(x)
        if pool:
            x = keras.layers.MaxPooling2D(3, strides=2, name=f"pool{name[-1]}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(fc_units, activation="relu", name="fc6")(x)
    x = keras.layers.Dropout(dropout, name="fc6_dropout")(x)
    x = keras.layers.Dense(fc_units, activation="relu", name="fc7")(x)
    x = keras.layers.Dropout(dropout, name="fc7_dropout")(x)
    outputs = blocks.classifier_head(x, num_classes, model="alexnet")
    return keras.Model(inputs, outputs, name="alexnet")
