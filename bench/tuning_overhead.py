"""What a search costs beyond its trials' training, and Hyperband against random search.

(a) Overhead: a random search on the digits CNN (`pipelines/configs/digits_cnn.yaml`,
    its own search space) tracked in a real `mlflow server` over HTTP (SQLite
    backend in a temp folder), each trial a child run. Prints the search's wall
    time (tuner set-up, building, tracking, checkpoints, the summary and picture
    included; importing keras_tuner, a one-off like TensorFlow's, is not) divided
    by the sum of its trials' own `model.fit` calls (each whole call: Keras' set-up,
    tracing, the epochs, callbacks such as the trial's checkpoint and epoch
    logging). Trials as in the default
    pipeline: up to 12 epochs, early stopping on. Target: <= 1.10.
(b) Hyperband against random search on the same space (learning rate over two
    decades, filters, dropout, schedule), untracked, early stopping off, trials in
    the order they ran: how many trials, and how many epochs of training in all,
    until a trial first reaches `--target` validation accuracy.

    .venv/bin/python bench/tuning_overhead.py [--trials 4] [--epochs 12] [--max-epochs 9]
        [--random-trials 8] [--target 0.97] [--skip-overhead] [--skip-compare]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import bench._common  # noqa: E402, F401  (quiet TensorFlow)
from bench.tracking_overhead import start_server  # noqa: E402

CONFIG = ROOT / "pipelines/configs/digits_cnn.yaml"


def time_fits() -> list[float]:
    """Record the wall time of every `keras.Model.fit` call from now on (seconds)."""
    import keras

    times: list[float] = []
    fit = keras.Model.fit

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fit(self, *args, **kwargs)
        finally:
            times.append(time.perf_counter() - start)

    keras.Model.fit = timed
    return times


def overhead(args: argparse.Namespace, folder: Path) -> None:
    from pipelines import steps
    from service.config import load_config
    from service.tracking import Tracker
    from service.training.runtime import configure
    from tuning.search import run_search

    cfg = load_config(
        CONFIG,
        [
            f"work_dir={folder / 'runs'}",
            f"tuning.max_trials={args.trials}",
            f"tuning.epochs={args.epochs}",
        ],
    )
    configure(seed=cfg.seed, precision="float32", distribution="none")
    data = steps.ingest(cfg)
    parts = steps.split(cfg, data)
    folder.mkdir(parents=True, exist_ok=True)
    proc, uri = start_server(folder)
    try:
        tracker = Tracker.start(
            uri=uri, experiment="bench-tuning", run_name=None, required=True, fallback_dir=folder
        )
        import keras_tuner  # noqa: F401  (a one-off import, like TensorFlow's: not timed)

        fits = time_fits()
        start = time.perf_counter()
        result = run_search(cfg, data, parts.split, build_model=steps.build_model, tracker=tracker)
        wall = time.perf_counter() - start
        tracker.end()
    finally:
        proc.terminate()
    epochs = sum(_epochs_run(Path(result.directory), r["trial_id"]) for r in result.trials)
    print(
        f"(a) digits CNN, random search, {len(result.trials)} trials x <= {args.epochs} epochs "
        f"({epochs} epochs run, early stopping on), MLflow server {uri}"
    )
    print(f"{'search wall time (s)':<34}{wall:>10.1f}")
    print(f"{'sum of trial fit times (s)':<34}{sum(fits):>10.1f}   ({len(fits)} fits)")
    print(f"{'overhead per trial (s)':<34}{(wall - sum(fits)) / max(len(fits), 1):>10.2f}")
    print(f"ratio search / fits: {wall / sum(fits):.3f}  (target <= 1.10)")


def _epochs_run(directory: Path, trial_id: str) -> int:
    """Epochs a trial actually trained (its fits' history lengths)."""
    paths = list(directory.glob(f"search-*/trial_{trial_id}/kts_history.json"))
    if not paths:
        return 0
    histories = json.loads(paths[0].read_text())["histories"]
    return sum(len(h.get("loss", [])) for h in histories)


def compare(args: argparse.Namespace, folder: Path) -> None:
    from pipelines import steps
    from service.config import load_config
    from service.training.runtime import configure
    from tuning.search import run_search

    space = json.dumps(
        {
            "model.filters": {"type": "choice", "values": [[8, 16], [16, 32], [32, 64]]},
            "model.dropout": {"type": "choice", "values": [0.0, 0.25, 0.5]},
            "training.optimizer.learning_rate": {
                "type": "float",
                "min": 0.0001,
                "max": 0.01,
                "sampling": "log",
            },
            "training.schedule.type": {"type": "choice", "values": ["constant", "cosine"]},
        }
    )
    print(
        f"(b) digits CNN, early stopping off, target val_accuracy >= {args.target}; "
        f"random: {args.random_trials} trials x {args.max_epochs} epochs; "
        f"hyperband: max_epochs {args.max_epochs}, factor 3"
    )
    print(
        f"{'tuner':<11}{'trials to target':>17}{'epochs to target':>18}"
        f"{'trials':>8}{'epochs':>8}{'best':>8}{'wall (s)':>10}"
    )
    for tuner in ("random", "hyperband"):
        cfg = load_config(
            CONFIG,
            [
                f"work_dir={folder / tuner}",
                f"tuning.tuner={tuner}",
                f"tuning.space={space}",
                f"tuning.max_trials={args.random_trials}",
                f"tuning.epochs={args.max_epochs}",
                f"training.epochs={args.max_epochs}",
                "tuning.hyperband_factor=3",
                "tuning.early_stopping=false",
            ],
        )
        configure(seed=cfg.seed, precision="float32", distribution="none")
        data = steps.ingest(cfg)
        parts = steps.split(cfg, data)
        start = time.perf_counter()
        result = run_search(cfg, data, parts.split, build_model=steps.build_model)
        wall = time.perf_counter() - start
        directory = Path(result.directory)
        total, reached = 0, None
        for n, row in enumerate(sorted(result.trials, key=lambda r: r["trial_id"]), start=1):
            total += _epochs_run(directory, row["trial_id"])
            if reached is None and row["score"] is not None and row["score"] >= args.target:
                reached = (n, total)
        to_target: Any = reached or ("not reached", "-")
        print(
            f"{tuner:<11}{to_target[0]!s:>17}{to_target[1]!s:>18}{len(result.trials):>8}"
            f"{total:>8}{result.best_score or float('nan'):>8.4f}{wall:>10.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=4, help="(a) trials")
    parser.add_argument("--epochs", type=int, default=12, help="(a) epochs per trial at most")
    parser.add_argument("--max-epochs", type=int, default=9, help="(b) Hyperband max_epochs")
    parser.add_argument("--random-trials", type=int, default=8, help="(b) random trials")
    parser.add_argument("--target", type=float, default=0.97, help="(b) val_accuracy to reach")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-compare", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if not args.skip_overhead:
            overhead(args, Path(folder) / "overhead")
        if not args.skip_compare:
            compare(args, Path(folder) / "compare")


if __name__ == "__main__":
    main()
