"""Every private Keras-Tuner API that `tuning` uses, each behind a version gate.

The rules are `service.compat`'s: a `Gate` names the Keras-Tuner versions a private
use was verified on; outside them Keras-Tuner's own (public) behaviour runs and a
one-line warning says so; a patch is applied for one search and undone afterwards.
`tests/test_compat.py` runs each private path and, faking another Keras-Tuner
version, each fallback.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

from service.atomic import write_atomic
from service.compat import Gate

LIGHT_TRIAL_BUILD = Gate(
    what="the lighter trial build (one garbage collection, space declared without a build)",
    module="keras_tuner",
    low="1.4.8",
    high="1.5",
    fallback=(
        "Keras-Tuner builds each trial its own way (a second garbage collection per "
        "trial, a model built to find the search space)"
    ),
)

ATOMIC_STATE_FILES = Gate(
    what="atomic writes of Keras-Tuner's state files",
    module="keras_tuner",
    low="1.4.8",
    high="1.5",
    fallback="Keras-Tuner rewrites them in place (a kill mid-write can leave one torn)",
)


def model_size(model: Any) -> int:
    """Trainable parameters of a built model (0 if not built), as Keras-Tuner counts
    them for ``max_model_size``."""
    if not model.built:
        return 0
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def build_checked(tuner: Any, hp: Any) -> Any:
    """Build one trial's model with Keras-Tuner's checks, from public parts.

    What Keras-Tuner's ``Tuner._try_build`` does: clear the Keras session, build in
    the tuner's distribution strategy, stop the search with ``FatalTypeError`` when
    the builder returns no `keras.Model`, and fail the trial (``FailedTrialError``)
    when it has more than ``max_model_size`` parameters. Unlike it, garbage is
    collected once (`keras.backend.clear_session` already collects; Keras-Tuner
    collects a second time, ~60 ms per trial that finds nothing). Keras-Tuner's
    compile overrides (``optimizer``/``loss``/``metrics`` given to the tuner) are not
    applied: `tuning.search.make_tuner` never passes them.
    """
    import keras
    import keras_tuner

    keras.backend.clear_session()
    strategy = tuner.distribution_strategy
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = tuner.hypermodel.build(hp)
    if not isinstance(model, keras.Model):
        raise keras_tuner.errors.FatalTypeError(
            "Expected the model-building function, or HyperModel.build() to return a "
            f"valid Keras Model instance. Received: {model!r} of type {type(model)}."
        )
    size = model_size(model)
    if tuner.max_model_size and size > tuner.max_model_size:
        raise keras_tuner.errors.FailedTrialError(
            f"Oversized model: {size} parameters. Skip model."
        )
    return model


def lighter_builds(
    base: type, *, declare_space: Callable[[Any], None], after_build: Callable[[Any], None]
) -> type:
    """``base`` (a Keras-Tuner tuner class) with two of its private steps replaced.

    - ``_try_build`` is `build_checked`, then ``after_build(tuner)`` (the search
      awaits the trial's child run there, created while the model was built);
    - ``_populate_initial_space`` declares the space with ``declare_space(hp)``
      instead of building whole models to find the conditional hyper-parameters.

    Outside `LIGHT_TRIAL_BUILD`'s range ``base`` itself is returned: Keras-Tuner
    builds its own way (the HyperModel's public ``declare_hyperparameters`` declares
    the space first) and the child run is awaited when training begins.
    """
    if not LIGHT_TRIAL_BUILD.open():
        return base

    class Lighter(base):  # type: ignore[misc, valid-type]
        def _try_build(self, hp: Any) -> Any:
            model = build_checked(self, hp)
            after_build(self)
            return model

        def _populate_initial_space(self) -> None:
            hp = self.oracle.get_space()
            declare_space(hp)
            self.oracle.update_space(hp)

    Lighter.__name__ = f"Lighter{base.__name__}"
    return Lighter


@contextlib.contextmanager
def atomic_state_files() -> Iterator[None]:
    """While the block runs, Keras-Tuner writes its state files (oracle, trials, build
    configs) atomically; its own writer is back afterwards.

    Keras-Tuner truncates and rewrites each JSON file in place, and it writes them just
    as a trial ends and the next begins -- when a kill is most likely to land, since
    that is when a finished trial becomes visible. A file left half written stops the
    resumed search with a JSON error. All those writes go through the private
    ``keras_tuner.src.utils.save_json``; local paths now go through
    `service.atomic.write_atomic` (a reader or a resumed search sees the old file or the
    new one), other file systems (``gs://``) keep Keras-Tuner's own write. A kill
    mid-write leaves only a hidden temporary file beside the intact one. Outside
    `ATOMIC_STATE_FILES`'s range, or without that function, nothing is patched.
    """
    if not ATOMIC_STATE_FILES.open():
        yield
        return
    from keras_tuner.src import utils

    original = getattr(utils, "save_json", None)
    if not callable(original) or getattr(original, "kts_atomic", False):
        yield  # not where we know it, or an outer block patched it already
        return

    def save_json(path: Any, obj: Any) -> str:
        if "://" in str(path):
            return str(original(path, obj))
        text = json.dumps(obj)
        write_atomic(path, text)
        return text

    save_json.kts_atomic = True  # type: ignore[attr-defined]
    utils.save_json = save_json
    try:
        yield
    finally:
        utils.save_json = original
