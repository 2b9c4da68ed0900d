"""One smoke round of the serving benchmark, end to end: ``python -m bench.serving --quick``.

Real processes on 127.0.0.1 and free ports: ``kts serve`` with batching off and on,
``mlflow models serve --env-manager local`` of the pyfunc model (nothing installed or
downloaded), driven by the stock ``tensorflow_serving.apis`` stub and HTTP clients (or
h2load where installed). The report's shape and sanity are asserted, never its timings.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, kts_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bench_serving")]

CONCURRENCY = (1, 32)
IN_PROCESS = "in-process signature call"
PYFUNC = "mlflow models serve (pyfunc+signature)"
EXPECTED_CELLS = {
    *((IN_PROCESS, "-", "-", c) for c in CONCURRENCY),
    *(("kts serve", p, b, c) for p in ("grpc", "rest") for b in ("off", "on") for c in CONCURRENCY),
    *((PYFUNC, "rest", "-", c) for c in CONCURRENCY),
}
EXPECTED_RATIOS = {
    "grpc batching on/off c=32",
    "rest batching on/off c=32",
    *(f"rest vs mlflow (pyfunc+signature) c={c}" for c in CONCURRENCY),
}


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_round(tmp_path_factory):
    """The ``--json`` document and stdout of one ``--quick`` run."""
    out = tmp_path_factory.mktemp("bench-serving") / "report.json"
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    result = subprocess.run(
        [sys.executable, "-m", "bench.serving", "--quick", "--json", str(out)],
        cwd=REPO,
        env=kts_env({"PYTHONPATH": path}),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return json.loads(out.read_text()), result.stdout


def test_every_cell_answered_requests_without_errors(quick_round):
    report, _ = quick_round
    cells = report["cells"]
    keys = [(c["target"], c["protocol"], c["batching"], c["concurrency"]) for c in cells]
    assert sorted(keys) == sorted(EXPECTED_CELLS)
    for cell in cells:
        where = (cell["target"], cell["protocol"], cell["batching"], cell["concurrency"])
        assert cell["requests"] > 0, where
        assert cell["errors"] == 0, where
        for key in ("throughput", "p50_ms", "p99_ms"):
            assert _positive(cell[key]), (where, key, cell[key])
        assert cell["p50_ms"] <= cell["p99_ms"], where
        assert math.isfinite(cell["client_cpu_ms"]), where
        assert cell["client_cpu_ms"] >= 0, where
        if cell["target"] == "kts serve":
            assert _positive(cell["server_cpu_ms"]), where  # read from /proc (Linux)
            if cell["batching"] == "on":
                assert cell["rows_per_batch"] >= 1, where
            else:
                assert cell["rows_per_batch"] is None, where
        else:
            assert cell["server_cpu_ms"] is None, where
            assert cell["rows_per_batch"] is None, where


def test_ratios_are_finite_positive_and_printed(quick_round):
    report, stdout = quick_round
    verdicts = {v["name"]: v for v in report["verdicts"]}
    assert set(verdicts) == EXPECTED_RATIOS | {"grpc p50 overhead c=1 (separate cells)"}
    for name in EXPECTED_RATIOS:
        assert verdicts[name]["unit"] == "x"
        assert _positive(verdicts[name]["value"]), (name, verdicts[name])
    # an overhead is a difference of two medians: finite, of either sign on a busy box
    assert math.isfinite(verdicts["grpc p50 overhead c=1 (separate cells)"]["value"])
    lines = stdout.splitlines()
    for verdict in verdicts.values():
        assert verdict["line"] in lines
        assert isinstance(verdict["met"], bool)


def test_table_paired_latencies_and_rounds(quick_round):
    report, stdout = quick_round
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("target "))
    assert lines[header - 1].startswith("Serving benchmark, digits CNN, one image per request")
    table = lines[header + 2 : header + 2 + len(EXPECTED_CELLS)]
    for cell in report["cells"]:
        assert any(
            row.startswith(cell["target"]) and row.split()[-8] == str(cell["concurrency"])
            for row in table
        ), cell
    paired = report["paired_p50_ms"]
    assert set(paired) == {"in-process", "in-process (kts call)", "grpc", "rest"}
    assert all(_positive(v) for v in paired.values()), paired
    rounds = report["per_round_req_per_s"]
    assert set(rounds) == {f"{p} c={c}" for p in ("grpc", "rest") for c in CONCURRENCY}
    for got in rounds.values():
        assert all(len(v) == 1 and _positive(v[0]) for v in got.values()), got
    assert set(rounds["rest c=32"]) == {"kts serve [off]", "kts serve [on]", f"{PYFUNC} [-]"}
    # the one note: why --quick leaves MLflow's Keras flavor out
    assert report["notes"] == [
        "--quick: mlflow models serve (keras flavor) skipped: it answers in seconds at "
        "c=32, so a short window counts none of its answers"
    ]
    assert report["notes"][0] in lines
