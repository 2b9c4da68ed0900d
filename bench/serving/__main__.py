"""``python -m bench.serving``: the command line and the order of the run.

1. train and export the digits CNN; measure the in-process call at each concurrency;
2. start ``kts serve`` with batching off and on and, side by side, the MLflow models'
   servers; once all answer, measure the c=1 paired latencies;
3. measure the servers, protocol by protocol, taking turns; the Keras flavor alone;
4. stop every server and print the report (and write ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import bench.serving as package
from bench.serving.load import (
    Requests,
    ThreadClients,
    grpc_clients,
    paired_latency,
    rest_clients,
    write_requests,
)
from bench.serving.measure import (
    Cell,
    generator_for,
    measure_alone,
    measure_in_turns,
)
from bench.serving.model import Trained, train_and_export
from bench.serving.report import (
    IN_PROCESS,
    KTS,
    Rounds,
    Verdict,
    document,
    headline,
    paired_lines,
    rows,
    table,
    verdicts,
)
from bench.serving.servers import (
    HOST,
    KERAS_FLAVOR,
    PYFUNC_FLAVOR,
    InProcess,
    Target,
    mlflow_name,
    save_mlflow_models,
    start_kts,
    start_mlflow,
    stop,
    wait_ready,
)


@dataclass(frozen=True)
class Preset:
    """What a flag not given defaults to: seconds per cell, rounds, concurrencies."""

    seconds: float
    rounds: int
    concurrency: tuple[int, ...]

    def describe(self) -> str:
        """E.g. ``--seconds 3 --rounds 3 --concurrency 1,8,32``."""
        conc = ",".join(map(str, self.concurrency))
        return f"--seconds {self.seconds:g} --rounds {self.rounds} --concurrency {conc}"


DEFAULTS = Preset(seconds=3.0, rounds=3, concurrency=(1, 8, 32))
QUICK = Preset(seconds=0.5, rounds=1, concurrency=(1, 32))
QUICK_SKIPS_KERAS = (
    f"--quick: {mlflow_name(KERAS_FLAVOR)} skipped: it answers in seconds at c=32, "
    "so a short window counts none of its answers"
)


@dataclass(frozen=True)
class Settings:
    """The command line, resolved.

    Attributes:
        seconds: measured seconds per cell (s).
        rounds: slices per cell, the servers taking turns.
        concurrency: the concurrencies measured, ascending.
        load: ``"h2load"`` or ``"python"`` (``auto`` resolved).
        batch_timeout_micros: ``batch_timeout_micros`` of the batching-on server (µs).
        json: where to write the JSON document, or None.
        mlflow_flavors: the MLflow models to serve (none with ``--skip-mlflow``).
        quick: the smoke round (``--quick``).
    """

    seconds: float
    rounds: int
    concurrency: tuple[int, ...]
    load: str
    batch_timeout_micros: int
    json: Path | None
    mlflow_flavors: tuple[str, ...]
    quick: bool


def _concurrency(text: str) -> tuple[int, ...]:
    """``"1,8,32"`` -> (1, 8, 32): positive integers, sorted, each once."""
    try:
        values = sorted({int(part) for part in text.split(",")})
    except ValueError:
        values = []
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(
            f"received {text!r}; expected positive integers separated by commas, e.g. 1,8,32"
        )
    return tuple(values)


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    """Parse the command line (``sys.argv[1:]`` when ``argv`` is None)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.serving", description=(package.__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--seconds", type=float, default=None,
        help=f"measured seconds per cell (default {DEFAULTS.seconds:g})",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=None,
        help=f"slices per cell, the servers taking turns (default {DEFAULTS.rounds})",
    )  # fmt: skip
    parser.add_argument(
        "--concurrency", type=_concurrency, default=None,
        help="closed-loop clients per cell, comma-separated "
        f"(default {','.join(map(str, DEFAULTS.concurrency))})",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the cells as JSON here")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument(
        "--load", choices=("auto", "h2load", "python"), default="auto",
        help="load generator for the server cells (auto: h2load when installed)",
    )  # fmt: skip
    parser.add_argument(
        "--batch-timeout-micros", type=int, default=10_000,
        help="batch_timeout_micros of the batching-on server",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true",
        help=f"a smoke round: {QUICK.describe()} unless given, MLflow's Keras flavor "
        "skipped; its numbers are not results",
    )  # fmt: skip
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    seconds: float = preset.seconds if args.seconds is None else args.seconds
    rounds: int = preset.rounds if args.rounds is None else args.rounds
    if rounds < 1:
        parser.error(f"--rounds must be >= 1, got {rounds}")
    if seconds <= 0:
        parser.error(f"--seconds must be > 0, got {seconds:g}")
    load = args.load
    if load == "auto":
        load = "h2load" if shutil.which("h2load") else "python"
    elif load == "h2load" and not shutil.which("h2load"):
        parser.error(
            "--load h2load: h2load is not on PATH (Debian: apt-get install nghttp2-client)"
        )
    flavors: tuple[str, ...] = (KERAS_FLAVOR, PYFUNC_FLAVOR)
    if args.skip_mlflow:
        flavors = ()
    elif args.quick:
        flavors = (PYFUNC_FLAVOR,)
    return Settings(
        seconds=seconds,
        rounds=rounds,
        concurrency=args.concurrency or preset.concurrency,
        load=load,
        batch_timeout_micros=args.batch_timeout_micros,
        json=args.json,
        mlflow_flavors=flavors,
        quick=args.quick,
    )


