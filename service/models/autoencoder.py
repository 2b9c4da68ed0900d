"""Convolutional autoencoder: a strided conv encoder and a transposed-conv decoder
(Masci et al., "Stacked convolutional auto-encoders for hierarchical feature
extraction", ICANN 2011; up-sampling by transposed convolution as in Zeiler et
al., "Deconvolutional networks", CVPR 2010).
"""

from __future__ import annotations

from typing import Literal

from service.errors import invalid_value
from service.models import blocks
from service.models.registry import register


@register("conv_autoencoder")
def conv_autoencoder(
    *,
    input_shape: tuple[int, ...],
    num_classes: int | None = None,
    filters: tuple[int, ...] = (32, 64),
    kernel_size: int = 3,
    latent_channels: int = 16,
    batch_norm: bool = True,
    output_activation: Literal["sigmoid", "linear"] = "sigmoid",
):
    """Encoder of stride-2 convs, a 1x1 bottleneck, a decoder of stride-2 transposed convs.

    The output reconstructs the input (same shape); train it on ``(x, x)`` with MSE
    (``linear``) or binary cross-entropy on inputs scaled to [0, 1] (``sigmoid``).

    Args:
        input_shape: ``(height, width, channels)``; height and width divisible by
            ``2 ** len(filters)`` (8x8 digits work with two stages).
        num_classes: must be None: an autoencoder has no classifier head.
        filters: channels of each encoder stage; the decoder mirrors them.
        kernel_size: of every conv and transposed conv.
        latent_channels: channels of the bottleneck code (layer ``latent``).
        batch_norm: after every hidden conv.
        output_activation: of the reconstruction (float32).

    Layers: ``encoder{i}_conv``, ``latent_conv``, ``decoder{i}_tconv``,
    ``reconstruction_conv``, ``reconstruction``.
    """
    import keras

    if num_classes is not None:
        raise invalid_value(
            "num_classes",
            num_classes,
            "null: `conv_autoencoder` reconstructs its input and has no classifier head",
        )
    blocks.check_positive("model.filters", filters)
    factor = 2 ** len(filters)
    inputs, x = blocks.image_input(input_shape, model="conv_autoencoder")
    height, width, channels = (int(d) for d in input_shape)
    if height % factor or width % factor:
        raise invalid_value(
            "input_shape",
            tuple(input_shape),
            f"height and width divisible by {factor} (2 ** len(model.filters))",
        )
    for i, width_i in enumerate(filters, start=1):
        x = blocks.conv_block(
            x, width_i, kernel_size, strides=2, batch_norm=batch_norm, name=f"encoder{i}"
        )
    x = blocks.conv_block(x, latent_channels, 1, batch_norm=batch_norm, name="latent")
    for i, width_i in enumerate(reversed(filters), start=1):
        x = blocks.transposed_conv_block(
            x, width_i, kernel_size, strides=2, batch_norm=batch_norm, name=f"decoder{i}"
        )
    x = keras.layers.Conv2D(channels, kernel_size, padding="same", name="reconstruction_conv")(x)
    outputs = keras.layers.Activation(output_activation, dtype="float32", name="reconstruction")(x)
    return keras.Model(inputs, outputs, name="conv_autoencoder")
