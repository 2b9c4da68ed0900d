"""Property test: mutated example configs never crash `kts validate` (exit 0 or 2 only)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.cli import main
from service.config import flatten
from tests.helpers import CONFIGS

EXAMPLES = sorted(CONFIGS.glob("*.yaml"))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(min_value=-5, max_value=300), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _set(data: dict, path: list[str], value) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


def _delete(data: dict, path: list[str]) -> None:
    node = data
    for part in path[:-1]:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)


@st.composite
def mutated_configs(draw):
    base = yaml.safe_load(draw(st.sampled_from(EXAMPLES)).read_text())
    data = copy.deepcopy(base)
    keys = sorted(flatten(base))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        action = draw(st.sampled_from(["retype", "delete", "extra", "out_of_range"]))
        path = draw(st.sampled_from(keys)).split(".")
        if action == "retype":
            _set(data, path, draw(SCALARS))
        elif action == "delete":
            _delete(data, path)
        elif action == "extra":
            extra = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10))
            _set(data, [*path[:-1], extra], draw(SCALARS))
        else:
            _set(data, path, draw(st.sampled_from([-1, 0, -0.5, 1e9, 2**40, 1.5])))
    return data


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=mutated_configs())
def test_validate_exits_0_or_2_without_traceback(tmp_path_factory, capsys, data):
    path = Path(tmp_path_factory.mktemp("fuzz")) / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    code = main(["validate", str(path)])  # an unexpected exception fails the test
    captured = capsys.readouterr()
    assert code in (0, 2)
    assert "Traceback" not in captured.err
    if code == 2:
        assert len(captured.err.strip().splitlines()) == 1, captured.err
        assert captured.err.startswith("kts: error: ")
