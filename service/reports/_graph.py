"""Find layers inside (possibly nested) Keras models and tap their tensors.

The pipeline serves a model that wraps the builder's model: ``Input -> Normalization
-> core`` (see `service.data.preprocess.with_normalization`), so the layers the
reports need (convolutions, the last `Dense`) live one level down, and a plain
``keras.Model(outer.inputs, conv.output)`` fails because ``conv.output`` belongs to
the inner graph.

The approach here: re-trace the outer model's graph on fresh `keras.Input`s and,
whenever a node is itself a Functional or Sequential model, trace *its* layers
instead of calling it as one block. The result is one flat functional model that
shares every weight with the original (no copies), takes the same raw inputs
(preprocessing layers included) and can output any layer's input or output tensor.
Works for any nesting depth and for layers before or after the nested model.

The graph walk is `service.compat.run_through_graph` (Keras' own, private, walk in
`Functional.call`, behind a version gate); `tests/test_reports.py` checks that the
flat model reproduces the original model's outputs. Outside the gate's Keras range
`tap` raises `NotApplicable` and the pictures that need it are not drawn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from service import compat
from service.errors import invalid_value
from service.reports._common import NotApplicable

# Layer classes whose output is a (batch, height, width, channels) feature map.
SPATIAL_CONV_CLASSES = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D")


def _is_container(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.Sequential) or compat.is_functional(layer)


def walk_layers(model: Any) -> Iterator[Any]:
    """Yield the leaf layers of ``model`` in graph order, descending into nested models.

    Input layers and the nested models themselves are not yielded.
    """
    import keras

    for layer in model.layers:
        if _is_container(layer):
            yield from walk_layers(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            yield layer


def conv_layers(model: Any, *, kinds: tuple[str, ...] = SPATIAL_CONV_CLASSES) -> list[Any]:
    """All leaf layers of ``model`` that are 2-D convolutions of the given class names."""
    import keras

    classes = tuple(getattr(keras.layers, k) for k in kinds)
    return [layer for layer in walk_layers(model) if isinstance(layer, classes)]


def find_layer(model: Any, name: str, *, candidates: list[Any] | None = None) -> Any:
    """The leaf layer called ``name`` (searched recursively); house-style error if absent.

    Args:
        model: any Keras model, nested or not.
        name: layer name, e.g. ``"block2_conv"``.
        candidates: restrict the search (and the error's list) to these layers.
    """
    pool = list(walk_layers(model)) if candidates is None else candidates
    for layer in pool:
        if layer.name == name:
            return layer
    raise invalid_value("layer_name", name, [layer.name for layer in pool])


def output_layer(model: Any) -> Any:
    """The leaf layer that produces ``model``'s (first) output."""
    last = model.layers[-1]
    return output_layer(last) if _is_container(last) else last


@dataclass
class Taps:
    """A flat model and where each tapped tensor sits in its outputs.

    ``model(x)`` returns a list: first the original model's output, then the tapped
    tensors; ``position(layer, "input" | "output")`` says which entry is which.
    """

    model: Any
    index: dict[tuple[int, str], int]

    def position(self, layer: Any, kind: str) -> int:
        """Index in ``model(x)`` of ``layer``'s input or output tensor."""
        return self.index[(id(layer), kind)]


def tap(model: Any, layers: Sequence[Any], *, inputs_of: Sequence[Any] = ()) -> Taps:
    """Build a flat model that outputs ``model``'s output plus inner tensors.

    Args:
        model: the model as trained and served (raw inputs, nested models allowed).
        layers: leaf layers whose *outputs* are wanted (e.g. convolutions).
        inputs_of: leaf layers whose *inputs* are wanted (e.g. the last `Dense`, whose
            input is the penultimate feature vector).

    Returns:
        `Taps`; call ``taps.model(x, training=False)`` on raw input batches.
    """
    import keras

    wanted_out = {id(layer) for layer in layers}
    wanted_in = {id(layer) for layer in inputs_of}
    # Keyed by layer identity: nested models may reuse a layer name.
    captured: dict[tuple[int, str], Any] = {}

    def leaf_call(layer: Any, args: tuple, kwargs: dict) -> Any:
        result = layer(*args, **kwargs)
        if id(layer) in wanted_in:
            captured.setdefault((id(layer), "input"), args[0])
        if id(layer) in wanted_out:
            captured.setdefault((id(layer), "output"), result)
        return result

    def hook(op: Any):
        def call(*args: Any, **kwargs: Any) -> Any:
            if _is_container(op):
                return trace(op, args[0])
            return leaf_call(op, args, kwargs)

        return call

    def trace(container: Any, x: Any) -> Any:
        if isinstance(container, keras.Sequential):
            for layer in container.layers:
                x = hook(layer)(x)
            return x
        out = compat.run_through_graph(container, x, operation_fn=hook)
        if out is None:
            raise NotApplicable(
                f"cannot look inside model {container.name!r} with this Keras version"
            )
        return out

    if not model.inputs:
        raise ValueError(f"Model {model.name!r} has no defined inputs; build it on keras.Input.")
    fresh = [keras.Input(shape=t.shape[1:], dtype=t.dtype) for t in model.inputs]
    inputs = fresh[0] if len(fresh) == 1 else fresh
    out = trace(model, inputs)
    first_out = out[0] if isinstance(out, list | tuple) else out

    missing = [
        (layer.name, kind)
        for kind, group in (("output", layers), ("input", inputs_of))
        for layer in group
        if (id(layer), kind) not in captured
    ]
    if missing:
        raise ValueError(f"Layers {missing} are not reachable from the inputs of {model.name!r}.")
    keys = list(captured)
    flat = keras.Model(inputs, [first_out, *(captured[k] for k in keys)], name=f"{model.name}_taps")
    return Taps(model=flat, index={k: i + 1 for i, k in enumerate(keys)})
