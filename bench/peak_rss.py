"""Peak memory of one `kts run` epoch per file source, at full and at a quarter size.

For each source (image_dir, tfrecord, csv, parquet) this runs `kts run` as a
subprocess for ONE epoch, at the full size and at a quarter of it, and samples the
RSS of the whole process tree every 0.1 s (psutil); it also reads the kernel's
high-water RSS (``VmHWM``) of the `kts` process, read at each sample, which catches
peaks between samples (not wait4's ru_maxrss: it counts the parent's RSS at fork).
MLflow tracking is on (``sqlite:///mlflow.db`` in a fresh working folder per run),
reports and tuning are off, everything else is the default (checking pass
``validate: full``, export, registry).

Sizes: 24,000 RGB PNGs 96x96 in 4 class folders (16 TFRecord shards of the same
PNGs) and a 4,000,000 x 50 float32 table (+ label; CSV and Parquet, 100,000-row
row groups); the quarter is 6,000 images / 1,000,000 rows, generated the same way
(`bench/datagen.py`, under /tmp/kts-bench/data, reused when present).
Models: simple_cnn filters [16, 32], dense 64, batch 64 (images); mlp units
[128, 64], batch 1024 (tables); adam 1e-3.

Targets (issue 14): full-size peak RSS < 2.0 GB; the quarter within 25% of the
full size (``ratio rss_<source>_quarter_over_full`` >= 0.75).

    .venv/bin/python bench/peak_rss.py \
        [--sources image_dir,tfrecord,csv,parquet] [--images 24000] [--rows 4000000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._kts import (  # noqa: E402
    SOURCES,
    WORK,
    Launch,
    check_code_path,
    data_paths,
    epochs,
    gb,
    kts_config,
    run_kts,
)

TARGET_BYTES = 2.0e9
TARGET_FLAT = 0.75


def peak(got: Launch) -> int:
    """The larger of the sampled process-tree peak and the kernel's high-water mark."""
    return max(got.peak_tree_rss, got.max_rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", default=",".join(SOURCES))
    parser.add_argument("--images", type=int, default=24_000, help="full-size image count")
    parser.add_argument("--rows", type=int, default=4_000_000, help="full-size table rows")
    args = parser.parse_args()
    sources = args.sources.split(",")
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        parser.error(f"--sources: received {unknown}; expected some of {list(SOURCES)}")
    WORK.mkdir(parents=True, exist_ok=True)
    check_code_path(WORK)

    results: dict[str, dict[str, Launch]] = {}
    for source in sources:
        for size, scale in (("full", 1), ("quarter", 4)):
            images, rows = args.images // scale, args.rows // scale
            path = data_paths(source, images=images, rows=rows)
            count = f"{images} images" if source in ("image_dir", "tfrecord") else f"{rows} rows"
            name = f"rss_{source}_{size}"
            got, run_dir = run_kts(kts_config(source, path, name=name, epochs=1), label=name)
            epoch = epochs(run_dir)[0]
            results.setdefault(source, {})[size] = got
            print(
                f"{source:<10}{size:<8}{count:>16}: peak tree RSS {gb(got.peak_tree_rss)}, "
                f"VmHWM {gb(got.max_rss)}, wall {got.wall_s:.0f} s, "
                f"epoch {epoch['epoch_time_s']:.0f} s, {epoch['train_rows_per_s']:.0f} train rows/s",
                flush=True,
            )

    print()
    print(f"{'source':<10}{'peak RSS full':>26}{'peak RSS quarter':>26}{'quarter/full':>14}")
    for source, got in results.items():
        full, quarter = peak(got["full"]), peak(got["quarter"])
        print(f"{source:<10}{gb(full):>26}{gb(quarter):>26}{quarter / full:>14.3f}")
    print(f"targets: full < {TARGET_BYTES / 1e9:.1f} GB; quarter/full >= {TARGET_FLAT}")
    for source, got in results.items():
        print(
            f"ratio rss_{source}_quarter_over_full: {peak(got['quarter']) / peak(got['full']):.3f}"
        )


if __name__ == "__main__":
    main()
