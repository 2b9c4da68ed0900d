"""The report: the cells' table, the targets' ratios and verdicts, and the JSON document.

Targets (DESIGN.md, issue #7): gRPC p50 overhead over the in-process call < 2 ms at c=1;
throughput at c=32 with batching >= 2x without; REST throughput >= 3x
``mlflow models serve``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from bench.serving.measure import Cell, PerRound
from bench.serving.servers import KERAS_FLAVOR, PYFUNC_FLAVOR, mlflow_name

IN_PROCESS = "in-process signature call"
KTS = "kts serve"
KTS_OFF, KTS_ON = (KTS, "off"), (KTS, "on")

Rounds = dict[tuple[str, int], PerRound]
"""(protocol, concurrency) -> each target's per-round throughput (req/s)."""


def _opt(value: float | None, width: int, digits: int) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def table(cells: Iterable[Cell]) -> str:
    """The cells as a fixed-width table: a header line, a rule, one line per cell."""
    head = (
        f"{'target':<40}{'proto':<7}{'batch':<7}{'conc':>5}{'req/s':>10}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'errors':>8}{'srv cpu':>9}{'cli cpu':>9}{'rows/b':>8}"
    )
    lines = [head, "-" * len(head)]
    for c in cells:
        lines.append(
            f"{c.target:<40}{c.protocol:<7}{c.batching:<7}{c.concurrency:>5}{c.throughput:>10.1f}"
            f"{c.p50_ms:>9.2f}{c.p99_ms:>9.2f}{c.errors:>8}{_opt(c.server_cpu_ms, 9, 3)}"
            f"{_opt(c.client_cpu_ms, 9, 3)}{_opt(c.rows_per_batch, 8, 1)}"
        )
    return "\n".join(lines)


def rows(cells: Iterable[Cell]) -> list[str]:
    """The table's cell lines alone (progress output while the cells are measured)."""
    return table(cells).splitlines()[2:]


def find(
    cells: Iterable[Cell], target: str, protocol: str, batching: str, concurrency: int
) -> Cell | None:
    """The cell of (target, protocol, batching, concurrency), or None."""
    for c in cells:
        if (c.target, c.protocol, c.batching, c.concurrency) == (
            target,
            protocol,
            batching,
            concurrency,
        ):
            return c
    return None


@dataclass(frozen=True)
class Verdict:
    """One target checked.

    Attributes:
        name: what was compared, e.g. ``"grpc batching on/off c=32"``.
        value: the ratio (``unit`` ``"x"``) or the overhead (``unit`` ``"ms"``).
        unit: ``"x"`` or ``"ms"``.
        met: whether the target is met.
        line: the line the report prints.
    """

    name: str
    value: float
    unit: str
    met: bool
    line: str


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _per_round(top: list[float], bottom: list[float]) -> str:
    return ", ".join(f"{a / b:.2f}" if b else "-" for a, b in zip(top, bottom, strict=False))


def _overhead_verdict(cells: list[Cell]) -> list[Verdict]:
    base = find(cells, IN_PROCESS, "-", "-", 1)
    grpc1 = find(cells, KTS, "grpc", "off", 1)
    if not (base and grpc1):
        return []
    overhead = grpc1.p50_ms - base.p50_ms
    line = f"gRPC p50 overhead over in-process at c=1 (separate cells): {overhead:.2f} ms (target < 2 ms): {_met(overhead < 2)}"
    return [Verdict("grpc p50 overhead c=1 (separate cells)", overhead, "ms", overhead < 2, line)]


def _batching_verdicts(cells: list[Cell], per_round: Rounds) -> list[Verdict]:
    out = []
    for proto in ("grpc", "rest"):
        off, on = find(cells, KTS, proto, "off", 32), find(cells, KTS, proto, "on", 32)
        if not (off and on):
            continue
        gain = on.throughput / off.throughput
        rounds = per_round.get((proto, 32), {})
        spread = _per_round(rounds.get(KTS_ON, []), rounds.get(KTS_OFF, []))
        line = (
            f"{proto} throughput at c=32, batching on/off: {gain:.2f}x (per round: {spread}) "
            f"(target >= 2x): {_met(gain >= 2)}"
        )
        out.append(Verdict(f"{proto} batching on/off c=32", gain, "x", gain >= 2, line))
    return out


