"""Pipeline training throughput vs a plain `model.fit` on the same model and data.

Both sides run in this one process, alternating, on the digits CNN with the same
batch size and epochs: the pipeline's `steps.train` (tf.data input, callbacks,
preprocessing inside the model) against `model.fit` on in-memory NumPy arrays of
an identical freshly built model. Prints the ratio of steady-state epoch times
(median, first epoch dropped). Target: <= 1.05.

    .venv/bin/python bench/train_overhead.py [--epochs 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import epoch_timer, steady  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from pipelines import steps
    from service.config import load_config
    from service.training import trainer
    from service.training.runtime import configure

    cfg = load_config(
        Path(__file__).resolve().parent.parent / "pipelines/configs/digits_cnn.yaml",
        [f"training.epochs={args.epochs}", "training.early_stopping.enabled=false"],
    )
    runtime = configure(seed=cfg.seed, precision="float32", distribution="none")
    data = steps.ingest(cfg)
    parts = steps.split(cfg, data)
    tr, va = parts.split.train, parts.split.validation
    bs = cfg.training.batch_size

    pipeline_times, plain_times = [], []
    for _ in range(args.rounds):
        timer = epoch_timer()
        steps.train(cfg, data, parts, runtime=runtime, callbacks=[timer])
        pipeline_times.append(steady(timer.times))

        runtime.reseed()
        model = steps.build_model(cfg, data, tr)
        trainer.compile_model(model, cfg.training, data.task, steps_per_epoch=-(-len(tr) // bs))
        timer = epoch_timer()
        model.fit(
            data.x[tr],
            data.y[tr],
            batch_size=bs,
            epochs=args.epochs,
            validation_data=(data.x[va], data.y[va]),
            callbacks=[timer],
            verbose=0,
        )
        plain_times.append(steady(timer.times))

    pipe, plain = statistics.median(pipeline_times), statistics.median(plain_times)
    print(
        f"digits CNN, batch {bs}, {len(tr)} train rows, {args.epochs} epochs x {args.rounds} rounds"
    )
    print(f"{'side':<28}{'steady epoch (ms)':>20}")
    print(f"{'pipeline steps.train':<28}{pipe * 1000:>20.1f}")
    print(f"{'plain model.fit (NumPy)':<28}{plain * 1000:>20.1f}")
    print(f"ratio pipeline / plain: {pipe / plain:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
