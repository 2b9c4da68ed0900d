"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to
document recognition", Proc. IEEE 1998).

C1 conv 6@5x5 -> S2 pool -> C3 conv 16@5x5 -> S4 pool -> C5 conv 120 -> F6 dense 84
-> output. At the paper's 32x32x1 input and 10 classes this is 61,706 parameters:
C1 156, C3 2,416 (every C3 map sees all six S2 maps; the paper's sparse table has
1,516), C5 48,120, F6 10,164, output 850. Pooling is parameter-free (the paper's
S layers had a trainable coefficient and bias per map; modern re-implementations,
and the 61,706 figure, drop them), and the output is a softmax dense layer rather
than the paper's RBF units.
"""

from __future__ import annotations

from typing import Literal

from service.models import blocks
from service.models.registry import register


@register("lenet5")
def lenet5(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    padding: Literal["valid", "same"] = "valid",
    activation: Literal["tanh", "sigmoid", "relu", "elu", "selu", "gelu"] = "tanh",
    pooling: Literal["avg", "max", "l2"] = "avg",
    resize_to: tuple[int, int] | None = None,
):
    """LeNet-5 (LeCun et al., 1998): two conv/pool stages, C5, F6 and the classifier.

    Args:
        input_shape: ``(height, width, channels)``; the paper's is ``(32, 32, 1)``
            (28x28 MNIST digits centred in a 32x32 field).
        num_classes: output classes (softmax probabilities, float32).
        padding: of C1 and C3. ``"valid"`` is the paper (needs >= 16x16);
            ``"same"`` keeps small inputs such as the 8x8 digits usable (>= 4x4).
        activation: hidden activation (the paper used a scaled tanh).
        pooling: S2/S4 subsampling, 2x2 stride 2: average (the paper), max or L2.
        resize_to: resize the input to ``(height, width)`` first, e.g. ``[32, 32]``.

    C5 is a convolution whose kernel covers the whole S4 map (5x5 at 32x32 input), so
    its output is 1x1x120 "amounting to a full connection", as in the paper. Layers:
    ``c1``, ``s2``, ``c3``, ``s4``, ``c5``, ``f6``, ``logits``, ``predictions``.
    """
    import keras

    min_size = 16 if padding == "valid" else 4
    inputs, x = blocks.image_input(
        input_shape, model="lenet5", resize_to=resize_to, min_size=min_size
    )
    x = keras.layers.Conv2D(6, 5, padding=padding, activation=activation, name="c1")(x)
    x = blocks.pooling(x, pooling, pool_size=2, name="s2")
    x = keras.layers.Conv2D(16, 5, padding=padding, activation=activation, name="c3")(x)
    x = blocks.pooling(x, pooling, pool_size=2, name="s4")
    height, width = int(x.shape[1]), int(x.shape[2])
    x = keras.layers.Conv2D(120, (height, width), activation=activation, name="c5")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(84, activation=activation, name="f6")(x)
    outputs = blocks.classifier_head(x, num_classes, model="lenet5")
    return keras.Model(inputs, outputs, name="lenet5")