def _mlflow_verdicts(
    cells: list[Cell], per_round: Rounds, concurrencies: Iterable[int]
) -> list[Verdict]:
    out = []
    for flavor in (KERAS_FLAVOR, PYFUNC_FLAVOR):
        name = mlflow_name(flavor)
        for conc in concurrencies:
            ml = find(cells, name, "rest", "-", conc)
            kts = (find(cells, KTS, "rest", b, conc) for b in ("off", "on"))
            best = max((c for c in kts if c), key=lambda c: c.throughput, default=None)
            if not (ml and best and ml.throughput > 0):
                continue
            ratio = best.throughput / ml.throughput
            rounds = per_round.get(("rest", conc), {})
            spread = ""
            if (name, "-") in rounds:
                kts_best = [
                    max(a, b) for a, b in zip(rounds[KTS_OFF], rounds[KTS_ON], strict=False)
                ]
                spread = f", per round: {_per_round(kts_best, rounds[(name, '-')])}"
            line = (
                f"REST throughput vs mlflow ({flavor}) at c={conc}: {ratio:.1f}x "
                f"(kts batching {best.batching}{spread}; target >= 3x): {_met(ratio >= 3)}"
            )
            out.append(Verdict(f"rest vs mlflow ({flavor}) c={conc}", ratio, "x", ratio >= 3, line))
    return out


def verdicts(cells: list[Cell], per_round: Rounds, concurrencies: Iterable[int]) -> list[Verdict]:
    """Every target the cells can check, in the report's order.

    Args:
        cells: all cells of the run.
        per_round: per-round throughputs of the cells measured in turns.
        concurrencies: the concurrencies measured, ascending.
    """
    return (
        _overhead_verdict(cells)
        + _batching_verdicts(cells, per_round)
        + _mlflow_verdicts(cells, per_round, concurrencies)
    )


def paired_lines(paired: dict[str, float]) -> list[str]:
    """The lines on the c=1 p50 latencies (ms) measured in alternation."""
    base, same = paired["in-process"], paired["in-process (kts call)"]
    overhead = paired["grpc"] - base
    return [
        "c=1 p50, calls alternated in one thread (load drift cancels): "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in paired.items()),
        f"gRPC p50 overhead over in-process (paired): {overhead:.2f} ms (target < 2 ms): "
        f"{_met(overhead < 2)}; REST: {paired['rest'] - base:.2f} ms",
        # kts serve calls the signature flat (serving.servable.Signature.call), which is
        # cheaper than the keyword call above; against that same call made in-process,
        # what remains is transport, request/response conversion and bookkeeping.
        f"  of which transport and handling (vs the same Signature.call in-process): "
        f"gRPC {paired['grpc'] - same:.2f} ms, REST {paired['rest'] - same:.2f} ms",
    ]


def headline(
    *, seconds: float, rounds: int, load: str, batch_timeout_micros: int, cpus: int | None
) -> str:
    """The line above the table: what was measured and how."""
    return (
        f"Serving benchmark, digits CNN, one image per request, {seconds:g}s per cell "
        f"(kts serve off/on and mlflow pyfunc take turns in {rounds} slices), "
        f"load from {'h2load' if load == 'h2load' else 'Python client threads'}, "
        f"batching on: batch_timeout_micros {batch_timeout_micros}, "
        f"{cpus} CPUs shared by "
        "clients and servers; srv/cli cpu = CPU ms per request of the server / load generator, "
        "rows/b = mean rows per batched model call"
    )


def document(
    cells: list[Cell],
    paired: dict[str, float],
    per_round: Rounds,
    notes: list[str],
    checked: list[Verdict],
) -> dict[str, object]:
    """The ``--json`` document: cells, paired p50s (ms), per-round req/s, notes, verdicts."""
    return {
        "cells": [asdict(c) for c in cells],
        "paired_p50_ms": paired,
        "per_round_req_per_s": {
            f"{p} c={c}": {f"{n} [{b}]": v for (n, b), v in got.items()}
            for (p, c), got in per_round.items()
        },
        "notes": notes,
        "verdicts": [asdict(v) for v in checked],
    }
