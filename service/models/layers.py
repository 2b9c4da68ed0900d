"""Custom Keras layers the zoo needs and Keras does not ship.

This module imports Keras at the top, so only builders import it (inside their
body); ``import service.models`` stays TensorFlow-free. Each layer is registered
as serializable under the ``kts`` package: a ``.keras`` file that uses one loads
in any process that has imported this module (``import service.models.layers``).

- `L2Pooling2D`: L2-norm pooling, ``sqrt(sum(x**2))`` over each window
  (Sermanet et al., "Convolutional neural networks applied to house numbers
  digit classification", 2012).
- `LocalResponseNormalization`: AlexNet's across-channel LRN (Krizhevsky et al.,
  2012, section 3.3). No parameters.
- `PositionEmbedding`: learned absolute position embeddings, as in BERT.
- `SelectToken`: picks one time step, e.g. the first ([CLS]) token.
- `PaddingMask`: token ids -> the self-attention mask that hides padding.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


def _pair(value: int | tuple[int, int] | list[int], field: str) -> tuple[int, int]:
    if isinstance(value, int):
        pair = (value, value)
    elif len(value) == 2:
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"Invalid value for `{field}`: received {value}; expected 2 ints.")
    if min(pair) < 1:
        raise ValueError(f"Invalid value for `{field}`: received {value}; expected >= 1.")
    return pair


@keras.saving.register_keras_serializable(package="kts")
class L2Pooling2D(keras.layers.Layer):
    """L2-norm pooling: each output is ``sqrt(sum of squares)`` over its window.

    Sits between average pooling (the mean) and max pooling (the L-infinity norm).
    With ``padding="same"`` the borders are zero padded exactly as TensorFlow pads
    'same' convolutions (extra row/column at the bottom/right), so a border window
    sums fewer real values; it is not rescaled as average pooling would be.

    Args:
        pool_size: window ``(height, width)`` or one int.
        strides: step; defaults to ``pool_size``.
        padding: ``"valid"`` or ``"same"``.
        epsilon: added under the square root so the gradient at 0 is finite.

    Input/output: ``(batch, height, width, channels)`` (channels last).
    """

    def __init__(
        self,
        pool_size: int | tuple[int, int] = 2,
        strides: int | tuple[int, int] | None = None,
        padding: str = "valid",
        epsilon: float = 1e-12,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if padding not in ("valid", "same"):
            raise ValueError(
                f"Invalid value for `padding`: received {padding!r}; expected one of 'valid', 'same'."
            )
        self.pool_size = _pair(pool_size, "pool_size")
        self.strides = _pair(strides if strides is not None else self.pool_size, "strides")
        self.padding = padding
        self.epsilon = float(epsilon)

    def _pads(self, size: int, axis: int) -> tuple[int, int]:
        if self.padding == "valid":
            return (0, 0)
        k, s = self.pool_size[axis], self.strides[axis]
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        return (total // 2, total - total // 2)

    def call(self, inputs):
        x = ops.square(ops.cast(inputs, "float32"))
        h, w = inputs.shape[1], inputs.shape[2]
        if self.padding == "same":
            if h is None or w is None:
                raise ValueError("L2Pooling2D with padding='same' needs a static height and width.")
            x = ops.pad(x, [(0, 0), self._pads(h, 0), self._pads(w, 1), (0, 0)])
        area = float(self.pool_size[0] * self.pool_size[1])
        summed = ops.average_pool(x, self.pool_size, self.strides, padding="valid") * area
        return ops.cast(ops.sqrt(summed + self.epsilon), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        batch, h, w, c = input_shape

        def out(size, axis):
            if size is None:
                return None
            k, s = self.pool_size[axis], self.strides[axis]
            if self.padding == "same":
                return -(-size // s)
            return (size - k) // s + 1

        return (batch, out(h, 0), out(w, 1), c)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "pool_size": self.pool_size,
            "strides": self.strides,
            "padding": self.padding,
            "epsilon": self.epsilon,
        }


@keras.saving.register_keras_serializable(package="kts")
class LocalResponseNormalization(keras.layers.Layer):
    """Across-channel local response normalization (AlexNet, section 3.3).

    ``b[..., i] = a[..., i] / (k + alpha * sum_{j=i-r}^{i+r} a[..., j]**2) ** beta`` with
    ``r = depth_radius``; the paper uses ``n = 2r + 1 = 5``, ``k = 2``, ``alpha = 1e-4``,
    ``beta = 0.75``. Same formula as ``tf.nn.local_response_normalization`` (``bias`` is
    ``k``); no trainable parameters.
    """

    def __init__(
        self,
        depth_radius: int = 2,
        bias: float = 2.0,
        alpha: float = 1e-4,
        beta: float = 0.75,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if depth_radius < 0:
            raise ValueError(
                f"Invalid value for `depth_radius`: received {depth_radius}; expected >= 0."
            )
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        channels = inputs.shape[-1]
        r = self.depth_radius
        sq = ops.square(x)
        pad = [(0, 0)] * (len(inputs.shape) - 1) + [(r, r)]
        padded = ops.pad(sq, pad)
        window = padded[..., 0:channels]
        for offset in range(1, 2 * r + 1):
            window = window + padded[..., offset : offset + channels]
        scale = ops.power(self.bias + self.alpha * window, self.beta)
        return ops.cast(x / scale, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "depth_radius": self.depth_radius,
            "bias": self.bias,
            "alpha": self.alpha,
            "beta": self.beta,
        }


@keras.saving.register_keras_serializable(package="kts")
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute position embeddings (BERT): returns ``(batch, length, dim)``.

    The output depends only on the input's shape; add it to the token embeddings.
    ``sequence_length`` is the longest sequence the layer accepts.
    """

    def __init__(self, sequence_length: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if sequence_length < 1:
            raise ValueError(
                f"Invalid value for `sequence_length`: received {sequence_length}; expected >= 1."
            )
        self.sequence_length = int(sequence_length)
        self.supports_masking = True

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, input_shape[-1]),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )

    def call(self, inputs):
        length = ops.shape(inputs)[1]
        positions = ops.cast(self.embeddings[:length], self.compute_dtype)
        return ops.broadcast_to(positions[None], ops.shape(inputs))

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "sequence_length": self.sequence_length}


@keras.saving.register_keras_serializable(package="kts")
class SelectToken(keras.layers.Layer):
    """``(batch, length, dim) -> (batch, dim)``: the time step at ``index`` ([CLS] is 0)."""

    def __init__(self, index: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, inputs):
        return inputs[:, self.index, :]

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "index": self.index}


@keras.saving.register_keras_serializable(package="kts")
class PaddingMask(keras.layers.Layer):
    """Token ids ``(batch, length)`` -> boolean ``(batch, length, length)`` attention mask.

    Entry ``[b, i, j]`` is True when position ``j`` is a real token (id != ``pad_id``),
    so every query attends to real tokens only. Passed explicitly as
    ``MultiHeadAttention(..., attention_mask=...)`` rather than through Keras'
    implicit mask propagation, which residual connections can drop.
    """

    def __init__(self, pad_id: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pad_id = int(pad_id)

    def call(self, tokens):
        keys = ops.not_equal(tokens, self.pad_id)[:, None, :]
        return ops.repeat(keys, ops.shape(tokens)[1], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], input_shape[1])

    def compute_output_spec(self, tokens):
        length = tokens.shape[1]
        return keras.KerasTensor((tokens.shape[0], length, length), dtype="bool")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pad_id": self.pad_id}
