"""Server-side dynamic batching across concurrent requests.

Follows TensorFlow Serving's shared batch scheduler: tasks (one request's rows) join
the open batch while it has room for them, otherwise open a new batch; at most
``max_enqueued_batches`` batches wait, and a task that would need one more is turned
away with UNAVAILABLE ("The batch scheduling queue to which this task was submitted
is full"). ``num_batch_threads`` workers each take the oldest batch once it is full,
once ``batch_timeout_micros`` have passed since it opened, or at once when the
timeout is 0 (then whatever has queued while the workers were busy forms the batch).
A batch is padded up to the next of ``allowed_batch_sizes`` when those are given.

Tasks whose inputs differ in any dimension but the first cannot share a batch; they
start a new one. A request with more rows than ``max_batch_size`` runs on its own,
unbatched (upstream rejects it unless large-batch splitting is on).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.config import BatchingParameters
from serving.errors import ServingError, internal, unavailable

Arrays = Mapping[str, np.ndarray]
QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


@dataclass
class _Task:
    inputs: Arrays
    size: int
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, np.ndarray] | None = None
    error: BaseException | None = None


@dataclass
class _Batch:
    key: tuple
    opened: float
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0


def _shape_key(inputs: Arrays) -> tuple:
    return tuple(sorted((name, a.dtype.str, a.shape[1:]) for name, a in inputs.items()))


class Batcher:
    """Batches calls of ``run`` (a batched inputs -> outputs function) across threads.

    Args:
        run: computes outputs for a dict of arrays sharing their first dimension.
        params: TensorFlow Serving's batching parameters.
        on_batch: told the size of every batch run (before padding), for metrics.
        name: for thread names.
    """

    def __init__(
        self,
        run: Callable[[Arrays], dict[str, np.ndarray]],
        params: BatchingParameters,
        *,
        on_batch: Callable[[int], None] | None = None,
        name: str = "batch",
    ):
        self._run = run
        self._params = params
        self._on_batch = on_batch
        self._timeout = params.batch_timeout_micros / 1e6
        self._batches: deque[_Batch] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(params.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def __call__(self, inputs: Arrays) -> dict[str, np.ndarray]:
        """Run ``inputs`` as part of a batch; blocks until its outputs are ready."""
        sizes = {int(a.shape[0]) if a.ndim else -1 for a in inputs.values()}
        if len(sizes) != 1 or -1 in sizes:
            return self._run(inputs)  # no common batch dimension: cannot be batched
        (size,) = sizes
        if size == 0 or size > self._params.max_batch_size:
            return self._run(inputs)
        task = _Task(inputs, size)
        key = _shape_key(inputs)
        with self._cond:
            closed = self._closed
            if not closed:
                last = self._batches[-1] if self._batches else None
                if (
                    last is not None
                    and last.key == key
                    and last.size + size <= self._params.max_batch_size
                ):
                    last.tasks.append(task)
                    last.size += size
                    # A worker already knows about this batch; wake one only if it is now full.
                    if last.size >= self._params.max_batch_size:
                        self._cond.notify()
                else:
                    if len(self._batches) >= self._params.max_enqueued_batches:
                        raise unavailable(QUEUE_FULL)
                    self._batches.append(_Batch(key, time.monotonic(), [task], size))
                    self._cond.notify()
        if closed:
            # The version is being unloaded; requests that already hold it still get answers.
            return self._run(inputs)
        task.done.wait()
        if task.error is not None:
            raise task.error
        assert task.result is not None
        return task.result

    def close(self) -> None:
        """Stop the workers once the queued batches have run."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _next_batch(self) -> _Batch | None:
        with self._cond:
            while True:
                if self._batches:
                    batch = self._batches[0]
                    wait = batch.opened + self._timeout - time.monotonic()
                    ready = (
                        self._timeout == 0
                        or batch.size >= self._params.max_batch_size
                        or len(self._batches) > 1
                        or wait <= 0
                        or self._closed
                    )
                    if ready:
                        return self._batches.popleft()
                    self._cond.wait(wait)
                elif self._closed:
                    return None
                else:
                    self._cond.wait()

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._execute(batch)

    def _execute(self, batch: _Batch) -> None:
        tasks = batch.tasks
        try:
            if self._on_batch is not None:
                self._on_batch(batch.size)
            if len(tasks) == 1 and not self._params.allowed_batch_sizes:
                tasks[0].result = self._run(tasks[0].inputs)
            else:
                self._run_merged(batch)
        except BaseException as err:  # every waiting request gets the batch's error
            for task in tasks:
                task.error = err if isinstance(err, ServingError) else _wrap(err)
        finally:
            for task in tasks:
                task.done.set()

    def _run_merged(self, batch: _Batch) -> None:
        tasks = batch.tasks
        names = list(tasks[0].inputs)
        merged = {n: np.concatenate([t.inputs[n] for t in tasks]) for n in names}
        padded = self._padded_size(batch.size)
        if padded > batch.size:
            extra = padded - batch.size
            merged = {
                n: np.concatenate([a, np.repeat(a[:1], extra, axis=0)]) for n, a in merged.items()
            }
        outputs = self._run(merged)
        for name, out in outputs.items():
            if out.ndim == 0 or out.shape[0] != padded:
                raise internal(
                    f"Batched output {name!r} has shape {list(out.shape)}; expected its first "
                    f"dimension to be the batch size {padded}"
                )
        start = 0
        for task in tasks:
            end = start + task.size
            task.result = {name: out[start:end] for name, out in outputs.items()}
            start = end

    def _padded_size(self, size: int) -> int:
        for allowed in self._params.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size


def _wrap(err: BaseException) -> Any:
    return internal(f"{type(err).__name__}: {err}")
