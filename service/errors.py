"""Error types shared by every layer.

`UserError` is the one exception that means "the user gave us something we cannot
use": a config field, a file, a command-line value. The CLI turns it into exit
code 2 and a single line on stderr, with no traceback. Everything else is a fault
of ours (exit code 1).
"""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """Bad user input: printed as one line, exit code 2."""


class Terminated(BaseException):
    """SIGTERM arrived (a pod stopped, ``kill PID``): unwinds like Ctrl-C, so a run ends
    KILLED in MLflow and gives its lock back; the CLI exits 143 (128 + SIGTERM)."""


def _quote(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def invalid_value(field: str, received: object, allowed: Iterable[object] | str) -> UserError:
    """Build the house-style error for a value outside an allowed set.

    Example:
        >>> str(invalid_value("pooling", "maxx", ["max", "avg"]))
        "Invalid value for `pooling`: received 'maxx'; expected one of 'max', 'avg'."
    """
    if isinstance(allowed, str):
        expected = allowed
    else:
        expected = "one of " + ", ".join(_quote(a) for a in allowed)
    return UserError(
        f"Invalid value for `{field}`: received {_quote(received)}; expected {expected}."
    )


def check_choice(field: str, value: object, allowed: Iterable[object]) -> None:
    """Raise `invalid_value` unless `value` is one of `allowed`."""
    allowed = list(allowed)
    if value not in allowed:
        raise invalid_value(field, value, allowed)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ' Did you mean `x`?' for the closest candidate, or ''."""
    import difflib

    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" Did you mean `{close[0]}`?" if close else ""


class ConfigDeprecationWarning(FutureWarning):
    """A config spelling that still reads but will go (``kts`` shows it as one note line).

    A `FutureWarning`, so Python shows it to users by default."""
