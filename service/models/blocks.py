"""Reusable building blocks for the zoo's builders (Keras functional API).

Every block takes a Keras tensor ``x`` and a ``name`` prefix and returns the output
tensor. Layers inside a block are named from the prefix (``{name}_conv``,
``{name}_bn``, ``{name}_relu``, ...), so a builder that passes stable prefixes gets
stable layer names for summaries, Grad-CAM and checkpoints.

Keras is imported inside each function: importing this module (and so the model
registry and config validation) never imports TensorFlow.

Blocks here:

- `conv_block`: conv (filters, kernel, stride, 'valid'/'same' or explicit zero
  padding, dilation, groups) + optional batch norm + activation.
- `pooling` (max, average, L2-norm) and `global_pooling`.
- `group_conv`, `spatially_separable_conv` (n x 1 then 1 x n),
  `depthwise_separable_conv` (depthwise then 1 x 1; MobileNet v1's block),
  `inverted_residual` (MobileNet v2), `transposed_conv_block` (up-sampling).
- `residual_block`: basic or bottleneck, v1 (He et al., 2015) or pre-activation v2
  (He et al., 2016), laid out exactly as keras.applications' ResNet.
- `inception_module`: parallel branches described as data (`Conv`, `Pool`,
  `Split`), concatenated on the channel axis.
- `image_input`, `sequence_input`, `classifier_head`: the ends every builder shares.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.errors import UserError, check_choice, invalid_value
from service.vocab import HEAD_TASKS, HeadTask

Task = HeadTask
TASKS = HEAD_TASKS
POOLINGS = ("max", "avg", "l2")
PADDINGS = ("valid", "same")
# Explicit zero padding: one int, (rows, cols), or ((top, bottom), (left, right)).
Padding = str | int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]]

# The output activation that goes with each task's loss (see service/training/trainer.py).
HEAD_ACTIVATION = {
    "multiclass": "softmax",  # + (sparse) categorical cross-entropy
    "binary": "sigmoid",  # + binary cross-entropy, one unit
    "multilabel": "sigmoid",  # + binary cross-entropy, one unit per label
    "regression": "linear",  # + mean squared error
}


# ---------------------------------------------------------------- arithmetic
def conv_output_size(
    size: int,
    kernel_size: int,
    *,
    strides: int = 1,
    padding: str | int = "valid",
    dilation_rate: int = 1,
) -> int:
    """Output length of a convolution or pooling along one axis.

    ``O = floor((W - F_eff + 2P) / S) + 1`` with ``F_eff = D (F - 1) + 1`` for dilation D;
    ``padding="same"`` gives ``ceil(W / S)``, ``"valid"`` is ``P = 0``, an int is ``P``.

    Example:
        >>> conv_output_size(227, 11, strides=4)  # AlexNet conv1
        55
    """
    if padding == "same":
        return math.ceil(size / strides)
    pad = 0 if padding == "valid" else int(padding)
    effective = dilation_rate * (kernel_size - 1) + 1
    return (size - effective + 2 * pad) // strides + 1


def check_rate(field: str, value: float) -> None:
    """Dropout-style rates must lie in ``[0, 1)``."""
    if not 0.0 <= value < 1.0:
        raise invalid_value(field, value, "a rate with 0 <= rate < 1")


def check_positive(field: str, value: float | int | Sequence[int]) -> None:
    """Sizes, widths and counts must be positive (each item of a sequence too)."""
    items = list(value) if isinstance(value, Sequence) else [value]
    if not items or any(v <= 0 for v in items):
        raise invalid_value(field, tuple(value) if isinstance(value, Sequence) else value, "> 0")


# ------------------------------------------------------------------- inputs
def image_input(
    input_shape: Sequence[int],
    *,
    model: str,
    resize_to: Sequence[int] | None = None,
    min_size: int = 1,
) -> tuple[Any, Any]:
    """``keras.Input`` named ``image`` (+ a ``resize`` layer); returns ``(inputs, x)``.

    Args:
        input_shape: ``(height, width, channels)``.
        model: model name for error messages.
        resize_to: ``(height, width)`` to resize to inside the model, or None. Never
            applied silently: builders only resize when the user asks.
        min_size: the smallest height/width the architecture can take.
    """
    import keras

    shape = tuple(input_shape)
    if len(shape) != 3 or any(d is None or d < 1 for d in shape):
        raise invalid_value(
            "input_shape", shape, f"(height, width, channels) of positive ints for model `{model}`"
        )
    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    height, width = shape[0], shape[1]
    if resize_to is not None:
        size = tuple(resize_to)
        if len(size) != 2 or min(size) < min_size:
            raise invalid_value(
                "model.resize_to", size, f"(height, width) with both >= {min_size} for `{model}`"
            )
        x = keras.layers.Resizing(size[0], size[1], name="resize")(x)
        height, width = size
    if min(height, width) < min_size:
        raise invalid_value(
            "input_shape",
            shape,
            f"height and width >= {min_size} for model `{model}` "
            f"(or set `model.resize_to: [{min_size}, {min_size}]`)",
        )
    return inputs, x


def sequence_input(
    input_shape: Sequence[int],
    *,
    model: str,
    vocab_size: int | None = None,
    embedding_dim: int | None = None,
    mask_zero: bool = False,
    embedding_name: str = "embedding",
) -> tuple[Any, Any]:
    """The input of a sequence model; returns ``(inputs, x)`` with x ``(batch, steps, features)``.

    - ``(steps,)`` with ``vocab_size``: integer token ids (input ``tokens``, int32), looked
      up in an ``Embedding`` (``mask_zero`` makes id 0 padding that later layers skip).
    - ``(steps, features)``: real-valued sequences (input ``sequence``).
    - ``(height, width, channels)``: an image read row by row (input ``image``), reshaped
      by the layer ``rows_as_sequence`` to ``(height, width * channels)``; this is how
      the 8x8 digits feed an LSTM.
    """
    import keras

    shape = tuple(input_shape)
    if not 1 <= len(shape) <= 3 or any(d is None or d < 1 for d in shape):
        raise invalid_value(
            "input_shape",
            shape,
            f"(steps,) token ids, (steps, features) or (height, width, channels) for `{model}`",
        )
    if len(shape) == 1:
        if vocab_size is None:
            raise invalid_value(
                "model.vocab_size",
                None,
                f"a vocabulary size: input_shape {shape} means token ids for `{model}`",
            )
        check_positive("model.vocab_size", vocab_size)
        inputs = keras.Input(shape=shape, dtype="int32", name="tokens")
        x = keras.layers.Embedding(
            vocab_size, embedding_dim or 64, mask_zero=mask_zero, name=embedding_name
        )(inputs)
        return inputs, x
    if vocab_size is not None:
        raise invalid_value(
            "model.vocab_size",
            vocab_size,
            f"null: input_shape {shape} is not token ids (that would be (steps,))",
        )
    if len(shape) == 2:
        inputs = keras.Input(shape=shape, name="sequence")
        return inputs, inputs
    inputs = keras.Input(shape=shape, name="image")
    x = keras.layers.Reshape((shape[0], shape[1] * shape[2]), name="rows_as_sequence")(inputs)
    return inputs, x


# ---------------------------------------------------------------- the head
def head_units(num_classes: int | None, task: str, *, model: str) -> int:
    """Units of the output layer for ``task`` (binary: 1; others: ``num_classes``)."""
    check_choice("model.task", task, TASKS)
    if task == "binary":
        return 1
    if num_classes is None or num_classes < 1:
        raise invalid_value("num_classes", num_classes, f"a positive int for `{model}` ({task})")
    return int(num_classes)


def classifier_head(
    x: Any,
    num_classes: int | None,
    *,
    task: str = "multiclass",
    model: str,
    name: str = "predictions",
    logits_name: str = "logits",
    kernel_regularizer: Any = None,
) -> Any:
    """Dense ``logits`` + float32 output activation ``predictions`` chosen by ``task``.

    The activation runs in float32 even under a mixed-precision policy, so
    probabilities (and the loss on them) are numerically safe.
    """
    import keras

    units = head_units(num_classes, task, model=model)
    x = keras.layers.Dense(units, kernel_regularizer=kernel_regularizer, name=logits_name)(x)
    return keras.layers.Activation(HEAD_ACTIVATION[task], dtype="float32", name=name)(x)


# ------------------------------------------------------------ conv + pooling
def activation(x: Any, fn: str | None, *, name: str) -> Any:
    """An ``Activation`` layer named ``name`` (nothing when ``fn`` is None)."""
    import keras

    if fn is None:
        return x
    return keras.layers.Activation(fn, name=name)(x)


def _split_padding(padding: Padding, field: str) -> tuple[Any, str]:
    """(explicit zero padding or None, the conv's own padding mode)."""
    if isinstance(padding, str):
        check_choice(field, padding, PADDINGS)
        return None, padding
    return padding, "valid"


def conv_block(
    x: Any,
    filters: int,
    kernel_size: int | tuple[int, int] = 3,
    *,
    name: str,
    strides: int | tuple[int, int] = 1,
    padding: Padding = "same",
    dilation_rate: int = 1,
    groups: int = 1,
    batch_norm: bool = True,
    activation_fn: str | None = "relu",
    use_bias: bool | None = None,
    bn_epsilon: float = 1e-3,
    bn_momentum: float = 0.99,
    bn_scale: bool = True,
    kernel_regularizer: Any = None,
) -> Any:
    """Conv2D + optional BatchNorm + activation.

    Args:
        x: ``(batch, height, width, channels)``.
        filters: output channels.
        kernel_size: ``k`` or ``(kh, kw)``.
        name: prefix: layers ``{name}_pad``, ``{name}_conv``, ``{name}_bn``,
            ``{name}_{activation}``.
        strides: step of the window.
        padding: ``"valid"``, ``"same"``, or explicit zero padding (an int, ``(rows,
            cols)`` or ``((top, bottom), (left, right))``) added by a ``ZeroPadding2D``
            before a 'valid' conv, as in the papers' ``pad`` column.
        dilation_rate: spacing of the kernel taps (atrous convolution).
        groups: split channels into this many independent groups (grouped conv).
        batch_norm: add BatchNormalization after the conv.
        activation_fn: Keras activation name, or None for a linear block.
        use_bias: conv bias; default: only without batch norm (BN's beta replaces it).
    """
    import keras

    explicit, mode = _split_padding(padding, f"{name}.padding")
    if explicit is not None:
        x = keras.layers.ZeroPadding2D(explicit, name=f"{name}_pad")(x)
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=mode,
        dilation_rate=dilation_rate,
        groups=groups,
        use_bias=(not batch_norm) if use_bias is None else use_bias,
        kernel_regularizer=kernel_regularizer,
        name=f"{name}_conv",
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(
            epsilon=bn_epsilon, momentum=bn_momentum, scale=bn_scale, name=f"{name}_bn"
        )(x)
    return activation(x, activation_fn, name=f"{name}_{activation_fn}")


def pooling(
    x: Any,
    kind: str = "max",
    *,
    name: str,
    pool_size: int = 2,
    strides: int | None = None,
    padding: str = "valid",
) -> Any:
    """Max, average or L2-norm pooling (layer ``name``), channels kept."""
    import keras

    check_choice("pooling", kind, POOLINGS)
    check_choice("padding", padding, PADDINGS)
    if kind == "l2":
        from service.models.layers import L2Pooling2D

        return L2Pooling2D(pool_size, strides=strides, padding=padding, name=name)(x)
    cls = keras.layers.MaxPooling2D if kind == "max" else keras.layers.AveragePooling2D
    return cls(pool_size, strides=strides, padding=padding, name=name)(x)


def global_pooling(x: Any, kind: str = "avg", *, name: str) -> Any:
    """``(batch, h, w, c) -> (batch, c)`` by global average or max pooling."""
    import keras

    check_choice("pooling", kind, ("avg", "max"))
    cls = keras.layers.GlobalAveragePooling2D if kind == "avg" else keras.layers.GlobalMaxPooling2D
    return cls(name=name)(x)


def group_conv(
    x: Any, filters: int, kernel_size: int = 3, *, groups: int, name: str, **conv_kw: Any
) -> Any:
    """Grouped convolution (AlexNet's two towers, ResNeXt): ``groups`` independent convs.

    Each group sees ``channels / groups`` inputs and makes ``filters / groups`` outputs,
    so the weights shrink by a factor ``groups``. Other arguments as in `conv_block`.
    """
    channels = int(x.shape[-1])
    if groups < 1 or channels % groups or filters % groups:
        raise invalid_value(
            "groups",
            groups,
            f"a divisor of the input channels ({channels}) and filters ({filters})",
        )
    return conv_block(x, filters, kernel_size, groups=groups, name=name, **conv_kw)


def spatially_separable_conv(
    x: Any,
    filters: int,
    n: int = 3,
    *,
    name: str,
    strides: int = 1,
    padding: str = "same",
    batch_norm: bool = True,
    activation_fn: str | None = "relu",
) -> Any:
    """An n x n conv factored into n x 1 then 1 x n (Inception v3, section 3.2).

    Weights fall from ``n*n*C_in*F`` to ``n*C_in*F + n*F*F``. The first conv is linear
    (``{name}_nx1``); BN and the activation follow the second (``{name}_1xn``).
    """
    import keras

    check_choice("padding", padding, PADDINGS)
    x = keras.layers.Conv2D(
        filters, (n, 1), strides=(strides, 1), padding=padding, use_bias=False, name=f"{name}_nx1"
    )(x)
    x = keras.layers.Conv2D(
        filters,
        (1, n),
        strides=(1, strides),
        padding=padding,
        use_bias=not batch_norm,
        name=f"{name}_1xn",
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return activation(x, activation_fn, name=f"{name}_{activation_fn}")


def depthwise_separable_conv(
    x: Any,
    filters: int,
    kernel_size: int = 3,
    *,
    name: str,
    strides: int = 1,
    depth_multiplier: int = 1,
    batch_norm: bool = True,
    activation_fn: str | None = "relu",
    bn_epsilon: float = 1e-3,
    bn_momentum: float = 0.99,
) -> Any:
    """Depthwise k x k conv, then a 1 x 1 pointwise conv (MobileNet v1's block).

    Layers ``{name}_dw`` / ``_dw_bn`` / ``_dw_{act}`` and ``{name}_pw`` / ``_pw_bn`` /
    ``_pw_{act}``. Weights ``k*k*C_in*m + C_in*m*F`` instead of ``k*k*C_in*F``
    (``m`` = depth multiplier). 'same' padding: at even sizes this equals
    keras.applications' explicit ``((0, 1), (0, 1))`` pad before a stride-2 'valid' conv.
    """
    import keras

    x = keras.layers.DepthwiseConv2D(
        kernel_size,
        strides=strides,
        padding="same",
        depth_multiplier=depth_multiplier,
        use_bias=not batch_norm,
        name=f"{name}_dw",
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(
            epsilon=bn_epsilon, momentum=bn_momentum, name=f"{name}_dw_bn"
        )(x)
    x = activation(x, activation_fn, name=f"{name}_dw_{activation_fn}")
    return conv_block(
        x,
        filters,
        1,
        name=f"{name}_pw",
        batch_norm=batch_norm,
        activation_fn=activation_fn,
        bn_epsilon=bn_epsilon,
        bn_momentum=bn_momentum,
    )


def inverted_residual(
    x: Any,
    filters: int,
    *,
    expansion: int,
    strides: int,
    name: str,
    bn_epsilon: float = 1e-3,
    bn_momentum: float = 0.999,
) -> Any:
    """MobileNet v2's inverted residual with a linear bottleneck (Sandler et al., 2018).

    1 x 1 expansion to ``expansion * C_in`` (skipped when ``expansion == 1``), 3 x 3
    depthwise (stride), 1 x 1 linear projection to ``filters``; the input is added back
    when ``strides == 1`` and ``C_in == filters``. ReLU6 as in the paper.
    """
    import keras

    channels = int(x.shape[-1])
    shortcut = x
    if expansion != 1:
        x = conv_block(
            x,
            expansion * channels,
            1,
            name=f"{name}_expand",
            activation_fn="relu6",
            bn_epsilon=bn_epsilon,
            bn_momentum=bn_momentum,
        )
    x = keras.layers.DepthwiseConv2D(
        3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw"
    )(x)
    x = keras.layers.BatchNormalization(
        epsilon=bn_epsilon, momentum=bn_momentum, name=f"{name}_dw_bn"
    )(x)
    x = activation(x, "relu6", name=f"{name}_dw_relu6")
    x = conv_block(
        x,
        filters,
        1,
        name=f"{name}_project",
        activation_fn=None,
        bn_epsilon=bn_epsilon,
        bn_momentum=bn_momentum,
    )
    if strides == 1 and channels == filters:
        x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return x


def transposed_conv_block(
    x: Any,
    filters: int,
    kernel_size: int = 3,
    *,
    name: str,
    strides: int = 2,
    padding: str = "same",
    batch_norm: bool = True,
    activation_fn: str | None = "relu",
) -> Any:
    """Up-sampling by a transposed convolution (``{name}_tconv``) + BN + activation.

    Output size ``W * S`` with 'same' padding, ``(W - 1) * S + K`` with 'valid'.
    """
    import keras

    check_choice("padding", padding, PADDINGS)
    x = keras.layers.Conv2DTranspose(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=not batch_norm,
        name=f"{name}_tconv",
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return activation(x, activation_fn, name=f"{name}_{activation_fn}")


# ------------------------------------------------------------------ ResNet
def residual_block(
    x: Any,
    filters: int,
    *,
    name: str,
    kind: str = "bottleneck",
    version: int = 1,
    strides: int = 1,
    conv_shortcut: bool | None = None,
    expansion: int = 4,
    bn_epsilon: float = 1.001e-5,
) -> Any:
    """One residual block, laid out as keras.applications' ResNet / ResNetV2.

    Args:
        x: ``(batch, h, w, c)``.
        filters: width of the block's convs; a bottleneck outputs ``expansion * filters``.
        name: prefix, e.g. ``conv3_block1``; layers ``{name}_1_conv``, ``{name}_0_conv``
            (projection shortcut), ``{name}_add``, ...
        kind: ``"basic"`` (two 3x3 convs; ResNet-18/34) or ``"bottleneck"``
            (1x1 reduce, 3x3, 1x1 expand; ResNet-50 and deeper).
        version: 1 = post-activation (He et al., 2015: conv-BN-ReLU, ReLU after the
            add); 2 = pre-activation (He et al., 2016: BN-ReLU-conv, nothing after add).
        strides: spatial stride (v1: in the first conv; v2: in the 3x3 conv).
        conv_shortcut: 1x1 projection on the shortcut; None decides: v1 projects when
            the stride or the channels change, v2 when the channels change (a v2 stride
            on an identity shortcut is a 1x1 max pool, as in Keras).
        expansion: bottleneck output = ``expansion * filters`` (4 in the paper).
    """
    import keras

    check_choice("kind", kind, ("basic", "bottleneck"))
    check_choice("version", version, (1, 2))
    layers = keras.layers
    out_channels = filters * (expansion if kind == "bottleneck" else 1)
    channels = int(x.shape[-1])
    if conv_shortcut is None:
        conv_shortcut = channels != out_channels or (version == 1 and strides != 1)

    def bn(t: Any, suffix: str) -> Any:
        return layers.BatchNormalization(epsilon=bn_epsilon, name=f"{name}_{suffix}")(t)

    if version == 1:
        if conv_shortcut:
            shortcut = layers.Conv2D(out_channels, 1, strides=strides, name=f"{name}_0_conv")(x)
            shortcut = bn(shortcut, "0_bn")
        else:
            shortcut = x
        if kind == "bottleneck":
            y = layers.Conv2D(filters, 1, strides=strides, name=f"{name}_1_conv")(x)
            y = layers.Activation("relu", name=f"{name}_1_relu")(bn(y, "1_bn"))
            y = layers.Conv2D(filters, 3, padding="same", name=f"{name}_2_conv")(y)
            y = layers.Activation("relu", name=f"{name}_2_relu")(bn(y, "2_bn"))
            y = bn(layers.Conv2D(out_channels, 1, name=f"{name}_3_conv")(y), "3_bn")
        else:
            y = layers.ZeroPadding2D(1, name=f"{name}_1_pad")(x)
            y = layers.Conv2D(filters, 3, strides=strides, name=f"{name}_1_conv")(y)
            y = layers.Activation("relu", name=f"{name}_1_relu")(bn(y, "1_bn"))
            y = bn(layers.Conv2D(filters, 3, padding="same", name=f"{name}_2_conv")(y), "2_bn")
        y = layers.Add(name=f"{name}_add")([shortcut, y])
        return layers.Activation("relu", name=f"{name}_out")(y)

    preact = layers.Activation("relu", name=f"{name}_preact_relu")(bn(x, "preact_bn"))
    if conv_shortcut:
        shortcut = layers.Conv2D(out_channels, 1, strides=strides, name=f"{name}_0_conv")(preact)
    elif strides > 1:
        shortcut = layers.MaxPooling2D(1, strides=strides, name=f"{name}_0_pool")(x)
    else:
        shortcut = x
    if kind == "bottleneck":
        y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_1_conv")(preact)
        y = layers.Activation("relu", name=f"{name}_1_relu")(bn(y, "1_bn"))
        y = layers.ZeroPadding2D(1, name=f"{name}_2_pad")(y)
        y = layers.Conv2D(filters, 3, strides=strides, use_bias=False, name=f"{name}_2_conv")(y)
        y = layers.Activation("relu", name=f"{name}_2_relu")(bn(y, "2_bn"))
        y = layers.Conv2D(out_channels, 1, name=f"{name}_3_conv")(y)
    else:
        y = layers.ZeroPadding2D(1, name=f"{name}_1_pad")(preact)
        y = layers.Conv2D(filters, 3, strides=strides, use_bias=False, name=f"{name}_1_conv")(y)
        y = layers.Activation("relu", name=f"{name}_1_relu")(bn(y, "1_bn"))
        y = layers.Conv2D(filters, 3, padding="same", name=f"{name}_2_conv")(y)
    return layers.Add(name=f"{name}_out")([shortcut, y])


# --------------------------------------------------------------- Inception
@dataclass(frozen=True)
class Conv:
    """A conv in an Inception branch: ``filters`` of ``kernel`` (int or (kh, kw))."""

    filters: int
    kernel: int | tuple[int, int] = 1
    strides: int = 1
    padding: str = "same"


@dataclass(frozen=True)
class Pool:
    """A pooling step in an Inception branch."""

    kind: str = "max"
    size: int = 3
    strides: int = 1
    padding: str = "same"


@dataclass(frozen=True)
class Split:
    """Parallel sub-branches whose outputs are concatenated (Inception v3's 1x3 | 3x1)."""

    branches: tuple[tuple[Conv | Pool | Split, ...], ...]


Branch = Sequence[Conv | Pool | Split]


def inception_module(
    x: Any,
    branches: Sequence[Branch],
    *,
    name: str,
    conv: Mapping[str, Any] | None = None,
    concat_name: str | None = None,
) -> Any:
    """Parallel branches over ``x``, concatenated on channels (Szegedy et al., 2014).

    Args:
        x: ``(batch, h, w, c)``.
        branches: each branch a sequence of `Conv` / `Pool` / `Split` steps, e.g.
            GoogLeNet's 3a: ``[[Conv(64)], [Conv(96), Conv(128, 3)],
            [Conv(16), Conv(32, 5)], [Pool("max"), Conv(32)]]``.
        name: prefix; step j of branch i is ``{name}_b{i}_{j}`` (+ ``_conv``, ``_bn``...).
        conv: extra `conv_block` arguments for every conv (batch norm, bias, ...).
        concat_name: name of the output concatenation (default ``{name}_concat``).
    """
    return _parallel(x, branches, prefix=f"{name}_b", conv=dict(conv or {}), out=concat_name)


def _parallel(
    x: Any, branches: Sequence[Branch], *, prefix: str, conv: dict[str, Any], out: str | None
) -> Any:
    import keras

    outputs = [
        _branch(x, steps, prefix=f"{prefix}{i}", conv=conv)
        for i, steps in enumerate(branches, start=1)
    ]
    return keras.layers.Concatenate(axis=-1, name=out or f"{prefix.removesuffix('_b')}_concat")(
        outputs
    )


def _branch(x: Any, steps: Branch, *, prefix: str, conv: dict[str, Any]) -> Any:
    for j, step in enumerate(steps, start=1):
        label = f"{prefix}_{j}"
        if isinstance(step, Conv):
            x = conv_block(
                x,
                step.filters,
                step.kernel,
                strides=step.strides,
                padding=step.padding,
                name=label,
                **conv,
            )
        elif isinstance(step, Pool):
            x = pooling(
                x,
                step.kind,
                pool_size=step.size,
                strides=step.strides,
                padding=step.padding,
                name=f"{label}_pool",
            )
        elif isinstance(step, Split):
            x = _parallel(x, step.branches, prefix=f"{label}_b", conv=conv, out=f"{label}_concat")
        else:  # pragma: no cover - a programming error in a preset
            raise UserError(f"Unknown Inception step {step!r} in `{prefix}`.")
    return x
