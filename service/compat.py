"""Every private Keras / TensorFlow API that `service` uses, each behind a version gate.

A private attribute can change in any release. So each use here (as MLflow's
``safe_patch`` does for its autologging patches):

- is guarded by a `Gate`: the version range of the library it was verified on (the
  suite runs it there). Outside that range the public behaviour runs instead, and a
  one-line `UserWarning` says so (Python shows it once per process);
- is applied as narrowly as it can be: `multi_worker_fit` patches Keras' trainer for
  one ``fit`` and restores it afterwards;
- has a public fallback that `tests/test_compat.py` runs by faking another version
  (``monkeypatch.setattr(keras, "__version__", ...)``).

Nothing outside the ``compat`` modules (this one, `tuning.compat`, `serving.compat`)
touches a private name of Keras, Keras-Tuner or TensorFlow; `tests/test_compat.py`
checks the source tree for it.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


def parse_version(text: str) -> tuple[int, ...]:
    """``"3.15.1"`` -> ``(3, 15, 1)``; a pre-release or local tail ends the numbers
    (``"2.21.0rc1"`` -> ``(2, 21, 0)``, ``"2.21.0+cu12"`` -> ``(2, 21, 0)``)."""
    numbers: list[int] = []
    for piece in text.split("+", 1)[0].split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        numbers.append(int(match.group()))
        if match.end() < len(piece):
            break
    return tuple(numbers)


@dataclass(frozen=True)
class Gate:
    """A private API of one library, used only on the versions it was verified on.

    Attributes:
        what: what the private path does (named in the warning).
        module: the import name whose ``__version__`` is read, e.g. ``"keras"``.
        low: the first verified version (inclusive).
        high: the first version not verified (exclusive), e.g. the next minor.
        fallback: what runs instead outside the range (named in the warning).
    """

    what: str
    module: str
    low: str
    high: str
    fallback: str

    def version(self) -> str:
        """The installed version of `module` (its ``__version__``)."""
        return str(getattr(importlib.import_module(self.module), "__version__", "0"))

    def open(self) -> bool:
        """True on a verified version; else warn once (one line) and return False."""
        version = self.version()
        if parse_version(self.low) <= parse_version(version) < parse_version(self.high):
            return True
        warnings.warn(
            f"kts: {self.what} is verified on {self.module} >={self.low},<{self.high}; "
            f"{self.module} {version} is installed, so {self.fallback}.",
            UserWarning,
            stacklevel=2,
        )
        return False


# ------------------------------------------------ Keras' TensorFlow trainer
MULTI_WORKER_FIT = Gate(
    what="the multi-worker fit fix (Keras' first-batch build and scalar reduce)",
    module="keras",
    low="3.15",
    high="3.16",
    fallback="Keras' own multi-worker fit runs (Keras 3.15 fails its first step)",
)


@contextlib.contextmanager
def multi_worker_fit(strategy: Any) -> Iterator[None]:
    """Around one ``model.fit``: mend two Keras 3.15 failures under a multi-worker strategy.

    1. Before the first step Keras builds the metrics symbolically from one batch
       (``TensorFlowTrainer._maybe_symbolic_build``), which it MEAN-reduces across
       replicas; with MultiWorkerMirroredStrategy on more than one worker that reduce
       fails ("Attempt to convert a value (PerReplica...)"). The batch is only needed
       for its structure and shapes, so the local replica's value is taken instead.
    2. Step outputs (loss and metric values) are reduced with ``axis=0``
       (``reduce_per_replica``), which scalars do not have; they are reduced whole.

    Does nothing for any other strategy, and outside `MULTI_WORKER_FIT`'s range.
    Keras' own functions are back in place when the block exits, however it exits.
    `tests/test_distributed.py` trains on two real workers through this.
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        yield
        return
    if not MULTI_WORKER_FIT.open():
        yield
        return
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    cls = tf_trainer.TensorFlowTrainer
    original_build = cls.__dict__["_maybe_symbolic_build"]
    original_reduce = tf_trainer.reduce_per_replica
    if getattr(original_build, "kts_patched", False):  # nested: the outer block restores
        yield
        return

    def _maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tree.map_structure(
                    lambda v: (
                        self.distribute_strategy.experimental_local_results(v)[0]
                        if isinstance(v, tf.distribute.DistributedValues)
                        else v
                    ),
                    batch,
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values: Any, strategy: Any, reduction: Any) -> Any:
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
            strategy
        ):
            return tree.map_structure(
                lambda v: (
                    strategy.reduce("MEAN", v, axis=None)
                    if isinstance(v, tf.distribute.DistributedValues) or tf.is_tensor(v)
                    else v
                ),
                values,
            )
        return original_reduce(values, strategy, reduction)

    _maybe_symbolic_build.kts_patched = True  # type: ignore[attr-defined]
    cls._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        cls._maybe_symbolic_build = original_build
        tf_trainer.reduce_per_replica = original_reduce


# --------------------------------------------- TensorFlow's gradient registry
GRADIENT_REGISTRY = Gate(
    what="releasing traced custom gradients after a trial",
    module="tensorflow",
    low="2.21",
    high="2.22",
    fallback="they stay registered (a long search grows by a few MB per trial)",
)


