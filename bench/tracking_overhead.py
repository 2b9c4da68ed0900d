"""Cost of MLflow tracking per epoch against a real `mlflow server` over HTTP.

Starts an `mlflow server` on 127.0.0.1 (SQLite backend in a temp folder), then in
this one process trains the digits CNN alternately with the tracker's epoch
callback (one `log_batch` call per epoch) and without it, same seed, model and
data. Prints the ratio of steady-state epoch times. Target: <= 1.03.

    .venv/bin/python bench/tracking_overhead.py [--epochs 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import epoch_timer, steady  # noqa: E402
from tests.helpers import free_port  # noqa: E402


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    import requests

    port = free_port()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if requests.get(uri + "/health", timeout=1).ok:
                return proc, uri
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("mlflow server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from pipelines import steps
    from service.config import load_config
    from service.tracking import Tracker
    from service.training.runtime import configure

    cfg = load_config(
        ROOT / "pipelines/configs/digits_cnn.yaml",
        [f"training.epochs={args.epochs}", "training.early_stopping.enabled=false"],
    )
    runtime = configure(seed=cfg.seed, precision="float32", distribution="none")
    data = steps.ingest(cfg)
    parts = steps.split(cfg, data)
    with tempfile.TemporaryDirectory() as folder:
        proc, uri = start_server(Path(folder))
        try:
            on, off = [], []
            for _ in range(args.rounds):
                tracker = Tracker.start(
                    uri=uri,
                    experiment="bench",
                    run_name=None,
                    required=True,
                    fallback_dir=Path(folder),
                )
                timer = epoch_timer()
                # The timer runs last, so it includes the tracker's log_batch call.
                steps.train(
                    cfg, data, parts, runtime=runtime, callbacks=[tracker.epoch_callback(), timer]
                )
                tracker.end()
                on.append(steady(timer.times))
                timer = epoch_timer()
                steps.train(cfg, data, parts, runtime=runtime, callbacks=[timer])
                off.append(steady(timer.times))
        finally:
            proc.terminate()
    t_on, t_off = statistics.median(on), statistics.median(off)
    print(f"digits CNN, {args.epochs} epochs x {args.rounds} rounds, MLflow server {uri}")
    print(f"{'tracking':<12}{'steady epoch (ms)':>20}")
    print(f"{'on':<12}{t_on * 1000:>20.1f}")
    print(f"{'off':<12}{t_off * 1000:>20.1f}")
    print(f"ratio on / off: {t_on / t_off:.3f}  (target <= 1.03)")


if __name__ == "__main__":
    main()
