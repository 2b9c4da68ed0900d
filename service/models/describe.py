"""Look inside a model: per-layer output shape, parameters and FLOPs, and a zoo table.

FLOPs are counted from each layer's math, never estimated or timed:
``FLOPs = 2 x multiply-adds`` (MACs), the convention of most papers' tables since
ResNet (which report MACs and call them FLOPs: halve ours to compare). Per layer:

- ``Conv{1,2,3}D``: ``out_positions * C_out * prod(kernel) * C_in / groups`` MACs
  (dilation spreads the taps, it does not add any; stride and padding enter through
  the output size).
- ``Conv*Transpose``: every input position scatters ``prod(kernel) * C_out`` MACs per
  input channel: ``in_positions * C_in * prod(kernel) * C_out``.
- ``DepthwiseConv*``: ``out_positions * C_in * multiplier * prod(kernel)``;
  ``SeparableConv*`` adds its 1x1 pointwise conv ``out_positions * C_in * m * C_out``.
- ``Dense``: ``positions * in_features * units`` (positions > 1 for sequences).
- Batch / layer normalization, `Normalization`, `Rescaling`: one multiply-add per
  element (the affine form they reduce to at inference).
- Average / L2 pooling: one per window element; global average pooling: one per
  input element; LRN: ``2r + 1`` per element.
- Recurrent, per time step, for input width m and n units: SimpleRNN ``n(m+n)``,
  LSTM ``4n(m+n)``, GRU ``3n(m+n)``; bidirectional doubles it.
- Multi-head attention: the Q, K, V and output projections plus the two
  ``T x S`` attention products per head.
- Zero: activations, max pooling, element-wise add/concatenate, reshapes, padding,
  dropout, embedding look-ups, resizing. Bias additions are not counted.

A layer type not listed above is reported with FLOPs ``?`` and named in the
totals, so the table never silently under-counts.

Depth is the number of weight layers (conv, dense, recurrent, attention) on the
longest input-to-output path: 16 for VGG-16, 50 for ResNet-50 (shortcuts are
shorter paths), 22 for GoogLeNet, 28 for MobileNet: the papers' own figures.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from service import compat

# The ImageNet-scale CNNs that `compare` puts side by side (the small-input nets
# lenet5, simple_cnn, text_cnn and conv_autoencoder are described one at a time).
CNN_ZOO = (
    "alexnet",
    "vgg11",
    "vgg16",
    "vgg19",
    "inception_v1",
    "inception_v3",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet50v2",
    "mobilenet",
    "mobilenetv2",
)
COMPARE_INPUT = (224, 224, 3)
COMPARE_CLASSES = 1000

# Each model's reference input and classes (its paper's), used when `describe` is not
# told otherwise; models not listed take 224x224x3 and 1,000 classes (ImageNet).
REFERENCE: dict[str, tuple[tuple[int, ...], int | None]] = {
    "simple_cnn": ((28, 28, 1), 10),
    "lenet5": ((32, 32, 1), 10),
    "alexnet": ((227, 227, 3), 1000),
    "inception_v3": ((299, 299, 3), 1000),
    "mlp": ((28, 28, 1), 10),
    "text_cnn": ((56,), 2),
    "simple_rnn": ((28, 28), 10),
    "lstm": ((28, 28), 10),
    "gru": ((28, 28), 10),
    "bert_tiny": ((128,), 2),
    "conv_autoencoder": ((28, 28, 1), None),
}
DEFAULT_REFERENCE: tuple[tuple[int, ...], int | None] = ((224, 224, 3), 1000)

_CONV = {"Conv1D", "Conv2D", "Conv3D"}
_CONV_T = {"Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"}
_DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
_SEPARABLE = {"SeparableConv1D", "SeparableConv2D"}
_RNN_GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}
_PER_ELEMENT = {
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "UnitNormalization",
    "Normalization",
    "Rescaling",
}
_WINDOW_POOL = {"AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "L2Pooling2D"}
_GLOBAL_AVG = {"GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D"}
_ZERO = {
    "InputLayer",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "Softmax",
    "Dropout",
    "AlphaDropout",
    "GaussianDropout",
    "GaussianNoise",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "Flatten",
    "Reshape",
    "Permute",
    "RepeatVector",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "ZeroPadding3D",
    "Cropping1D",
    "Cropping2D",
    "Cropping3D",
    "UpSampling1D",
    "UpSampling2D",
    "UpSampling3D",
    "Resizing",
    "Concatenate",
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
    "Embedding",
    "Masking",
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    "PositionEmbedding",
    "SelectToken",
    "PaddingMask",
}
# Layers that count towards depth (weight layers in the papers' sense).
_DEPTH = (
    _CONV
    | _CONV_T
    | _DEPTHWISE
    | _SEPARABLE
    | set(_RNN_GATES)
    | {"Dense", "EinsumDense", "Bidirectional", "MultiHeadAttention"}
)


# ----------------------------------------------------------------- results
@dataclass(frozen=True)
class LayerRow:
    """One layer: ``name`` (``outer/inner`` inside a nested model), class, shapes, counts."""

    name: str
    kind: str
    output_shape: tuple[Any, ...]
    params: int
    flops: int | None  # None: a layer type whose math this module does not know


@dataclass(frozen=True)
class Description:
    """What `describe_model` found; `to_text` prints it, `to_dict` serializes it."""

    model: str
    input_shape: tuple[Any, ...]
    rows: tuple[LayerRow, ...]
    total_params: int
    trainable_params: int
    depth: int
    num_classes: int | None = None
    unknown_flops: tuple[str, ...] = field(default=())

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def total_flops(self) -> int:
        """Sum over layers with known math (see `unknown_flops`)."""
        return sum(r.flops or 0 for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "total_flops": self.total_flops,
            "flops_definition": "2 x multiply-adds",
            "depth": self.depth,
            "unknown_flops": list(self.unknown_flops),
            "layers": [
                {
                    "name": r.name,
                    "type": r.kind,
                    "output_shape": list(r.output_shape),
                    "params": r.params,
                    "flops": r.flops,
                }
                for r in self.rows
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        headers = ("Layer (type)", "Output shape", "Params", "FLOPs")
        body = [
            (
                f"{r.name} ({r.kind})",
                _shape_text(r.output_shape),
                f"{r.params:,}",
                "?" if r.flops is None else f"{r.flops:,}",
            )
            for r in self.rows
        ]
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(headers)]

        def line(cells: Sequence[str]) -> str:
            return (
                f"{cells[0]:<{widths[0]}}  {cells[1]:<{widths[1]}}  "
                f"{cells[2]:>{widths[2]}}  {cells[3]:>{widths[3]}}"
            )

        rule = "-" * len(line(headers))
        classes = "" if self.num_classes is None else f", {self.num_classes} classes"
        out = [f'Model "{self.model}": input {_shape_text(self.input_shape)}{classes}', rule]
        out += [line(headers), rule, *(line(row) for row in body), rule]
        out.append(
            f"Total params: {self.total_params:,} (trainable {self.trainable_params:,}, "
            f"non-trainable {self.non_trainable_params:,})"
        )
        out.append(
            f"Total FLOPs: {self.total_flops:,} ({_human(self.total_flops)}; "
            "FLOPs = 2 x multiply-adds)"
        )
        if self.unknown_flops:
            out.append(f"FLOPs not counted (unknown layer math): {', '.join(self.unknown_flops)}")
        out.append(f"Depth: {self.depth} weight layers on the longest path")
        return "\n".join(out)


def _shape_text(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _giga(flops: int) -> str:
    return f"{flops / 1e9:.2f}"


def _human(flops: int) -> str:
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if flops >= scale:
            return f"{flops / scale:.2f} {unit}FLOPs"
    return f"{flops} FLOPs"


# ----------------------------------------------------------- the layer math
def _prod(values: Iterable[Any]) -> int:
    return math.prod(int(v) for v in values)


def layer_macs(layer: Any, inputs: Sequence[Sequence[Any]], output: Sequence[Any]) -> int | None:
    """Multiply-adds of one call of ``layer`` for one example (batch axis ignored).

    Args:
        layer: a Keras layer (not a nested model).
        inputs: the shapes of its inputs, batch axis first.
        output: the shape of its (first) output, batch axis first.

    Returns None for a layer type whose math is not known here.
    """
    kind = type(layer).__name__
    first = inputs[0] if inputs else output
    if kind in _ZERO:
        return 0
    if kind in _CONV:
        groups = getattr(layer, "groups", 1) or 1
        return _prod(output[1:-1]) * output[-1] * _prod(layer.kernel_size) * first[-1] // groups
    if kind in _CONV_T:
        return _prod(first[1:-1]) * first[-1] * _prod(layer.kernel_size) * output[-1]
    if kind in _DEPTHWISE:
        return _prod(output[1:-1]) * output[-1] * _prod(layer.kernel_size)
    if kind in _SEPARABLE:
        mid = first[-1] * layer.depth_multiplier
        positions = _prod(output[1:-1])
        return positions * mid * _prod(layer.kernel_size) + positions * mid * output[-1]
    if kind == "Dense":
        return _prod(output[1:-1]) * first[-1] * layer.units
    if kind in _PER_ELEMENT:
        return _prod(output[1:])
    if kind in _WINDOW_POOL:
        return _prod(output[1:]) * _prod(layer.pool_size)
    if kind in _GLOBAL_AVG:
        return _prod(first[1:])
    if kind == "LocalResponseNormalization":
        return _prod(output[1:]) * (2 * layer.depth_radius + 1)
    if kind in _RNN_GATES:
        n = layer.cell.units
        return first[1] * _RNN_GATES[kind] * n * (first[-1] + n)
    if kind == "Bidirectional":
        fwd = layer_macs(layer.forward_layer, inputs, output)
        bwd = layer_macs(layer.backward_layer, inputs, output)
        return None if fwd is None or bwd is None else fwd + bwd
    if kind == "MultiHeadAttention":
        return _attention_macs(layer, inputs, output)
    return None


def _attention_macs(layer: Any, inputs: Sequence[Sequence[Any]], output: Sequence[Any]) -> int:
    query = inputs[0]
    value = inputs[1] if len(inputs) > 1 else query
    key = inputs[2] if len(inputs) > 2 else value
    t, s = query[1], value[1]
    heads, dk = layer.num_heads, layer.key_dim
    dv = layer.value_dim or dk
    d_out = output[-1]  # the output projection's width (`output_shape`, else the query's)
    projections = t * query[-1] * heads * dk + s * key[-1] * heads * dk + s * value[-1] * heads * dv
    attention = heads * t * s * dk + heads * t * s * dv
    return int(projections + attention + t * heads * dv * d_out)


# ------------------------------------------------------------- the walking
def _shapes(tensors: list[Any]) -> list[tuple[Any, ...]]:
    return [tuple(t.shape) for t in tensors]


def _is_model(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def _rows(model: Any, prefix: str = "") -> list[LayerRow]:
    rows: list[LayerRow] = []
    graph = compat.LayerGraph(model)
    for layer in model.layers:
        if _is_model(layer):
            rows.extend(_rows(layer, f"{prefix}{layer.name}/"))
            continue
        tensors_in, tensors_out = graph.call_tensors(layer)
        inputs, outputs = _shapes(tensors_in), _shapes(tensors_out)
        output = outputs[0] if outputs else tuple(layer.output.shape)
        if type(layer).__name__ == "InputLayer":
            output = tuple(layer.output.shape)
        macs = layer_macs(layer, inputs, output)
        rows.append(
            LayerRow(
                name=f"{prefix}{layer.name}",
                kind=type(layer).__name__,
                output_shape=output,
                params=int(layer.count_params()) if layer.built else 0,
                flops=None if macs is None else 2 * int(macs),
            )
        )
    return rows


def model_depth(model: Any) -> int:
    """Weight layers on the longest input-to-output path (nested models expanded)."""
    depth: dict[int, int] = {}

    def own(layer: Any) -> int:
        if _is_model(layer):
            return model_depth(layer)
        return 1 if type(layer).__name__ in _DEPTH else 0

    graph = compat.LayerGraph(model)
    outputs = graph.output_layers()
    stack = [(layer, False) for layer in outputs]
    while stack:  # iterative post-order: ResNet-152 is deeper than Python's recursion
        layer, ready = stack.pop()
        if id(layer) in depth:
            continue
        ups = graph.parents(layer)
        if ready:
            depth[id(layer)] = own(layer) + max((depth[id(p)] for p in ups), default=0)
        else:
            stack.append((layer, True))
            stack.extend((p, False) for p in ups if id(p) not in depth)
    return max((depth[id(layer)] for layer in outputs), default=0)


def describe_model(
    model: Any, *, name: str | None = None, num_classes: int | None = None
) -> Description:
    """Per-layer table, totals and depth of a built functional Keras model."""
    rows = _rows(model)
    trainable = sum(_prod(w.shape) for w in model.trainable_weights)
    return Description(
        model=name or model.name,
        input_shape=tuple(model.inputs[0].shape[1:]),
        rows=tuple(rows),
        total_params=int(model.count_params()),
        trainable_params=int(trainable),
        depth=model_depth(model),
        num_classes=num_classes,
        unknown_flops=tuple(sorted({r.kind for r in rows if r.flops is None})),
    )


def reference_input(name: str) -> tuple[tuple[int, ...], int | None]:
    """The input shape and classes ``describe`` uses for ``name`` by default."""
    return REFERENCE.get(name, DEFAULT_REFERENCE)


def describe(
    name: str,
    *,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> Description:
    """Build registered model ``name`` and describe it.

    ``input_shape`` and ``num_classes`` default to the model's reference (its paper's)
    input: 224x224x3 and 1,000 classes for the ImageNet nets.
    """
    from service.models import registry

    registry.entry(name)  # unknown names fail here, before TensorFlow is imported
    ref_shape, ref_classes = reference_input(name)
    shape = tuple(input_shape) if input_shape is not None else ref_shape
    classes = num_classes if num_classes is not None else ref_classes
    import keras

    keras.backend.clear_session()
    model = registry.build(name, input_shape=shape, num_classes=classes, **dict(options or {}))
    try:
        return describe_model(model, name=name, num_classes=classes)
    finally:
        del model
        keras.backend.clear_session()


# ------------------------------------------------------------------ compare
@dataclass(frozen=True)
class Comparison:
    """One row per model of `compare`."""

    rows: tuple[Description, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": [
                {
                    "model": d.model,
                    "input_shape": list(d.input_shape),
                    "num_classes": d.num_classes,
                    "params": d.total_params,
                    "flops": d.total_flops,
                    "depth": d.depth,
                }
                for d in self.rows
            ],
            "flops_definition": "2 x multiply-adds",
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        headers = ("Model", "Input", "Params", "GFLOPs", "Depth")
        body = [
            (
                d.model,
                "x".join(str(v) for v in d.input_shape),
                f"{d.total_params:,}",
                _giga(d.total_flops),
                str(d.depth),
            )
            for d in self.rows
        ]
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(headers)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(
                f"{c:<{w}}" if i < 2 else f"{c:>{w}}"
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )

        rule = "-" * len(line(headers))
        classes = {d.num_classes for d in self.rows}
        note = f"{classes.pop():,} classes; " if len(classes) == 1 else ""
        return "\n".join(
            [
                line(headers),
                rule,
                *(line(row) for row in body),
                rule,
                f"{note}FLOPs = 2 x multiply-adds (halve for the papers' MAC counts); "
                "depth = weight layers on the longest path.",
            ]
        )


def compare(
    names: Sequence[str] = CNN_ZOO,
    *,
    input_shape: Sequence[int] = COMPARE_INPUT,
    num_classes: int = COMPARE_CLASSES,
) -> Comparison:
    """Describe ``names`` at one input size, for a side-by-side table (one model at a time)."""
    return Comparison(
        tuple(describe(n, input_shape=input_shape, num_classes=num_classes) for n in names)
    )
