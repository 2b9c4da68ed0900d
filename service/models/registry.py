"""Name -> builder registry for the model zoo.

Builders are plain functions ``fn(*, input_shape, num_classes, **options)`` that
return an uncompiled ``keras.Model``. They import Keras inside their body, so the
registry (and config validation, which checks options against each builder's
signature) never imports TensorFlow.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from service.errors import UserError, did_you_mean

Builder = Callable[..., Any]

# Every builder takes these; they come from the data, not from `model:` options.
DATA_ARGS = ("input_shape", "num_classes")


@dataclass(frozen=True)
class Entry:
    name: str
    fn: Builder
    defaults: Mapping[str, Any]
    summary: str


_REGISTRY: dict[str, Entry] = {}


def register(name: str, **defaults: Any) -> Callable[[Builder], Builder]:
    """Register ``fn`` under ``name``; ``defaults`` make it a preset of ``fn``.

    Example:
        >>> @register("resnet50", depth=50)            # doctest: +SKIP
        ... def resnet(*, input_shape, num_classes, depth=50, **kw): ...
    """

    def deco(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(
                f"Model `{name}` is registered twice ({_REGISTRY[name].fn.__module__})."
            )
        params = inspect.signature(fn).parameters
        for key in DATA_ARGS:
            if key not in params:
                raise TypeError(f"Builder {fn.__qualname__} must accept keyword `{key}`.")
        unknown = set(defaults) - set(params)
        if unknown:
            raise TypeError(f"Preset `{name}` sets unknown options {sorted(unknown)}.")
        summary = (inspect.getdoc(fn) or "").split("\n", 1)[0]
        _REGISTRY[name] = Entry(name, fn, dict(defaults), summary)
        return fn

    return deco


def available() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def entry(name: str) -> Entry:
    """The registry entry for ``name``; unknown names list the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        shown = repr(str(name))[1:-1]  # control characters escaped: the error stays one line
        raise UserError(
            f"Unknown model `{shown}`.{did_you_mean(name, _REGISTRY)} "
            f"Known models: {', '.join(available())}."
        ) from None


def option_names(name: str) -> list[str]:
    """The options a model accepts in config (its keyword arguments less data args)."""
    params = inspect.signature(entry(name).fn).parameters
    return [
        p
        for p, spec in params.items()
        if p not in DATA_ARGS and spec.kind in (spec.KEYWORD_ONLY, spec.POSITIONAL_OR_KEYWORD)
    ]


def validate_options(name: str, options: Mapping[str, Any], *, prefix: str = "model") -> dict:
    """Type-check ``options`` against the builder's annotated signature.

    Returns the coerced options. Raises `UserError` naming the first bad option.
    """
    import pydantic

    fn = entry(name).fn
    allowed = option_names(name)
    for key in options:
        if key not in allowed:
            raise UserError(
                f"Unknown option `{prefix}.{key}` for model `{name}`.{did_you_mean(key, allowed)} "
                f"Allowed: {', '.join(allowed)}."
            )
    hints = inspect.get_annotations(fn, eval_str=True)
    fields: dict[str, Any] = {k: (hints.get(k, Any), ...) for k in options}
    schema = pydantic.create_model(
        f"{name}_options", __config__=pydantic.ConfigDict(extra="forbid", strict=False), **fields
    )
    try:
        return schema(**options).model_dump()
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise UserError(
            f"Invalid value for `{prefix}.{loc}`: received {first.get('input')!r}; "
            f"{first['msg'][0].lower()}{first['msg'][1:]}."
        ) from None


def build(name: str, *, input_shape: tuple[int, ...], num_classes: int | None, **options: Any):
    """Build the registered model ``name`` (uncompiled ``keras.Model``).

    Args:
        name: a name from `available()`.
        input_shape: shape of one example, without the batch axis, e.g. ``(8, 8, 1)``.
        num_classes: size of the classifier head (``None`` for models without one).
        **options: the builder's keyword options; preset defaults apply first.
    """
    import keras

    item = entry(name)
    merged = {**item.defaults, **validate_options(name, options)}
    model = item.fn(input_shape=tuple(input_shape), num_classes=num_classes, **merged)
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"The builder of model `{name}` ({item.fn.__qualname__}) returned "
            f"{type(model).__name__}; expected a keras.Model."
        )
    return model
