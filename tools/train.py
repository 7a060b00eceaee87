"""Train RankIQA nets in Caffe from Python: Siamese ranking (``rank``), regression fine-tuning (``finetune``).

``python -m tools.train rank --rankset tid2013 --net shallow --data data/ranks/tid2013 --out runs/rank_x``
``python -m tools.train finetune --dataset tid2013 --net shallow --lists data/ft/tid2013/split0 --out runs/f``
``python -m tools.train rank --rankset tid2013 --net shallow --online --pristine DIR --out runs/rank_y``: the
batches made from the pristine images while training (``pylayers/online_source.py``), no rank set on disk.

The driver never edits ``prototxts/``: it copies the chosen train net and solver into the run folder with the
overrides applied through ``caffe_pb2`` (``train.prototxt``, ``solver.prototxt``), then steps the solver from
Python (so the Python layers run), writing ``log.txt``, ``loss.csv``, ``loss.png``, ``run.json`` and
``snapshots/<run>_iter_<N>.caffemodel|.solverstate`` under ``runs/<name>/``.

Faithful choices and the rules this driver adds (also in ``--help``):

* Solvers: ``prototxts/solvers/rank_<rankset>.prototxt`` and ``ft_<style>.prototxt``. The fine-tuning *style*
  of each dataset (``rankiqa.registry``) picks the solver, the net and the ranking set of the default ranking
  model: tid2013, kadid, synthetic -> tid2013; live, csiq -> live.
* TID2013-style fine-tuning uses ``ft_tid2013_train.prototxt`` (fc6_m/fc7_m: only the convolutions transfer)
  when the net has one, else ``ft_train.prototxt``; LIVE-style uses ``ft_train.prototxt`` (fc6/fc7 transfer).
* Weights (``--weights``, ``--rank-model``) are copied by layer name; the driver first checks every matching
  layer's blob count and shapes and names the first mismatching layer (Caffe itself would abort the process).
* Initialisation: VGG-16 ranking starts from ImageNet VGG-16 weights, as the paper; a new ``vgg16`` ranking
  run without ``--weights`` is refused, ``--weights none`` starts from random initialisation on purpose.
  ``run.json`` records the start (``initialisation``; a fine-tuning run also its ranking run's), and
  ``tools/evaluate.py`` reports it.
* Default ``--rank-model``: among the sibling folders of ``--out`` whose ``run.json`` says ``kind: rank`` with
  the same rank set and net, the run whose newest snapshot is the most recent file; from it, the
  ``.caffemodel`` of the original's iteration (TID2013 50k, LIVE 20k) when it exists, else the one with the
  highest iteration.
* A run folder belongs to one configuration (``run.json``: rank set or dataset, net, data or lists,
  direction, batch make-up and size, seed, initialisation): a rerun with another is refused rather than
  resumed. The learning rate and the iteration count may change on a rerun (a second phase at a lower
  rate, more iterations), except that a fine-tuning run keeps the rate its head-step bound set.
* Resume: ``--resume X.solverstate`` restores weights, momentum history and the iteration counter; without it
  a rerun of the same command continues from the highest-iteration valid ``.solverstate`` in
  ``<out>/snapshots/`` (delete the run folder to start over). Ctrl-C finishes the current iteration, writes a
  snapshot and exits with status 130. A diverged loss or a failed GPU process exits with status 3.
* Disk space: Caffe writes each snapshot into ``snapshots/.partial/`` and the driver moves the finished pair
  into ``snapshots/``, logging it as the last good snapshot. The free space for one snapshot (from the net's
  parameter count) is checked before training and before each snapshot; without it the run stops with exit
  status 2, naming the space needed and the snapshot a rerun resumes from.
* Testing: Caffe's own testing is switched off in the written solver (``test_interval`` beyond any run) and
  the driver runs the test net itself every ``--test-interval`` iterations, so that SROCC/PLCC can be pooled
  over the whole test list (not averaged per batch) and written to ``loss.csv``.
* GPU: ``--gpu auto`` (default) uses GPU 0 when the Caffe build and the machine have one, else the CPU;
  ``--gpu -1`` forces the CPU. ``--gpus 0,1`` trains on several GPUs with NCCL (one process per GPU, each data
  layer reading a disjoint share of batches: ``shard_index`` = the process's index, ``shard_count`` =
  ``len(gpus)``); the batch flags are per GPU, so the effective batch is ``len(gpus)`` times larger.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from rankiqa import head_init
from rankiqa.errors import InputError, cli_main
from rankiqa.paths import PROTOTXT_DIR
from rankiqa.registry import DATASETS, NETS, RANKSETS
from rankiqa.runconfig import DEFAULT_RANK_TEST_ITERS, DISPLAY_EVERY, FT_HEAD_DEFAULTS, RunConfig
from rankiqa.runprep import prepare_finetune, prepare_rank
from rankiqa.snapshots import snapshots
from rankiqa.trainer import train_multi_gpu, train_process


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--net", choices=NETS, required=True, help="vgg16 (224 crops) or shallow (227, CPU)")
    parser.add_argument("--out", type=Path, required=True, help="run folder, e.g. runs/<name>")
    parser.add_argument("--iters", type=int, help="max_iter (default: the solver's)")
    parser.add_argument("--skip-layers", default="",
                        help="comma-separated layers of the initial weights not to copy (e.g. fc8 of "
                             "ImageNet VGG-16 for the ImageNet-VGG fine-tuned baseline)")
    parser.add_argument("--lr", type=float,
                        help="base_lr (default: the solver's for vgg16; SHALLOW_DEFAULT_LR for shallow)")
    parser.add_argument("--snapshot", type=int, help="snapshot every N iterations (default: the solver's)")
    parser.add_argument("--test-interval", type=int,
                        help="test every N iterations, 0 = never (default: the solver's)")
    parser.add_argument("--test-iters", type=int,
                        help="test batches per test (default: the whole test list for fine-tuning, "
                             f"{DEFAULT_RANK_TEST_ITERS} for ranking)")
    parser.add_argument("--gpu", default="auto", help="auto (GPU 0 if usable, else CPU), -1 (CPU) or an id")
    parser.add_argument("--gpus", help="several GPUs with NCCL, e.g. 0,1 (batch flags are per GPU)")
    parser.add_argument("--resume", type=Path, help="a .solverstate (default: the latest one in the run)")
    parser.add_argument("--seed", type=int, default=0, help="solver and data seed (default 0)")
    parser.add_argument("--display", type=int, default=DISPLAY_EVERY,
                        help=f"log the mean training loss every N iterations (default {DISPLAY_EVERY})")
    parser.add_argument("--workers", type=int, help="data loader processes per data layer (default: the "
                                                     "prototxt's)")
    parser.add_argument("--prototxts", type=Path, default=PROTOTXT_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--train-prototxt", type=Path, help="another train net (e.g. the pair baseline)")
    parser.add_argument("--solver-prototxt", type=Path, help="another solver")


def build_parser() -> argparse.ArgumentParser:
    """The ``rank`` / ``finetune`` command line."""
    parser = argparse.ArgumentParser(prog="python -m tools.train", description=__doc__.split("\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rank = sub.add_parser("rank", help="Siamese ranking training on a `make ranks` set")
    rank.add_argument("--rankset", choices=RANKSETS, required=True, help="solver and batch style")
    rank.add_argument("--data", type=Path, help="data/ranks/<set> (manifest.csv); or --online")
    _common_flags(rank)
    online = rank.add_argument_group("online ranked batches (pylayers/online_source.py)")
    online.add_argument("--online", action="store_true",
                        help="make the batches from the pristine images inside the prefetch workers, with no "
                             "rank set on disk (the same images as `make ranks` with the same --seed)")
    online.add_argument("--pristine", help="folder of pristine images, or 'default' (the default)")
    online.add_argument("--types", help="comma-separated types, or 'all' (default: the original's); with "
                                        "--data: the types the rank set must hold (checked)")
    online.add_argument("--precomputed", type=Path,
                        help="a `make ranks` folder holding the types too slow to make online (ID); "
                             "without it they are left out")
    online.add_argument("--offline-types",
                        help="comma-separated types not made online (default ID), read from --precomputed "
                             "or left out; 'none' makes every type online")
    rank.add_argument("--types-per-batch", type=int, help="distortion types per batch (tid2013: 9, live: 4)")
    rank.add_argument("--images-per-group", type=int, help="images per group (tid2013: 1, live: 2)")
    rank.add_argument("--weights", type=Path,
                      help="initial weights by layer name: ImageNet VGG-16 (VGG_ILSVRC_16_layers.caffemodel, "
                           "as the paper; required for a new vgg16 run), or 'none' for random initialisation")
    rank.add_argument("--aligned-crops", action="store_true",
                      help="one crop window for all levels of a reference in a group (default: one per "
                           "image, as the original)")
    rank.add_argument("--mixed-references", action="store_true",
                      help="each group of a batch from another reference (default: one reference per batch, "
                           "as the original)")
    rank.add_argument("--direction", choices=("quality", "dmos"), default="quality",
                      help="quality: less distorted = higher output (default); dmos: the original LIVE one")
    ft = sub.add_parser("finetune", help="regression fine-tuning on IQA lists")
    ft.add_argument("--dataset", choices=DATASETS, required=True)
    ft.add_argument("--lists", type=Path, required=True,
                    help="data/ft/<dataset>/split<k> (train.txt, test.txt)")
    _common_flags(ft)
    init = ft.add_mutually_exclusive_group()
    init.add_argument("--rank-model", type=Path, help="ranking .caffemodel (default: the latest, see below)")
    init.add_argument("--weights", dest="rank_model", type=Path, help="alias of --rank-model (e.g. ImageNet)")
    init.add_argument("--from-scratch", action="store_true", help="no ranking initialisation (baseline)")
    ft.add_argument("--rankset", choices=RANKSETS, help="ranking set of the default --rank-model "
                                                         "(default: the dataset's style)")
    ft.add_argument("--batch", type=int, help="training batch size (default: the prototxt's, 30)")
    ft.add_argument("--head-init", choices=head_init.HEAD_INITS,
                    help="start of the new head: " + ", ".join(head_init.HEAD_INITS)
                         + " (rankiqa/head_init.py describes each; filler is the original's); default per "
                         "net: " + ", ".join(f"{n} {d[0]}" for n, d in FT_HEAD_DEFAULTS.items()))
    ft.add_argument("--loss-scale", choices=head_init.LOSS_SCALES,
                    help="none: Euclidean loss on raw labels (the original); std: divided by the training "
                         "labels' variance; default per net: "
                         + ", ".join(f"{n} {d[1]}" for n, d in FT_HEAD_DEFAULTS.items()))
    return parser


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet: what a run creates."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _remove_if_untrained(created: Path | None, snapshot_dir: Path) -> None:
    """A run folder this command created and that holds no snapshot is removed when the command fails, so a
    refused or crashed start leaves nothing behind (a folder that was there before is never touched)."""
    if created is None or not created.exists() or any(snapshot_dir.glob("*_iter_*")):
        return
    shutil.rmtree(created, ignore_errors=True)
    print(f"note: removed {created}, the folder this command had made for the run (it failed before its "
          "first snapshot)", file=sys.stderr)


def run_config(argv: Sequence[str]) -> RunConfig:
    """The frozen run configuration of a ``tools/train.py`` command line (``argv`` without the program)."""
    args = build_parser().parse_args(list(argv))
    if args.gpus and args.gpu not in ("auto", None):
        raise InputError("give --gpu or --gpus, not both")
    return RunConfig.from_namespace(args, argv)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    config = run_config(sys.argv[1:] if argv is None else argv)
    created = _first_missing(config.out)
    try:
        run, shares = prepare_rank(config) if config.command == "rank" else prepare_finetune(config)
        if shares is not None:
            train_multi_gpu(run, shares)
        else:
            train_process(run)
    except BaseException:
        _remove_if_untrained(created, config.out / "snapshots")
        raise
    final = snapshots(run.snapshot_dir, "caffemodel")
    if final:
        print(f"done: {final[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
