"""Strict mode: raise the faults a run normally reports and survives.

Some faults must never stop a run: a failing MLflow call (tracking never breaks
training, `service.tracking`) or a report picture that cannot be drawn
(`service.reports`). A run reports them in one line and goes on. In strict mode they
are raised instead, so that they get fixed: the test suite turns it on
(``tests/conftest.py``), and every ``kts`` process it starts inherits it.

Set by the environment variable ``KTS_STRICT``: ``1`` (or ``true``, ``yes``, ``on``)
turns it on; unset, empty, ``0``, ``false``, ``no`` or ``off`` leave it off. The
older ``KTS_STRICT_TRACKING`` is still read when ``KTS_STRICT`` is unset. Not for
production runs.

This module imports nothing of ours, so every package can read the flag.
"""

from __future__ import annotations

import os

ENV = "KTS_STRICT"
LEGACY_ENV = "KTS_STRICT_TRACKING"  # the name before KTS_STRICT covered reports too
_OFF = ("", "0", "false", "no", "off")


def strict() -> bool:
    """True when ``$KTS_STRICT`` (else ``$KTS_STRICT_TRACKING``) turns strict mode on."""
    value = os.environ.get(ENV)
    if value is None:
        value = os.environ.get(LEGACY_ENV, "")
    return value.strip().lower() not in _OFF
