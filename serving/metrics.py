"""Prometheus metrics in the text exposition format, with no client library.

Two families:

* TensorFlow Serving's own (``:tensorflow:serving:request_count{model_name,status}`` and
  the ``:tensorflow:serving:request_latency`` histogram in microseconds by model, API
  and entrypoint), so dashboards built for the official server keep working;
* ``kts_serving_*`` with what upstream users ask for in tensorflow/serving#1970: request
  counts, errors and latency per model, **version** and **signature**, the batch-size
  histogram, and model load results.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

# Upstream's request latency buckets: 10us scaled by 1.8, 33 buckets (~20 minutes).
TF_LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))
LATENCY_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(11))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Counter:
    def __init__(self, name: str, help_text: str, label_names: Sequence[str]):
        self.name, self.help, self.label_names = name, help_text, tuple(label_names)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self, lines: list[str]) -> None:
        lines.append(f"# HELP {self.name} {self.help}")
        lines.append(f"# TYPE {self.name} counter")
        for labels, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(self.label_names, labels)} {_number(value)}")


class Histogram:
    def __init__(
        self, name: str, help_text: str, label_names: Sequence[str], buckets: Sequence[float]
    ):
        self.name, self.help, self.label_names = name, help_text, tuple(label_names)
        self.buckets = tuple(buckets)
        self.values: dict[tuple[str, ...], list] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        entry = self.values.get(labels)
        if entry is None:
            entry = self.values[labels] = [[0] * (len(self.buckets) + 1), 0.0, 0]
        entry[0][bisect.bisect_left(self.buckets, value)] += 1
        entry[1] += value
        entry[2] += 1

    def render(self, lines: list[str]) -> None:
        lines.append(f"# HELP {self.name} {self.help}")
        lines.append(f"# TYPE {self.name} histogram")
        for labels, (counts, total, count) in sorted(self.values.items()):
            cumulative = 0
            for bound, n in zip(self.buckets, counts, strict=False):
                cumulative += n
                le = f'le="{_number(bound) if bound == int(bound) else repr(bound)}"'
                lines.append(
                    f"{self.name}_bucket{_labels(self.label_names, labels, le)} {cumulative}"
                )
            inf = _labels(self.label_names, labels, 'le="+Inf"')
            lines.append(f"{self.name}_bucket{inf} {count}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, labels)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.label_names, labels)} {count}")


class Metrics:
    """The server's metrics; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tf_request_count = Counter(
            ":tensorflow:serving:request_count",
            "The total number of requests.",
            ("model_name", "status"),
        )
        self.tf_request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"),
            TF_LATENCY_BUCKETS_US,
        )
        self.requests = Counter(
            "kts_serving_requests_total",
            "Requests by model, version, signature, API, entrypoint and status code.",
            ("model", "version", "signature", "api", "entrypoint", "code"),
        )
        self.errors = Counter(
            "kts_serving_request_errors_total",
            "Failed requests by model, version, signature, API, entrypoint and status code.",
            ("model", "version", "signature", "api", "entrypoint", "code"),
        )
        self.latency = Histogram(
            "kts_serving_request_latency_seconds",
            "Request wall time in seconds by model, version, signature and API.",
            ("model", "version", "signature", "api", "entrypoint"),
            LATENCY_BUCKETS_S,
        )
        self.batch_size = Histogram(
            "kts_serving_batch_size",
            "Rows per batch run by the dynamic batcher.",
            ("model", "version", "signature"),
            BATCH_SIZE_BUCKETS,
        )
        self.loads = Counter(
            "kts_serving_model_loads_total",
            "Model version loads (with warm-up) by result.",
            ("model", "version", "status"),
        )
        self.warmup_records = Counter(
            "kts_serving_warmup_records_total",
            "Warm-up records replayed at load time.",
            ("model", "version"),
        )

    def observe_request(
        self,
        *,
        model: str,
        version: str,
        signature: str,
        api: str,
        entrypoint: str,
        code: str,
        seconds: float,
    ) -> None:
        with self._lock:
            self.tf_request_count.inc((model, code))
            labels = (model, version, signature, api, entrypoint, code)
            self.requests.inc(labels)
            if code != "OK":
                self.errors.inc(labels)
            else:
                self.tf_request_latency.observe((model, api, entrypoint), seconds * 1e6)
                self.latency.observe((model, version, signature, api, entrypoint), seconds)

    def observe_batch(self, model: str, version: int, signature: str, size: int) -> None:
        with self._lock:
            self.batch_size.observe((model, str(version), signature), float(size))

    def observe_load(self, model: str, version: int, status: str, warmup_records: int = 0) -> None:
        with self._lock:
            self.loads.inc((model, str(version), status))
            if warmup_records:
                self.warmup_records.inc((model, str(version)), warmup_records)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for metric in (
                self.tf_request_count,
                self.tf_request_latency,
                self.requests,
                self.errors,
                self.latency,
                self.batch_size,
                self.loads,
                self.warmup_records,
            ):
                metric.render(lines)
        return "\n".join(lines) + "\n"


def histogram_totals(page: str, name: str) -> tuple[float, float]:
    """(sum, count) of histogram ``name`` over all its label sets, read from a rendered
    Prometheus page (for clients and benchmarks reading ``kts serve``'s metrics)."""
    total = count = 0.0
    for line in page.splitlines():
        if line.startswith(f"{name}_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count
