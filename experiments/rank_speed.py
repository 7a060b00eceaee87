"""Seconds per image of each distortion type and level, and what a Waterloo-sized rank set costs.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nice -n 15 .venv/bin/python -m experiments.rank_speed \\
        [--image PATH] [--size 512x384] [--repeats 3] [--out results/rank_speed]

What one ``make ranks`` task does, on one core: ``distortions.distort`` of one pristine image at one level
and its PNG encoding (``make_ranks._encode_png``), timed in CPU seconds of this one-threaded process
(``time.process_time``; wall seconds, ``time.perf_counter``, are recorded too); the median of
``--repeats`` runs (ID, minutes per level, runs once). The image is a ``--size`` centre crop of ``--image``
(default: scikit-image's ``coffee.png``, 600x400). The projection multiplies the mean seconds of each type
(CPU) over its levels by the levels and the references (``--references``, default the Waterloo Exploration
database's 4,744), and the disk by the measured PNG sizes (the pristine copy included). Writes
``<out>/rank_speed.md`` and ``rank_speed.json``; the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from data_prep import distortions, make_ranks, pristine
from rankiqa.errors import InputError, cli_main
from rankiqa.fsutil import atomic_write_text

WATERLOO_REFERENCES = 4744
#: Types whose levels take minutes each: timed once.
SLOW_TYPES = ("ID",)


def crop_image(path: str | None, width: int, height: int) -> np.ndarray:
    """A ``width`` x ``height`` centre crop (BGR uint8) of ``path`` (default scikit-image's coffee.png)."""
    source = Path(path) if path else pristine.skimage_data_dir() / "coffee.png"
    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError("cannot read the image", source)
    rows, cols = image.shape[:2]
    if rows < height or cols < width:
        raise InputError(f"image is {cols}x{rows}, smaller than the {width}x{height} crop", source)
    top, left = (rows - height) // 2, (cols - width) // 2
    return np.ascontiguousarray(image[top:top + height, left:left + width])


def measure(image: np.ndarray, rankset: str, repeats: int) -> dict[str, list[dict[str, float]]]:
    """Per type, per level 1..L, of distort + encode: ``{"seconds": median CPU seconds of this process,
    "wall_seconds": median wall seconds, "runs": n, "png_bytes": size}``.

    CPU time is what a core spends on the image whatever else runs on the machine; with one thread (OpenCV
    and BLAS limited to one, bm3d run single-threaded) it is the task's core time.
    """
    n_levels = distortions.levels(rankset)
    table: dict[str, list[dict[str, float]]] = {}
    for dtype in distortions.RANKSETS[rankset]:
        table[dtype] = []
        for level in range(1, n_levels + 1):
            seed = make_ranks.image_seed(0, "speed", dtype, level)
            walls, cpus, size = [], [], 0
            for _ in range(1 if dtype in SLOW_TYPES else repeats):
                wall, cpu = time.perf_counter(), time.process_time()
                size = len(make_ranks._encode_png(distortions.distort(image, rankset, dtype, level, seed)))
                cpus.append(time.process_time() - cpu)
                walls.append(time.perf_counter() - wall)
            table[dtype].append({"seconds": statistics.median(cpus), "wall_seconds": statistics.median(walls),
                                 "runs": len(cpus), "png_bytes": size})
            entry = table[dtype][-1]
            print(f"{dtype}{level}: {entry['seconds']:.3f} s CPU, {entry['wall_seconds']:.3f} s wall, "
                  f"{size} B", file=sys.stderr)
    return table


def projection(table: dict[str, list[dict[str, float]]], pristine_bytes: int, references: int,
               types: Sequence[str]) -> dict[str, float]:
    """Core-hours and disk (GB: 1e9 bytes) of ``references`` images x ``types`` x every level of ``table``."""
    seconds = sum(level["seconds"] for dtype in types for level in table[dtype])
    disk = sum(level["png_bytes"] for dtype in types for level in table[dtype]) + pristine_bytes
    return {"images": references * sum(len(table[dtype]) for dtype in types),
            "core_hours": seconds * references / 3600, "disk_gb": disk * references / 1e9}


def markdown(result: dict) -> str:
    """The README table of ``result`` (what :func:`main` writes to ``rank_speed.json``): CPU seconds per
    level, their mean, the mean wall seconds, the mean PNG size; then the projections."""
    table = result["table"]
    n_levels = len(next(iter(table.values())))
    head = " | ".join(f"level {k}" for k in range(1, n_levels + 1))
    lines = [f"| type | {head} | mean | mean wall | PNG per level (KiB, mean) |",
             "|---" * (n_levels + 4) + "|"]
    for dtype, levels in table.items():
        cells = " | ".join(f"{level['seconds']:.3g}" for level in levels)
        mean_s = statistics.mean(level["seconds"] for level in levels)
        mean_wall = statistics.mean(level["wall_seconds"] for level in levels)
        mean_kib = statistics.mean(level["png_bytes"] for level in levels) / 1024
        lines.append(f"| {dtype} | {cells} | {mean_s:.3g} | {mean_wall:.3g} | {mean_kib:.0f} |")
    lines.append("")
    for name, proj in result["projections"].items():
        lines.append(f"- {name}: {proj['images']:,} images, {proj['core_hours']:.0f} core-hours, "
                     f"{proj['disk_gb']:.0f} GB of PNG files")
    return "\n".join(lines) + "\n"


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.rank_speed",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--image", default=None, help="image to crop (default scikit-image's coffee.png)")
    parser.add_argument("--size", default="512x384", help="crop WIDTHxHEIGHT (default 512x384)")
    parser.add_argument("--rankset", choices=sorted(distortions.RANKSETS), default="tid2013")
    parser.add_argument("--repeats", type=int, default=3, help="runs per type and level (ID: 1)")
    parser.add_argument("--references", type=int, default=WATERLOO_REFERENCES)
    parser.add_argument("--out", default="results/rank_speed")
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise InputError(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 512x384") from None
    cv2.setNumThreads(1)  # one core, as a worker of make ranks
    image = crop_image(args.image, width, height)
    load_before = os.getloadavg()
    table = measure(image, args.rankset, args.repeats)
    load_after = os.getloadavg()
    pristine_bytes = len(make_ranks._encode_png(image))
    sets = {"all folders": list(table), "listed (default)": list(distortions.LISTED_TYPES[args.rankset])}
    sets["listed without the slow ones"] = [t for t in sets["listed (default)"] if t not in SLOW_TYPES]
    result = {"image": args.image or "skimage coffee.png", "size": [width, height], "rankset": args.rankset,
              "repeats": args.repeats, "load_before": load_before, "load_after": load_after,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
              "pristine_png_bytes": pristine_bytes, "table": table,
              "projections": {f"{name} ({len(types)} types)":
                              projection(table, pristine_bytes, args.references, types)
                              for name, types in sets.items()}}
    out = Path(args.out)
    atomic_write_text(out / "rank_speed.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(out / "rank_speed.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
