"""The tracking rule: a failing MLflow call is reported and the run goes on.

Strict mode (``KTS_STRICT``, set for this suite in ``tests/conftest.py``) raises instead.
"""

from __future__ import annotations

import pytest

from service.strict import strict


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"KTS_STRICT": "1"}, True),
        ({"KTS_STRICT": "yes"}, True),
        ({"KTS_STRICT": "0"}, False),
        ({"KTS_STRICT": "off"}, False),
        ({"KTS_STRICT": ""}, False),
        ({}, False),
        ({"KTS_STRICT_TRACKING": "1"}, True),  # the older name, read when KTS_STRICT is unset
        ({"KTS_STRICT": "0", "KTS_STRICT_TRACKING": "1"}, False),
    ],
)
def test_strict_mode_is_the_kts_strict_flag(monkeypatch, env, expected):
    for name in ("KTS_STRICT", "KTS_STRICT_TRACKING", "PYTEST_CURRENT_TEST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert strict() is expected
