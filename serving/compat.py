"""Every private TensorFlow API that `serving` uses, behind a version gate.

The rules are `service.compat`'s (a version range verified by the suite; outside it
the public behaviour and a one-line warning). `serving` imports none of our other
packages, so its gate is its own few lines. `tests/test_compat.py` runs the private
path and, faking another TensorFlow version, the fallback.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

# The TensorFlow versions `flat_call` was verified on: low <= version < high.
FLAT_CALL_RANGE = ("2.21", "2.22")


def _numbers(text: str) -> tuple[int, ...]:
    """``"2.21.0rc1"`` -> ``(2, 21, 0)`` (as `service.compat.parse_version`)."""
    numbers: list[int] = []
    for piece in text.split("+", 1)[0].split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        numbers.append(int(match.group()))
        if match.end() < len(piece):
            break
    return tuple(numbers)


def flat_call_verified() -> bool:
    """True on a TensorFlow in `FLAT_CALL_RANGE`; else warn once (one line), False."""
    import tensorflow as tf

    low, high = FLAT_CALL_RANGE
    version = str(getattr(tf, "__version__", "0"))
    if _numbers(low) <= _numbers(version) < _numbers(high):
        return True
    warnings.warn(
        f"kts: the flat signature call is verified on tensorflow >={low},<{high}; "
        f"tensorflow {version} is installed, so signatures are called by keyword "
        "(about 0.2 ms more per call).",
        UserWarning,
        stacklevel=2,
    )
    return False


def flat_call(function: Any) -> Callable[[list[Any]], Any] | None:
    """A call of concrete ``function`` on its flat list of input tensors, or None.

    ``function(**inputs)`` spends about 0.2 ms of Python per call binding keywords to
    the structured signature; the concrete function's private ``_call_flat`` is the
    step that binding ends in (same graph, same tensors, same answers). None outside
    `FLAT_CALL_RANGE` or when the function has no such call: the caller then uses the
    public keyword call.
    """
    if not flat_call_verified():
        return None
    if not callable(getattr(function, "_call_flat", None)):
        return None
    return lambda args: function._call_flat(args, function.captured_inputs)
