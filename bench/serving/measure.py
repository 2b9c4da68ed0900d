"""Cells: one target at one (protocol, concurrency), measured alone or taking turns.

On a shared machine the load drifts over a run. `measure_in_turns` measures each cell in
``rounds`` slices and rotates the targets' order every round, so the drift reaches all
of them alike; per-round throughputs are kept so the spread of the ratios shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from bench.serving.load import (
    H2LoadClients,
    LoadGenerator,
    Requests,
    Sample,
    ThreadClients,
    grpc_clients,
    grpc_h2load,
    rest_clients,
    rest_h2load,
)
from bench.serving.servers import HOST, Target, batch_totals, failed_requests, process_cpu

PerRound = dict[tuple[str, str], list[float]]
"""(target name, batching) -> requests per second in each round."""


@dataclass
class Cell:
    """One row of the report: a target at one protocol and concurrency.

    Attributes:
        target: the target's name (``"kts serve"``, ``"in-process signature call"``, ...).
        protocol: ``"grpc"``, ``"rest"``, or ``"-"`` in process.
        batching: ``"off"`` / ``"on"`` for kts serve, ``"-"`` otherwise.
        concurrency: closed-loop clients, one request in flight each.
        requests: requests answered in the measured windows.
        errors: failed requests in the measured windows.
        throughput: requests per second.
        p50_ms: median latency (ms).
        p99_ms: 99th percentile latency (ms).
        server_cpu_ms: server process CPU per request, all its threads (ms); kts serve only.
        client_cpu_ms: the load generator's CPU per request (ms).
        rows_per_batch: mean rows per batched model call; kts serve with batching on only.
    """

    target: str
    protocol: str
    batching: str
    concurrency: int
    requests: int
    errors: int
    throughput: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float | None = None
    client_cpu_ms: float | None = None
    rows_per_batch: float | None = None


def cell_from(
    samples: list[Sample], name: str, *, protocol: str, batching: str, concurrency: int
) -> Cell:
    """The cell of ``samples`` (one per slice): requests, throughput and latency percentiles."""
    flat = np.array([x for s in samples for x in s.latencies] or [0.0])
    requests = sum(len(s.latencies) for s in samples)
    return Cell(
        target=name,
        protocol=protocol,
        batching=batching,
        concurrency=concurrency,
        requests=requests,
        errors=sum(s.errors for s in samples),
        throughput=requests / sum(s.seconds for s in samples),
        p50_ms=float(np.percentile(flat, 50) * 1e3),
        p99_ms=float(np.percentile(flat, 99) * 1e3),
    )


def measure_alone(
    name: str,
    generator: LoadGenerator,
    concurrency: int,
    seconds: float,
    *,
    protocol: str,
    batching: str,
) -> Cell:
    """One cell in one go: ``concurrency`` closed-loop clients for ``seconds`` (s)."""
    sample = generator.run(concurrency, seconds)
    cell = cell_from([sample], name, protocol=protocol, batching=batching, concurrency=concurrency)
    cell.client_cpu_ms = sample.client_cpu / max(sample.calls, 1) * 1e3
    return cell


def generator_for(
    target: Target, protocol: str, *, load: str, requests: Requests, workdir: Path
) -> LoadGenerator:
    """The load generator driving ``target`` over ``protocol`` (``"grpc"`` or ``"rest"``).

    Args:
        target: the server.
        protocol: ``"grpc"`` (kts serve only) or ``"rest"``.
        load: ``"python"`` (client threads) or ``"h2load"``.
        requests: the request in every form.
        workdir: where h2load writes its log.
    """
    if load == "python":
        if protocol == "grpc":
            return ThreadClients(grpc_clients(f"{HOST}:{target.grpc_port}", requests.x))
        return ThreadClients(
            rest_clients(HOST, target.rest_port, target.rest_path, requests.rest_body)
        )
    errors_now = partial(failed_requests, target.metrics_port) if target.metrics_port else None
    if protocol == "grpc":
        spec = grpc_h2load(HOST, target.grpc_port, requests.grpc_file)
    else:
        spec = rest_h2load(HOST, target.rest_port, target.rest_path, requests.rest_file)
    return H2LoadClients(spec, workdir, errors_now)


@dataclass
class _Account:
    """What one target's slices added up to."""

    samples: list[Sample] = field(default_factory=list)
    server_cpu: float | None = 0.0  # seconds; None once a reading failed
    client_cpu: float = 0.0  # seconds
    rows: float = 0.0
    model_calls: float = 0.0


def _measure_slice(
    target: Target, generator: LoadGenerator, concurrency: int, seconds: float, into: _Account
) -> Sample:
    """One slice of ``seconds`` (s) on ``target``; server CPU and batches read around it."""
    kts = target.metrics_port > 0
    cpu0 = process_cpu(target.proc.pid) if kts else None
    rows0, calls0 = batch_totals(target.metrics_port) if kts else (0.0, 0.0)
    sample = generator.run(concurrency, seconds)
    rows1, calls1 = batch_totals(target.metrics_port) if kts else (0.0, 0.0)
    cpu1 = process_cpu(target.proc.pid) if kts else None
    into.samples.append(sample)
    used = into.server_cpu
    into.server_cpu = None if used is None or cpu0 is None or cpu1 is None else used + cpu1 - cpu0
    into.client_cpu += sample.client_cpu
    into.rows += rows1 - rows0
    into.model_calls += calls1 - calls0
    return sample


def measure_in_turns(
    targets: list[Target],
    generators: dict[tuple[str, str], LoadGenerator],
    *,
    protocol: str,
    concurrency: int,
    seconds: float,
    rounds: int,
) -> tuple[list[Cell], PerRound]:
    """One cell per target, measured in ``rounds`` slices of ``seconds / rounds`` each.

    The targets take turns (the order rotates every round), so load drift on a shared
    machine reaches all of them alike.

    Args:
        targets: the servers, in their first round's order.
        generators: each target's load generator, by `Target.key`.
        protocol: ``"grpc"`` or ``"rest"`` (the cells' label).
        concurrency: closed-loop clients.
        seconds: measured seconds per cell, over all its slices.
        rounds: slices per cell.

    Returns:
        The cells, in ``targets`` order, and each target's per-round throughput (req/s).
    """
    accounts = {t.key: _Account() for t in targets}
    per_round: PerRound = {t.key: [] for t in targets}
    slice_seconds = seconds / rounds
    for r in range(rounds):
        shift = r % len(targets)
        for target in targets[shift:] + targets[:shift]:
            sample = _measure_slice(
                target, generators[target.key], concurrency, slice_seconds, accounts[target.key]
            )
            per_round[target.key].append(len(sample.latencies) / sample.seconds)
    cells = []
    for target in targets:
        account = accounts[target.key]
        cell = cell_from(
            account.samples, target.name, protocol=protocol, batching=target.batching,
            concurrency=concurrency,
        )  # fmt: skip
        calls = sum(s.calls for s in account.samples) or 1
        used = account.server_cpu
        cell.server_cpu_ms = None if used is None else used / calls * 1e3
        cell.client_cpu_ms = account.client_cpu / calls * 1e3
        cell.rows_per_batch = account.rows / account.model_calls if account.model_calls else None
        cells.append(cell)
    return cells, per_round