def _gradient_registry() -> dict[str, Any] | None:
    """TensorFlow's process-wide gradient registry (a private dict), inside the gate."""
    if not GRADIENT_REGISTRY.open():
        return None
    from tensorflow.python.framework import ops

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else None


def traced_gradients() -> frozenset[str]:
    """Names of the ``tf.custom_gradient`` functions TensorFlow holds now (for `release_traced`)."""
    registry = _gradient_registry()
    return frozenset(k for k in registry or () if k.startswith("CustomGradient-"))


def release_traced(before: frozenset[str]) -> int:
    """Forget the ``tf.custom_gradient`` functions registered since ``before``; how many.

    Why: every trace of a Keras 3 train step on TensorFlow registers a new
    ``CustomGradient-<n>`` function in TensorFlow's global gradient registry (the
    optimizer's cross-replica all-reduce is a ``tf.custom_gradient``), and nothing
    ever removes it. Each one holds its traced graph and, through it, the model:
    about 4 MB for a tiny MLP, never freed, not even by
    ``keras.backend.clear_session``. A search that builds hundreds of models in one
    process would grow without bound. Call this only when every model traced since
    ``before`` is discarded (a finished trial), then `keras.backend.clear_session`.
    Outside `GRADIENT_REGISTRY`'s range nothing is released (TensorFlow's behaviour).

    Example:
        >>> before = traced_gradients()
        >>> ...  # build, fit and drop a model
        >>> release_traced(before)  # doctest: +SKIP
    """
    registry = _gradient_registry()
    if registry is None:
        return 0
    stale = [k for k in registry if k.startswith("CustomGradient-") and k not in before]
    for name in stale:
        registry.pop(name, None)
    return len(stale)


# ------------------------------------------------- Keras' functional graph
FUNCTIONAL_GRAPH = Gate(
    what="walking a functional model's graph (layer calls, nested models)",
    module="keras",
    low="3.15",
    high="3.16",
    fallback=(
        "layers are read through the public `layer.input` / `layer.output` "
        "(nested models are not looked into)"
    ),
)


def _flat(tensors: Any) -> list[Any]:
    flat = tensors if isinstance(tensors, (list, tuple)) else [tensors]
    return [t for t in flat if hasattr(t, "shape")]


def _public_tensors(layer: Any, which: str) -> list[Any]:
    """``layer.input`` or ``layer.output`` (public); none for a layer called twice."""
    try:
        return _flat(getattr(layer, which))
    except (AttributeError, ValueError):
        return []


class LayerGraph:
    """Who feeds whom in a functional ``model``: each layer's call and its parents.

    Keras 3 keeps the graph in ``layer._inbound_nodes`` and ``tensor._keras_history``;
    there is no public view of a layer's call inside a model (the public
    ``layer.input`` / ``layer.output`` of a nested model are its own graph's, not its
    call's in the outer model). Outside `FUNCTIONAL_GRAPH`'s range those public
    attributes are used: right for flat models, not for nested ones.
    """

    def __init__(self, model: Any):
        self.model = model
        self.private = FUNCTIONAL_GRAPH.open()
        self._producer: dict[int, Any] = {}
        if not self.private:
            for layer in model.layers:
                for tensor in _public_tensors(layer, "output"):
                    self._producer[id(tensor)] = layer

    def _node(self, layer: Any) -> Any:
        nodes = getattr(layer, "_inbound_nodes", None) or []
        return nodes[0] if nodes else None

    def call_tensors(self, layer: Any) -> tuple[list[Any], list[Any]]:
        """The input and output tensors of ``layer``'s (first) call in the model."""
        if not self.private:
            return _public_tensors(layer, "input"), _public_tensors(layer, "output")
        node = self._node(layer)
        if node is None:
            return [], []
        return _flat(node.input_tensors), _flat(node.output_tensors)

    def parents(self, layer: Any) -> list[Any]:
        """The layers whose outputs ``layer``'s call takes."""
        if not self.private:
            inputs = _public_tensors(layer, "input")
            return [self._producer[id(t)] for t in inputs if id(t) in self._producer]
        node = self._node(layer)
        return [p.operation for p in node.parent_nodes] if node is not None else []

    def output_layers(self) -> list[Any]:
        """The layers that produce the model's outputs."""
        if not self.private:
            return [self._producer[id(t)] for t in self.model.outputs if id(t) in self._producer]
        return [t._keras_history.operation for t in self.model.outputs]


def run_through_graph(model: Any, inputs: Any, operation_fn: Any) -> Any | None:
    """Re-run functional ``model``'s graph on ``inputs``, each layer ``op`` called as
    ``operation_fn(op)(*args, **kwargs)``; None outside `FUNCTIONAL_GRAPH`'s range.

    This is what Keras' own ``Functional.call`` runs (``Function._run_through_graph``);
    `service.reports._graph.tap` uses it to look inside nested models.
    """
    if not FUNCTIONAL_GRAPH.open():
        return None
    return model._run_through_graph(inputs, operation_fn=operation_fn)


def is_functional(model: Any) -> bool:
    """True for a functional Keras model (one whose graph `run_through_graph` can walk)."""
    import keras

    return isinstance(model, keras.Model) and hasattr(model, "_run_through_graph")
