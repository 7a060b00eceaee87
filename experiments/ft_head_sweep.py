"""The fine-tuning sweep behind README's "Fine-tuning: head start and label scale" table.

    python -m experiments.ft_head_sweep --rank-model runs/demo/<...>/rank/snapshots/rank_iter_N.caffemodel \\
        --lists data/demo/<...>/ft/synthetic/split0 --out data/ft_sweep [--iters 100] [--lr 3e-6]

The demo's stand-in lists (MS-SSIM in [0, 1]) are mapped onto the real datasets' label ranges (x1: CSIQ's DMOS
0-1; x9: TID2013's MOS 0-9; x100: LIVE's DMOS 0-100; x4 + 1: KADID-10k's MOS 1-5), and the Shallow net is
fine-tuned from the ranking model (RankIQA+FT) and from scratch with each head start and loss scale of
``rankiqa.head_init``; the driver's test pass (one crop per image, pooled over the test list) gives SROCC/PLCC
at iteration 0 and at the end.
A rescaled label is an affine map of the original one, so SROCC and PLCC are comparable across
rows: what changes is only how the training reacts to the scale. Writes ``<out>/sweep.md`` and
``sweep.json``; finished runs are reused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from rankiqa.errors import cli_main
from rankiqa.fsutil import atomic_write_text
from rankiqa.lists import read_list, write_list
from rankiqa.logparse import parse_log
from rankiqa.paths import REPO_ROOT

#: ``--scales`` name -> (scale, offset, row label): a stand-in label y becomes scale * y + offset.
SCALES = {"1": (1.0, 0.0, "x1 (CSIQ-like DMOS 0-1)"), "9": (9.0, 0.0, "x9 (TID2013-like MOS 0-9)"),
          "100": (100.0, 0.0, "x100 (LIVE-like DMOS 0-100)"),
          "4+1": (4.0, 1.0, "x4 + 1 (KADID-10k-like MOS 1-5)")}
CONFIGS = (("filler", "none"), ("mean", "none"), ("linear", "std"), ("calibrate", "none"),
           ("calibrate", "std"))
#: The from-scratch baseline is run for the original's start and for the default of the Shallow net only.
SCRATCH_CONFIGS = (("filler", "none"), ("calibrate", "std"))


def scaled_lists(lists: Path, out: Path, key: str) -> Path:
    """``train.txt``/``test.txt`` of ``lists`` with every score mapped by ``SCALES[key]``."""
    scale, offset, _ = SCALES[key]
    folder = out / f"lists_x{key}"
    for name in ("train.txt", "test.txt"):
        write_list(folder / name, [(path, score * scale + offset) for path, score in read_list(lists / name)])
    return folder


def run(name: str, lists: Path, out: Path, init: list[str], head: str, loss: str, iters: int,
        lr: float) -> dict[str, float]:
    """One fine-tuning run (reused when finished); its first and last test pass."""
    run_dir = out / name
    done = any((run_dir / "snapshots").glob(f"*_iter_{iters}.caffemodel"))
    if not done:
        subprocess.run([sys.executable, "-m", "tools.train", "finetune", "--dataset", "synthetic", "--net",
                        "shallow", "--lists", str(lists), "--out", str(run_dir), "--gpu", "-1", "--seed", "0",
                        "--iters", str(iters), "--lr", repr(lr), "--snapshot", str(iters), "--test-interval",
                        str(iters), "--batch", "30", "--head-init", head, "--loss-scale", loss, *init],
                       cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    table = parse_log(run_dir / "log.txt")
    its, srocc = table.series("test_srocc")
    _, plcc = table.series("test_plcc")
    return {"srocc_0": srocc[0], "plcc_0": plcc[0], "srocc_end": srocc[-1], "plcc_end": plcc[-1],
            "iters": its[-1]}


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank-model", type=Path, required=True)
    parser.add_argument("--lists", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-6)
    parser.add_argument("--scales", default=",".join(SCALES),
                        help=f"label maps to run (default all: {','.join(SCALES)})")
    parser.add_argument("--configs", default=",".join(f"{h}:{loss}" for h, loss in CONFIGS),
                        help="head_init:loss_scale pairs to run (default all)")
    args = parser.parse_args(argv)
    scales = args.scales.split(",")
    unknown = [key for key in scales if key not in SCALES]
    if unknown:
        parser.error(f"unknown label map(s) {', '.join(unknown)}: choose from {', '.join(SCALES)}")
    configs = [tuple(pair.split(":")) for pair in args.configs.split(",")]
    rows = []
    for key in scales:
        label = SCALES[key][2]
        lists = scaled_lists(args.lists, args.out, key)
        for head, loss in configs:
            inits = [("RankIQA+FT", ["--rank-model", str(args.rank_model)])]
            if (head, loss) in SCRATCH_CONFIGS:
                inits.append(("FT from scratch", ["--from-scratch"]))
            for init_name, init in inits:
                name = f"x{key}_{head}_{loss}_{'rank' if init_name == 'RankIQA+FT' else 'scratch'}"
                result = run(name, lists, args.out, init, head, loss, args.iters, args.lr)
                rows.append({"labels": label, "head_init": head, "loss_scale": loss, "model": init_name,
                             **result})
                print(json.dumps(rows[-1]), flush=True)
    lines = [f"| labels | head start | loss scale | model | SROCC it 0 -> {args.iters} | "
             f"PLCC it 0 -> {args.iters} |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['labels']} | {r['head_init']} | {r['loss_scale']} | {r['model']} | "
                     f"{r['srocc_0']:.3f} -> {r['srocc_end']:.3f} | "
                     f"{r['plcc_0']:.3f} -> {r['plcc_end']:.3f} |")
    atomic_write_text(args.out / "sweep.md", "\n".join(lines) + "\n")
    atomic_write_text(args.out / "sweep.json", json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