# ------------------------------------------------------------------ steps


def measure_in_process(baseline: InProcess, settings: Settings) -> list[Cell]:
    """The in-process cells, one per concurrency, printed as they come."""
    cells = []
    for conc in settings.concurrency:
        cell = measure_alone(
            IN_PROCESS, ThreadClients(baseline.client), conc, settings.seconds,
            protocol="-", batching="-",
        )  # fmt: skip
        cells.append(cell)
        print(rows([cell])[0], flush=True)
    return cells


def start_kts_pair(
    stack: ExitStack, trained: Trained, settings: Settings, workdir: Path
) -> list[Target]:
    """Start ``kts serve`` with batching off and on, side by side; returns at once.

    ``stack`` stops them. `wait_until_ready` waits for them.
    """
    servers = []
    for batching in (False, True):
        target = start_kts(
            workdir, trained.model_dir, batching=batching,
            timeout_micros=settings.batch_timeout_micros,
        )  # fmt: skip
        stack.callback(stop, target.proc)
        servers.append(target)
    return servers


def measure_paired(
    baseline: InProcess, off: Target, requests: Requests, settings: Settings
) -> dict[str, float]:
    """c=1 p50 latencies (ms) of the in-process calls and of the batching-off server's
    gRPC and REST, calls alternated in one thread (``150 * seconds`` rounds)."""
    return paired_latency(
        {
            "in-process": baseline.client(),
            "in-process (kts call)": baseline.kts_call,
            "grpc": grpc_clients(f"{HOST}:{off.grpc_port}", requests.x)(),
            "rest": rest_clients(HOST, off.rest_port, off.rest_path, requests.rest_body)(),
        },
        rounds=int(150 * settings.seconds),
    )


def start_mlflow_servers(
    stack: ExitStack, trained: Trained, settings: Settings, workdir: Path, notes: list[str]
) -> list[Target]:
    """Save the MLflow models of ``settings.mlflow_flavors`` and start their servers side
    by side; returns at once. ``stack`` stops them.

    Models that could not be saved are a note in the report, not a failed run.
    """
    if not settings.mlflow_flavors:
        return []
    try:
        saved = save_mlflow_models(
            workdir, trained.model, trained.x, trained.exported.path,
            flavors=settings.mlflow_flavors,
        )  # fmt: skip
    except Exception as err:  # report why MLflow could not be measured
        notes.append(f"mlflow models could not be saved: {type(err).__name__}: {err}")
        return []
    servers = []
    for flavor, path in saved.items():
        target = start_mlflow(workdir, path, flavor)
        stack.callback(stop, target.proc)
        servers.append(target)
    return servers


