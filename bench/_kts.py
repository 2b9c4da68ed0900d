"""Shared bits of the data-plane benchmarks: data layout, `kts run` configs and launches.

Generated data lives under ``/tmp/kts-bench/data`` (never in the repository); each
`kts run` gets a fresh working folder under ``/tmp/kts-bench/work`` (its
``mlflow.db``, ``runs/`` and ``serving_models/``). Subprocesses run this checkout's
code: ``PYTHONPATH`` is set to the repository root and checked before the first run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = Path("/tmp/kts-bench")
DATA = SCRATCH / "data"
WORK = SCRATCH / "work"

IMAGE_SIZE = 96
CLASSES = 4
SOURCES = ("image_dir", "tfrecord", "csv", "parquet")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def env() -> dict[str, str]:
    """The environment of every subprocess: this checkout first on the path."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *([out["PYTHONPATH"]] if out.get("PYTHONPATH") else [])]
    )
    out.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    out.pop("MLFLOW_TRACKING_URI", None)  # the default: sqlite:///mlflow.db in the cwd
    return out


def check_code_path(cwd: Path) -> None:
    """Fail unless a subprocess started like `kts run` imports this checkout's code."""
    code = (
        "import pipelines.cli, service.data.stream as s; print(pipelines.cli.__file__, s.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env(), capture_output=True, text=True, check=True
    ).stdout.split()
    wrong = [p for p in out if not Path(p).resolve().is_relative_to(ROOT)]
    if wrong:
        raise SystemExit(f"subprocesses import {wrong}, not this checkout {ROOT}")


# -------------------------------------------------------------------- data
def data_paths(source: str, *, images: int, rows: int) -> Path:
    """Where the data of ``source`` at this size lives (generated when missing)."""
    from bench import datagen

    if source == "image_dir":
        return datagen.ensure_images(
            DATA / f"images_{images}_{IMAGE_SIZE}", count=images, size=IMAGE_SIZE, classes=CLASSES
        )
    if source == "tfrecord":
        return datagen.ensure_tfrecords(
            DATA / f"tfrecord_{images}_{IMAGE_SIZE}", count=images, size=IMAGE_SIZE, classes=CLASSES
        )
    csv_path, parquet_path = datagen.ensure_table(
        DATA / f"table_{rows}", rows=rows, classes=CLASSES
    )
    return csv_path if source == "csv" else parquet_path


# ----------------------------------------------------------------- configs
def kts_config(source: str, path: Path, *, name: str, epochs: int) -> dict:
    """A `kts run` config for ``source``: small model, tracking on, reports and tuning off.

    Images: simple_cnn filters [16, 32], dense 64, batch 64; tables: mlp units
    [128, 64], batch 1024. Everything else is the default (checking pass `full`,
    early stopping on val_loss with patience 5, export, registry).
    """
    data: dict = {"source": source, "path": str(path), "label": "label"}
    if source in ("image_dir", "tfrecord"):
        data.update(image_size=[IMAGE_SIZE, IMAGE_SIZE], color_mode="rgb")
        model = {"type": "simple_cnn", "filters": [16, 32], "dense_units": 64}
        batch = 64
    else:
        model = {"type": "mlp", "units": [128, 64]}
        batch = 1024
    if source == "image_dir":
        del data["label"]
    if source == "tfrecord":
        data["feature_spec"] = {"image": {"dtype": "image"}, "label": {"dtype": "int64"}}
    return {
        "name": name,
        "seed": 42,
        "data": data,
        "model": model,
        "training": {"epochs": epochs, "batch_size": batch},
        "tracking": {"experiment": name, "reports": False},
    }


@dataclass(frozen=True)
class Launch:
    """One finished subprocess: exit code, wall time and memory."""

    rc: int
    wall_s: float
    peak_tree_rss: int  # bytes: the largest sum of RSS over the process and its children
    # bytes: the kernel's high-water RSS of the process itself (VmHWM, last read before
    # it exited). Not wait4's ru_maxrss: that counts the parent's RSS at fork.
    max_rss: int
    samples: int
    stdout: str
    stderr: str


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _hwm(pid: int) -> int:
    """VmHWM of ``pid`` in bytes (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def launch(cmd: list[str], *, cwd: Path, interval: float = 0.1) -> Launch:
    """Run ``cmd`` to the end, sampling the RSS of its process tree and the process's
    VmHWM every ``interval`` s."""
    cwd.mkdir(parents=True, exist_ok=True)
    out_path, err_path = cwd / "stdout.txt", cwd / "stderr.txt"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=out, stderr=err)
        peak, hwm, samples = 0, 0, 0
        while True:
            # Sampled before reaping: a reaped process's /proc entry is gone.
            peak = max(peak, _tree_rss(proc.pid))
            hwm = max(hwm, _hwm(proc.pid))
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                break
            samples += 1
            time.sleep(interval)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Launch(
        proc.returncode,
        wall,
        peak,
        hwm,
        samples,
        out_path.read_text(),
        err_path.read_text(),
    )


def run_kts(config: dict, *, label: str) -> tuple[Launch, Path]:
    """`kts run` of ``config`` in a fresh working folder ``WORK/label``; returns the launch
    and the run folder (``runs/<name>``). A failed run stops the benchmark."""
    cwd = WORK / label
    shutil.rmtree(cwd, ignore_errors=True)
    cwd.mkdir(parents=True)
    config_path = cwd / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "pipelines.cli", "run", str(config_path)]
    cmd += ["--output-json", str(cwd / "summary.json")]
    got = launch(cmd, cwd=cwd)
    if got.rc != 0:
        raise SystemExit(f"kts run {label} failed (exit {got.rc}):\n{got.stderr[-3000:]}")
    return got, cwd / "runs" / config["name"]


def epochs(run_dir: Path) -> list[dict[str, float]]:
    """The per-epoch metrics a run journaled (``epochs.jsonl``), in epoch order."""
    lines = (run_dir / "epochs.jsonl").read_text().splitlines()
    entries = sorted((json.loads(line) for line in lines if line.strip()), key=lambda e: e["step"])
    return [e["metrics"] for e in entries]


def gb(n: float) -> str:
    """Bytes as GB (10^9) with GiB in brackets."""
    return f"{n / 1e9:.2f} GB ({n / 2**30:.2f} GiB)"
