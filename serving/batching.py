"""Server-side dynamic batching across concurrent requests.

Follows TensorFlow Serving's shared batch scheduler: tasks (one request's rows) join
the open batch while it has room for them, otherwise open a new batch; at most
``max_enqueued_batches`` batches wait, and a task that would need one more is turned
away with UNAVAILABLE ("The batch scheduling queue to which this task was submitted
is full"). At most ``num_batch_threads`` batches run at a time, oldest first; a batch
runs once it is full, once ``batch_timeout_micros`` have passed since it opened, or at
once when the timeout is 0 (then whatever has queued while the others ran forms the
batch). A batch is padded up to the next of ``allowed_batch_sizes`` when those are given.

Tasks whose inputs differ in any dimension but the first cannot share a batch; they
start a new one. A request with more rows than ``max_batch_size`` runs on its own,
unbatched (upstream rejects it unless large-batch splitting is on).

The batch is run by the thread of the request that opened it (its leader), not by a
pool of batch threads: the request threads block anyway, and handing every batch to
another thread and back costs two thread wake-ups and two waits for the GIL per
batch -- with a small model that was more than the model call itself. The others
in the batch (followers) sleep on a lock of their own that the leader releases when
their rows are ready. ``num_batch_threads`` keeps its meaning: how many batches may
run at once.

Callers on an asyncio event loop (the gRPC front end) use `Batcher.call_async`: the
same queue and rules, but a follower waits on a loop future instead of a thread (the
leader wakes all of a loop's followers with one callback), and a batch opened from the
loop is led by a thread of its own. No thread is held per waiting request.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

import numpy as np

from serving.config import BatchingParameters
from serving.errors import ServingError, internal, unavailable

Arrays = Mapping[str, np.ndarray]
QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


class _Task:
    """One request's rows.

    A follower on a thread holds its ``ready`` lock until its answer is in; one on an
    event loop (``waiter``: loop and future) has its future resolved instead.
    """

    __slots__ = ("error", "inputs", "ready", "result", "size", "waiter")

    def __init__(
        self,
        inputs: Arrays,
        size: int,
        *,
        follower: bool,
        waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future] | None = None,
    ):
        self.inputs = inputs
        self.size = size
        self.result: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None
        self.ready: threading.Lock | None = None
        self.waiter = waiter
        if follower and waiter is None:
            self.ready = threading.Lock()
            self.ready.acquire()

    def answer(self) -> dict[str, np.ndarray]:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class _Batch:
    __slots__ = ("key", "opened", "size", "tasks", "wake")

    def __init__(self, key: tuple, task: _Task, lock: threading.Lock):
        self.key = key
        self.opened = time.monotonic()
        self.tasks = [task]
        self.size = task.size
        self.wake = threading.Condition(lock)  # the leader waits on this


def _shape_key(inputs: Arrays) -> tuple:
    return tuple(sorted((name, a.dtype.str, a.shape[1:]) for name, a in inputs.items()))


class Batcher:
    """Batches calls of ``run`` (a batched inputs -> outputs function) across threads.

    Args:
        run: computes outputs for a dict of arrays sharing their first dimension.
        params: TensorFlow Serving's batching parameters.
        on_batch: told the size of every batch run (before padding), for metrics.
        name: kept for messages (no threads are started).
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
        self.name = name
        self._timeout = params.batch_timeout_micros / 1e6
        self._max = params.max_batch_size
        self._lock = threading.Lock()
        self._batches: deque[_Batch] = deque()  # waiting to run, oldest first
        self._running = 0
        self._closed = False

    def __call__(self, inputs: Arrays) -> dict[str, np.ndarray]:
        """Run ``inputs`` as part of a batch; blocks until its outputs are ready."""
        joined = self._join(inputs, None)
        if joined is None:
            return self._run(inputs)
        task, batch = joined
        if batch is None:
            assert task.ready is not None
            task.ready.acquire()  # released by the leader once the batch has run
            return task.answer()
        return self._lead(batch, task)

    async def call_async(self, inputs: Arrays, executor: Executor) -> dict[str, np.ndarray]:
        """`__call__` for a caller on an asyncio event loop; waits without holding a thread.

        Unbatchable inputs run in ``executor``. A batch opened from the loop is led by a
        thread of its own (one per batch, not per request), never by a pooled one: a
        leader waits for the batches ahead of it, so leaders queued in a bounded pool
        behind waiting leaders -- or dropped from it when their caller gives up -- would
        stall the queue. Every request of the batch, its opener included, awaits a future
        the leader resolves.
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        joined = self._join(inputs, (loop, future))
        if joined is None:
            return await loop.run_in_executor(executor, self._run, inputs)
        task, batch = joined
        if batch is not None:
            threading.Thread(
                target=self._lead_detached, args=(batch, task), name=self.name, daemon=True
            ).start()
        await future
        return task.answer()

    def _lead_detached(self, batch: _Batch, task: _Task) -> None:
        try:
            self._lead(batch, task)
        except BaseException:  # noqa: BLE001 - the error is the task's; its caller reads it
            pass

    def _join(
        self, inputs: Arrays, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future] | None
    ) -> tuple[_Task, _Batch | None] | None:
        """Put ``inputs`` in the open batch (-> its task, None) or a new one (-> task, batch).

        None when they cannot be batched: no common first dimension, more rows than
        ``max_batch_size``, or the batcher is closed. UNAVAILABLE when the queue is full.
        """
        size = -1
        for array in inputs.values():
            rows = int(array.shape[0]) if array.ndim else -1
            if rows < 0 or (size >= 0 and rows != size):
                return None  # no common batch dimension: cannot be batched
            size = rows
        if size <= 0 or size > self._max:
            return None
        key = _shape_key(inputs)
        with self._lock:
            if self._closed:
                # The version is being unloaded; requests that already hold it still get answers.
                return None
            last = self._batches[-1] if self._batches else None
            if last is not None and last.key == key and last.size + size <= self._max:
                task = _Task(inputs, size, follower=True, waiter=waiter)
                last.tasks.append(task)
                last.size += size
                if last.size >= self._max:
                    last.wake.notify()  # full: its leader need not wait for the timeout
                return task, None
            if len(self._batches) >= self._params.max_enqueued_batches:
                raise unavailable(QUEUE_FULL)
            task = _Task(inputs, size, follower=False, waiter=waiter)
            batch = _Batch(key, task, self._lock)
            if self._batches:
                # The batch before this one can take no more rows: it is ready now.
                self._batches[-1].wake.notify()
            self._batches.append(batch)
            return task, batch

    def close(self) -> None:
        """Run the queued batches now; later requests run unbatched."""
        with self._lock:
            self._closed = True
            for batch in self._batches:
                batch.wake.notify()

    # ------------------------------------------------------------------- leader

    def _lead(self, batch: _Batch, task: _Task) -> dict[str, np.ndarray]:
        """Wait until ``batch`` may run, run it, hand the followers their rows."""
        with self._lock:
            while True:
                if self._batches[0] is batch and self._running < self._params.num_batch_threads:
                    wait = batch.opened + self._timeout - time.monotonic()
                    if (
                        self._timeout == 0
                        or batch.size >= self._max
                        or len(self._batches) > 1
                        or wait <= 0
                        or self._closed
                    ):
                        break
                    batch.wake.wait(wait)
                else:
                    batch.wake.wait()  # for the batches ahead of this one to start
            self._batches.popleft()
            self._running += 1
            if self._batches:
                self._batches[0].wake.notify()  # the next batch is now the oldest
        try:
            self._execute(batch)
        finally:
            with self._lock:
                self._running -= 1
                if self._batches:
                    self._batches[0].wake.notify()  # a slot is free
            loops: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
            for other in batch.tasks:
                if other.ready is not None:
                    other.ready.release()
                elif other.waiter is not None:
                    loops.setdefault(other.waiter[0], []).append(other.waiter[1])
            for loop, futures in loops.items():  # one wake-up per loop, not per request
                loop.call_soon_threadsafe(_resolve, futures)
        return task.answer()

    def _execute(self, batch: _Batch) -> None:
        tasks = batch.tasks
        try:
            if self._on_batch is not None:
                self._on_batch(batch.size)
            if len(tasks) == 1 and not self._params.allowed_batch_sizes:
                tasks[0].result = self._run(tasks[0].inputs)
            else:
                self._run_merged(batch)
        except BaseException as err:  # every request in the batch gets the batch's error
            error = err if isinstance(err, ServingError) else _wrap(err)
            for task in tasks:
                task.error = error

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


def _resolve(futures: list[asyncio.Future]) -> None:
    for future in futures:
        if not future.done():  # a caller that went away cancelled its future
            future.set_result(None)


def _wrap(err: BaseException) -> Any:
    return internal(f"{type(err).__name__}: {err}")