def wait_until_ready(kts: list[Target], mlflow: list[Target], notes: list[str]) -> list[Target]:
    """Wait until every server answers; returns the MLflow servers that did.

    A kts serve that does not come up stops the run (`RuntimeError`); an MLflow server
    that does not is a note in the report.
    """
    for target in kts:
        wait_ready(target)
    ready = []
    for target in mlflow:
        try:
            wait_ready(target)
        except RuntimeError as err:
            notes.append(f"{target.name} did not start: {str(err)[-800:]}")
            continue
        ready.append(target)
    return ready


def measure_servers(
    kts: list[Target],
    mlflow: list[Target],
    requests: Requests,
    settings: Settings,
    workdir: Path,
) -> tuple[list[Cell], Rounds]:
    """Every server cell, printed as they come; returns them in the report's order.

    The MLflow pyfunc (MLflow's best case, the close competitor) takes turns with kts
    serve over REST; the Keras flavor answers in seconds at c=32, too slow to measure in
    slices, and is measured on its own afterwards.
    """
    rivals = [t for t in mlflow if PYFUNC_FLAVOR in t.name]
    slow = [t for t in mlflow if t not in rivals]
    per_round: Rounds = {}
    measured: list[Cell] = []
    for conc in settings.concurrency:
        for proto in ("grpc", "rest"):
            group = kts + (rivals if proto == "rest" else [])
            generators = {
                t.key: generator_for(
                    t, proto, load=settings.load, requests=requests, workdir=workdir
                )
                for t in group
            }
            got, per_round[(proto, conc)] = measure_in_turns(
                group, generators, protocol=proto, concurrency=conc,
                seconds=settings.seconds, rounds=settings.rounds,
            )  # fmt: skip
            measured += got
            for line in rows(got):
                print(line, flush=True)
    for target in slow:
        generator = generator_for(
            target, "rest", load=settings.load, requests=requests, workdir=workdir
        )
        for conc in settings.concurrency:
            measured.append(
                measure_alone(target.name, generator, conc, settings.seconds,
                              protocol="rest", batching="-")
            )  # fmt: skip
            print(rows(measured[-1:])[0], flush=True)
    names = {KTS: 0, **{t.name: 1 + i for i, t in enumerate(slow + rivals)}}
    order = {"off": 0, "on": 1, "-": 2}
    measured.sort(key=lambda c: (names[c.target], order[c.batching], c.concurrency, c.protocol))
    return measured, per_round


def print_report(
    settings: Settings,
    cells: list[Cell],
    paired: dict[str, float],
    per_round: Rounds,
    notes: list[str],
) -> list[Verdict]:
    """Print the headline, the table, the paired latencies, the verdicts and the notes."""
    checked = verdicts(cells, per_round, settings.concurrency)
    print()
    print(
        headline(
            seconds=settings.seconds, rounds=settings.rounds, load=settings.load,
            batch_timeout_micros=settings.batch_timeout_micros, cpus=os.cpu_count(),
        )
    )  # fmt: skip
    print(table(cells))
    print()
    for line in paired_lines(paired) + [v.line for v in checked] + notes:
        print(line)
    return checked


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit code (0)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported
    settings = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="kts-bench-serving-"))
    notes = [QUICK_SKIPS_KERAS] if settings.quick and settings.mlflow_flavors else []
    with ExitStack() as stack:  # stops every server started, also when a step fails
        print(f"workdir {workdir}; training and exporting the digits CNN ...", flush=True)
        trained = train_and_export(workdir)
        one = trained.x[:1]
        baseline = InProcess(trained.exported.path, trained.exported.version, one)
        cells = measure_in_process(baseline, settings)
        requests = write_requests(workdir, one)
        # Every server starts at once (startup is most of a short run); the paired
        # latencies are measured once all are up, the MLflow servers idle.
        kts = start_kts_pair(stack, trained, settings, workdir)
        mlflow = start_mlflow_servers(stack, trained, settings, workdir, notes)
        mlflow = wait_until_ready(kts, mlflow, notes)
        paired = measure_paired(baseline, kts[0], requests, settings)
        measured, per_round = measure_servers(kts, mlflow, requests, settings, workdir)
        cells += measured
    checked = print_report(settings, cells, paired, per_round, notes)
    if settings.json:
        settings.json.write_text(
            json.dumps(document(cells, paired, per_round, notes, checked), indent=2)
        )
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
