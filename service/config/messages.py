"""One-line error text for a config that does not validate.

pydantic's errors become ``SOURCE: unknown key `a.b`. Did you mean `c`? Allowed here:
...``, ``missing required key `name```, or ``invalid value for `a.b`: received X;
why``: the dotted field, what was received and what is allowed, at most three of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from service.config.keys import section_at, yaml_fields
from service.config.schema import RunConfig
from service.errors import did_you_mean

MAX_ERRORS = 3


def format_error(err: ValidationError, source: str) -> str:
    """``err`` as one line starting with ``source`` (the file, or ``trial``)."""
    parts = []
    for item in err.errors()[:MAX_ERRORS]:
        loc = ".".join(str(p) for p in item["loc"])
        kind = item["type"]
        received = item.get("input")
        if kind == "extra_forbidden":
            allowed = allowed_keys(item["loc"][:-1])
            hint = did_you_mean(str(item["loc"][-1]), allowed)
            parts.append(
                f"unknown key `{loc}`.{hint} Allowed here: {', '.join(allowed)}"
                if allowed
                else f"unknown key `{loc}`"
            )
        elif kind == "missing":
            parts.append(f"missing required key `{loc}`")
        else:
            msg = str(item["msg"]).removeprefix("Value error, ")
            parts.append(
                f"invalid value for `{loc or '(top level)'}`: received {received!r}; {msg}"
            )
    more = len(err.errors()) - len(parts)
    suffix = f" (and {more} more)" if more > 0 else ""
    return f"{source}: " + "; ".join(parts) + suffix


def allowed_keys(loc: Iterable[Any]) -> list[str]:
    """The keys the section at ``loc`` (YAML names) takes; [] if it is not a section."""
    return list(yaml_fields(section_at(RunConfig, loc)))
