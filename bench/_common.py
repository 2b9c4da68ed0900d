"""Shared bits of the benchmarks: epoch timing and the digits pipeline pieces."""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def epoch_timer():
    """A Keras callback recording each epoch's wall time in ``.times`` (seconds)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._start)

    return EpochTimer()


def steady(times: list[float]) -> float:
    """Median epoch time without the first (tracing/warm-up) epoch."""
    import statistics

    return statistics.median(times[1:] if len(times) > 1 else times)
