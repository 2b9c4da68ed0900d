"""Step time of float32 vs mixed precision vs XLA, side by side in one process.

Trains the same CNN (the zoo's `resnet18` at 64x64x3 by default, synthetic data,
batch 256) under each setting and prints the median step time and the speed-up
over float32. Meant for a GPU host (mixed_float16 needs compute capability >= 7.0);
with no GPU visible it says so and measures the CPU, where mixed_float16 is
emulated and slower, so only the XLA row means much there.

    .venv/bin/python bench/gpu_precision.py [--model resnet18] [--size 64] [--steps 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def measure(model_name: str, size: int, batch: int, steps: int, precision: str, xla: bool) -> float:
    import keras
    import numpy as np

    from service import models

    keras.backend.clear_session()
    keras.mixed_precision.set_dtype_policy(precision)
    keras.utils.set_random_seed(0)
    model = models.build(model_name, input_shape=(size, size, 3), num_classes=10)
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=xla)
    x = np.random.rand(batch * 4, size, size, 3).astype("float32")
    y = np.random.randint(0, 10, batch * 4)
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # trace and compile
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x[:batch], y[:batch])
        times.append(time.perf_counter() - start)
    keras.mixed_precision.set_dtype_policy("float32")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    where = ", ".join(
        tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus
    )
    print(f"device: {where or 'no GPU visible: CPU only (mixed_float16 is emulated here)'}")
    print(
        f"model {args.model} at {args.size}x{args.size}x3, batch {args.batch}, {args.steps} steps"
    )
    settings = [
        ("float32", False),
        ("mixed_float16", False),
        ("mixed_bfloat16", False),
        ("float32", True),
        ("mixed_float16", True),
    ]
    base = None
    print(f"{'precision':<16}{'XLA':<6}{'step (ms)':>12}{'speed-up':>10}")
    for precision, xla in settings:
        t = measure(args.model, args.size, args.batch, args.steps, precision, xla)
        base = base or t
        print(f"{precision:<16}{'on' if xla else 'off':<6}{t * 1000:>12.1f}{base / t:>9.2f}x")


if __name__ == "__main__":
    main()
