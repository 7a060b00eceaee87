"""``make bench``: measured speed ratios of the RankIQA pipeline, written to ``BENCHMARKS.md`` (with plots).

    python -m tools.bench --out BENCHMARKS.md [--gpu -1] [--quick] [--plots-dir docs/bench]
        [--work-dir data/bench] [--seed 0]

Every figure is a ratio of two things measured side by side in the same run, on the same machine (named in
the report with its load average, because a shared machine slows both sides):

1. Loss layer: forward+backward of the all-pairs hinge (``pylayers.rank_loss``), with the pairs built per
   call (``all_pairs_hinge``) and reused (``hinge_on_pairs``, as the layer runs), against the Python pair
   loop (``all_pairs_hinge_loop``) for the ``LOSS_LAYOUTS`` batches; its cost against N for a fixed group
   size and against the group size for a fixed N (a plot, with log-log slopes); and the loss layer's share
   of one Shallow training iteration.
2. Efficient vs standard Siamese (Shallow net): time per training iteration and ranking pairs per second of
   the efficient net (one forward, all pairs of each group) against the two-branch baseline with the same
   number of images per iteration; and the test ranking loss against iterations for both (a plot).
3. Data layer: images per second and the share of each training iteration spent waiting for data, with and
   without prefetch workers, from PNG files and from the LMDB.
4. Evaluation: images per second of batched crop scoring against one crop per forward pass, and each
   against its limit, ``caffe time``'s forward pass of the deploy net at that batch.
5. Training step: per net (Shallow at the demo's batch of 45, VGG-16 at batch 2), ``solver.step`` of the
   run folder that ``make train_rank`` writes against ``caffe time`` of its own ``train.prototxt`` (our
   Python layers included), with Caffe's per-layer table; and the Shallow step for several prefetch worker
   and OpenBLAS thread counts, the measurements behind the defaults.
6. GPU: only with ``--gpu N`` (N >= 0) on a CUDA build of Caffe: sections 4 and 5's ratios on the GPU, and
   the training images per second (VGG-16 at the original's batch of 45); otherwise the section says that
   no GPU was available. GPU figures are never estimated.

Timing: ``time.perf_counter``, warm-up runs first, then several repeats, and the median. The ranking data
come from ``data_prep.make_ranks.generate`` (a small TID2013-style set of the embedded default photographs,
cached under ``--work-dir``). ``--quick`` is a tiny version for the tests (Shallow only, one pass each).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import re
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Before pycaffe loads (through the layers below): glog reads the level once, and its INFO lines for
# every net built here would bury the progress lines. GLOG_minloglevel=0 shows them again.
os.environ.setdefault("GLOG_minloglevel", "2")

from pylayers.rank_loss import (
    all_pairs_hinge,
    all_pairs_hinge_loop,
    hinge_on_pairs,
    pair_count,
    pair_indices,
)
from pylayers.timed import TIMINGS, clear_timings, stop_data_workers
from rankiqa import blas, caffe_io, manifest
from rankiqa.errors import InputError, cli_main
from rankiqa.fsutil import atomic_path, atomic_write_text
from rankiqa.measure import gpu_name, machine_info, median, time_calls
from rankiqa.measure import ms as _ms
from rankiqa.measure import para as _para
from rankiqa.measure import x as _x
from rankiqa.paths import REPO_ROOT

SHALLOW_DIR = REPO_ROOT / "prototxts" / "shallow"
RANK_SOLVER = REPO_ROOT / "prototxts" / "solvers" / "rank_tid2013.prototxt"

#: Nine distortion types that are quick to generate (9 = the original's types per TID-style batch).
BENCH_TYPES = ("GN", "GNC", "IN", "GB", "JPEG", "MSH", "MSL", "CCL", "CCH")
#: Batch layouts of section 1: (types, levels, images per group): the TID2013 and LIVE batches, larger
#: groups, and 720 images in 9 groups of 80.
LOSS_LAYOUTS = ((9, 5, 1), (4, 6, 2), (9, 5, 4), (4, 6, 8), (9, 5, 16))
#: Levels per group in the scaling plot of section 1 (the TID2013 style: pristine + 4).
SCALING_LEVELS = 5
CROP = 227  # the Shallow net's input
MARGIN = 10.0
#: Crops kept for `caffe time`'s limit in section 4 (it cycles through them): 4 images' 30 crops.
EVAL_LIMIT_CROPS = 120


@dataclass(frozen=True)
class StepNet:
    """One net of section 5, trained as ``make train_rank`` trains it (TID2013 style, one image per group)."""

    net: str              # prototxts/<net>/rank_train.prototxt
    types_per_batch: int  # groups per batch
    max_level: int | None  # keep levels 0..max_level of the ranking set (None: all 5); batch = types x levels

    def batch(self, levels: int = SCALING_LEVELS) -> int:
        """Images per batch on a set of ``levels`` levels (pristine + 4 distorted)."""
        max_level = levels - 1 if self.max_level is None else self.max_level
        return manifest.batch_size(self.types_per_batch, 1, max_level)


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run (the full run or ``--quick``)."""

    refs: int                # pristine references in the generated ranking set
    loss_repeats: int        # repeats of the section-1 numpy timings
    scaling_groups: tuple[int, ...]  # section-1 plot, cost against N: so many groups of 5 images
    scaling_images: tuple[int, ...]  # section-1 plot, cost against the group size: 5 x so many images ...
    scaling_n: int                   # ... per group, at this N
    loop_max_n: int          # the pair loop is timed up to this N (beyond, only the vectorised loss)
    train_warmup: int        # solver steps before timing (sections 3 and 5)
    train_steps: int         # timed solver steps (section 3)
    curve_iters: int         # training iterations of each net for the test-loss curve (section 2)
    curve_test_every: int    # test ranking loss every this many iterations
    test_batches: int        # test batches (different crops) behind each test-loss point
    siamese_types: int       # efficient batch: types x 5 levels x 1 image; baseline: half as many pairs
    data_types: int          # section 3 (and the loss share): types x 5 levels x 1 image per batch
    data_batches: int        # batches per throughput repeat (section 3)
    data_repeats: int
    eval_images: int         # images scored per repeat (section 4)
    eval_crops: int          # crops per image (the paper: 30)
    eval_batch: int          # crops per forward pass of the batched scorer
    eval_repeats: int
    base_lr: float | None    # learning rate of both Siamese nets in section 2 (None: the solver's)
    step_nets: tuple[StepNet, ...]      # section 5 on the CPU
    gpu_step_nets: tuple[StepNet, ...]  # section 6 (GPU)
    step_rounds: int         # rounds of (`caffe time`, steps) per net (section 5)
    step_iters: tuple[tuple[str, int], ...]  # per net: timed passes of `caffe time` and timed steps per round
    step_workers: tuple[int, ...]  # prefetch worker counts tried in section 5 (each with 1, one per core and
    #                                the default number of BLAS threads)
    choice_rounds: int       # rounds per worker / BLAS thread configuration


#: The demo's Shallow batch (9 types x 5 levels) and VGG-16 at batch 2 (one type, levels 0 and 1) on the
#: CPU; on a GPU VGG-16 at the original's batch of 45.
SHALLOW_45 = StepNet("shallow", 9, None)
FULL = Settings(refs=5, loss_repeats=9, scaling_groups=(9, 18, 36, 72, 144, 288, 576, 1152, 2304, 4608),
                scaling_images=(1, 2, 4, 8, 16, 36, 72, 144), scaling_n=720, loop_max_n=1440, train_warmup=3,
                train_steps=10,
                curve_iters=60, curve_test_every=5, test_batches=4, siamese_types=8, data_types=9,
                data_batches=8, data_repeats=3, eval_images=8, eval_crops=30, eval_batch=60, eval_repeats=5,
                base_lr=None, step_nets=(SHALLOW_45, StepNet("vgg16", 1, 1)),
                gpu_step_nets=(SHALLOW_45, StepNet("vgg16", 9, None)), step_rounds=4,
                step_iters=(("shallow", 5), ("vgg16", 3)), step_workers=(0, 1, 2), choice_rounds=2)
QUICK = Settings(refs=3, loss_repeats=3, scaling_groups=(9, 18, 36), scaling_images=(1, 4, 36), scaling_n=180,
                 loop_max_n=90, train_warmup=1, train_steps=2, curve_iters=4, curve_test_every=2,
                 test_batches=1, siamese_types=2, data_types=2, data_batches=3, data_repeats=1, eval_images=2,
                 eval_crops=4, eval_batch=8, eval_repeats=1, base_lr=None,
                 step_nets=(StepNet("shallow", 2, None),), gpu_step_nets=(StepNet("shallow", 2, None),),
                 step_rounds=1, step_iters=(("shallow", 1),), step_workers=(2,), choice_rounds=1)


# ---------------------------------------------------------------------------------------------------------
# Timing helpers


# ---------------------------------------------------------------------------------------------------------
# Section 1: the loss layer on its own


def layout_arrays(types: int, levels: int, images: int) -> tuple[np.ndarray, np.ndarray]:
    """Levels and group ids of a batch laid out as the ranking data layer does (group, level, image)."""
    level_ids, group_ids = [], []
    for group in range(types):
        for level in range(levels):
            for _ in range(images):
                level_ids.append(level)
                group_ids.append(group)
    return np.asarray(level_ids, dtype=np.float32), np.asarray(group_ids, dtype=np.float32)


def time_loss(types: int, levels: int, images: int, repeats: int, rng: np.random.Generator,
              loop: bool = True) -> dict[str, Any]:
    """Seconds per forward+backward of the all-pairs loss on one batch layout, three ways, on the same random
    scores (checked to agree first): ``built_s``, ``all_pairs_hinge`` (the pairs built at every call);
    ``reused_s``, ``hinge_on_pairs`` on pairs built once (what the Caffe layer does while the batch layout
    stays the same, i.e. at every iteration of a run); ``loop_s``, the Python loop over all N x N ordered
    pairs (``all_pairs_hinge_loop``; None when ``loop`` is False: at tens of thousands of images it would
    take minutes per call)."""
    level_ids, group_ids = layout_arrays(types, levels, images)
    # Scores in the margin's range, so that about half of the pairs are active (both branches work).
    scores = rng.normal(0.0, MARGIN, size=level_ids.size).astype(np.float32)
    better, worse = pair_indices(level_ids, group_ids)
    loss_b, grad_b = all_pairs_hinge(scores, level_ids, group_ids, MARGIN)
    loss_r, grad_r = hinge_on_pairs(scores, better, worse, MARGIN)
    if not (loss_b == loss_r and np.array_equal(grad_b, grad_r)):
        raise RuntimeError(f"the loss on reused pairs differs on the {types}x{levels}x{images} batch")
    row = {"layout": f"{types}x{levels}x{images}", "n": int(level_ids.size), "group_size": levels * images,
           "pairs": int(better.size),
           "built_s": time_calls(lambda: all_pairs_hinge(scores, level_ids, group_ids, MARGIN), repeats),
           "reused_s": time_calls(lambda: hinge_on_pairs(scores, better, worse, MARGIN), repeats),
           "loop_s": None}
    if not loop:
        return row
    loss_l, grad_l = all_pairs_hinge_loop(scores, level_ids, group_ids, MARGIN)
    if not (np.isclose(loss_b, loss_l) and np.allclose(grad_b, grad_l)):
        raise RuntimeError(f"vectorised and loop losses disagree on the {types}x{levels}x{images} batch")
    # The loop takes milliseconds to a second per call: a few repeats suffice.
    row["loop_s"] = time_calls(lambda: all_pairs_hinge_loop(scores, level_ids, group_ids, MARGIN),
                               max(3, repeats // 3), min_seconds=0.05)
    return row


def bench_loss(settings: Settings, seed: int) -> list[dict[str, Any]]:
    """Section 1's table: ``time_loss`` of every layout of ``LOSS_LAYOUTS``, with the loop's speed-ups."""
    rng = np.random.default_rng(seed)
    rows = []
    for types, levels, images in LOSS_LAYOUTS:
        row = time_loss(types, levels, images, settings.loss_repeats, rng)
        row["speedup_built"] = row["loop_s"] / row["built_s"]
        row["speedup_reused"] = row["loop_s"] / row["reused_s"]
        rows.append(row)
    return rows


def loglog_slope(sizes: list[float], seconds: list[float]) -> float:
    """The exponent k of seconds ~ size^k: least-squares slope of log(seconds) against log(size), over the
    upper half of the sizes (where a call's fixed cost no longer dominates), at least the last two."""
    half = min(len(sizes) // 2, len(sizes) - 2)
    x, y = np.log(np.asarray(sizes[half:], dtype=float)), np.log(np.asarray(seconds[half:], dtype=float))
    return float(np.polyfit(x, y, 1)[0])


def loss_scaling(settings: Settings, seed: int) -> dict[str, Any]:
    """The loss's cost against N for a fixed group size (``scaling_groups`` groups of ``SCALING_LEVELS``
    images) and against the group size for a fixed N (``scaling_n`` images in groups of ``SCALING_LEVELS``
    x ``scaling_images`` images), each timed as in ``time_loss``, with the fitted log-log slopes."""
    rng = np.random.default_rng(seed + 1)
    levels = SCALING_LEVELS
    by_n = [time_loss(groups, levels, 1, settings.loss_repeats, rng, groups * levels <= settings.loop_max_n)
            for groups in settings.scaling_groups]
    by_size = [time_loss(settings.scaling_n // (levels * images), levels, images, settings.loss_repeats, rng)
               for images in settings.scaling_images if settings.scaling_n % (levels * images) == 0]
    result: dict[str, Any] = {"group_size": levels, "n": settings.scaling_n, "by_n": by_n, "by_size": by_size,
                              "slopes": {}}
    for axis, rows in (("n", by_n), ("group_size", by_size)):
        for kind in ("built", "reused", "loop"):
            timed = [row for row in rows if row[f"{kind}_s"] is not None]
            result["slopes"][(axis, kind)] = loglog_slope([row[axis] for row in timed],
                                                           [row[f"{kind}_s"] for row in timed])
    return result


def plot_loss_scaling(scaling: dict[str, Any], path: Path) -> None:
    """Two log-log panels: the loss's cost against N (fixed group size), and against the group size (fixed
    N), with the slopes of ``loss_scaling``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9.0, 3.6), dpi=100)
    labels = {"built": "all_pairs_hinge (pairs built per call)", "reused": "hinge_on_pairs (pairs reused)",
              "loop": "Python pair loop (N x N)"}
    panels = ((axes[0], scaling["by_n"], "n", f"N (groups of {scaling['group_size']} images)"),
              (axes[1], scaling["by_size"], "group_size", f"images per group (N = {scaling['n']})"))
    for axis, rows, key, xlabel in panels:
        for kind, label in labels.items():
            slope = scaling["slopes"][(key, kind)]
            timed = [row for row in rows if row[f"{kind}_s"] is not None]
            axis.loglog([row[key] for row in timed], [row[f"{kind}_s"] for row in timed], marker="o",
                        markersize=3, label=f"{label}, slope {slope:.2f}")
        axis.set_xlabel(xlabel)
        axis.set_ylabel("seconds per forward+backward")
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7)
    axes[0].set_title("cost against N, fixed group size", fontsize=10)
    axes[1].set_title("cost against the group size, fixed N", fontsize=10)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


# ---------------------------------------------------------------------------------------------------------
# Data and nets


def make_rankset(work_dir: Path, settings: Settings, seed: int) -> Path:
    """The small TID2013-style ranking set (files and LMDB) of the benchmark; resumed if already there."""
    from data_prep.make_ranks import generate

    out = work_dir / f"ranks_{settings.refs}refs_seed{seed}"
    generate("tid2013", "default", out, seed=seed, jobs=os.cpu_count(), lmdb=True, types=list(BENCH_TYPES),
             limit_refs=settings.refs, progress=False, warn=lambda message: None)
    return out


@dataclass
class NetSpec:
    """One training configuration of the benchmark."""

    name: str
    kind: str                # "efficient" (rank_train) or "pair" (pair_train)
    types_per_batch: int = 9
    pairs: int = 22          # pairs per batch of the two-branch net
    workers: int = 2         # prefetch worker processes; 0 = load in the solver's thread
    lmdb: bool = False


def build_solver(spec: NetSpec, data_dir: Path, run_dir: Path, settings: Settings, seed: int,
                 device: int) -> Any:
    """A Caffe SGD solver for ``spec``, with the timed layers of ``pylayers.timed`` swapped in."""
    from rankiqa import netconfig

    caffe = caffe_io.import_caffe()
    source = SHALLOW_DIR / ("rank_train.prototxt" if spec.kind == "efficient" else "pair_train.prototxt")
    levels, _splits = manifest.manifest_levels(data_dir / "manifest.csv")
    net_param = netconfig.configure_rank_net(netconfig.read_net_param(source), source, data_dir,
                                         types_per_batch=spec.types_per_batch, images_per_group=1,
                                         levels=levels, seed=seed, workers=spec.workers, direction="quality")
    # Only the training phase is timed: drop the test-phase data layer (no test net, no idle workers).
    kept = [layer for layer in net_param.layer if netconfig.layer_phase(layer) != "test"]
    del net_param.layer[:]
    net_param.layer.extend(kept)
    for layer in net_param.layer:
        if layer.type != "Python":
            continue
        module = layer.python_param.module.split(".")[-1]
        params = netconfig.get_param_str(layer, source)
        if module in ("rank_data", "pair_data"):
            if not spec.lmdb:
                params.pop("lmdb", None)
            elif "lmdb" not in params:
                raise InputError("no images.lmdb beside the manifest", data_dir)
            if module == "pair_data":
                params["batch_size"] = spec.pairs
            netconfig.set_param_str(layer, params)
            layer.python_param.layer = "TimedRankDataLayer" if module == "rank_data" else "TimedPairDataLayer"
        elif layer.python_param.layer == "AllPairsHingeLossLayer":
            layer.python_param.layer = "TimedAllPairsHingeLossLayer"
        else:
            continue
        layer.python_param.module = "pylayers.timed"
    run_dir.mkdir(parents=True, exist_ok=True)
    net_path = run_dir / f"{spec.name}_train.prototxt"
    netconfig.write_text_proto(net_param, net_path, f"tools/bench.py: {spec.name}")
    solver_param = netconfig.configure_solver(netconfig.read_solver_param(RANK_SOLVER), net_path,
                                          run_dir / "snapshots" / spec.name, max_iter=100000,
                                          base_lr=settings.base_lr, snapshot=0, seed=seed, device=device,
                                          test_iter=None)
    solver_path = run_dir / f"{spec.name}_solver.prototxt"
    netconfig.write_text_proto(solver_param, solver_path, f"tools/bench.py: {spec.name}")
    if device >= 0:
        caffe.set_mode_gpu()
        caffe.set_device(device)
    else:
        caffe.set_mode_cpu()
    return caffe.get_solver(str(solver_path))


@contextlib.contextmanager
def solver_for(spec: NetSpec, data_dir: Path, run_dir: Path, settings: Settings, seed: int,
               device: int) -> Iterator[Any]:
    """``build_solver`` whose data workers are stopped on exit."""
    solver = build_solver(spec, data_dir, run_dir, settings, seed, device)
    try:
        yield solver
    finally:
        stop_data_workers()


def timed_steps(solver: Any, warmup: int, steps: int) -> list[float]:
    """Seconds of each of ``steps`` solver iterations, after ``warmup`` untimed ones."""
    solver.step(warmup)
    clear_timings()
    durations = []
    for _ in range(steps):
        start = time.perf_counter()
        solver.step(1)
        durations.append(time.perf_counter() - start)
    return durations


# ---------------------------------------------------------------------------------------------------------
# Section 3: data layer (and the loss layer's share of an iteration, measured in the same runs)


def data_throughputs(data_dir: Path, settings: Settings, seed: int) -> dict[tuple[bool, int], float]:
    """Images per second that the ranking data layer's loader delivers, nothing else running, per
    (LMDB?, workers) configuration.

    Each repeat starts a fresh loader and times ``data_batches`` batches from its start, so that batches
    loaded ahead before the clock started cannot flatter the prefetching loader. Repeats alternate between
    the configurations, so that a change of the machine's load hits all of them alike.
    """
    from pylayers.prefetch import Prefetcher
    from pylayers.rank_data import RankBatchBuilder, open_source, read_manifest

    rank_set = read_manifest(data_dir / "manifest.csv", "train")
    builders = {}
    for lmdb in (False, True):
        source = open_source(rank_set, str(data_dir / "images.lmdb") if lmdb else None, "bench")
        builders[lmdb] = RankBatchBuilder(rank_set, source, settings.data_types, 1, CROP, seed)
        builders[lmdb](0)  # warm the page cache and the decoders
    configs = [(lmdb, workers) for lmdb in (False, True) for workers in (0, 2)]
    rates: dict[tuple[bool, int], list[float]] = {config: [] for config in configs}
    for repeat in range(settings.data_repeats):
        first = repeat * settings.data_batches  # new batches (other crops) every repeat
        for lmdb, workers in configs:
            builder = builders[lmdb]
            start = time.perf_counter()
            with Prefetcher(builder, workers=workers, prefetch=4, start_batch=first) as loader:
                for _ in range(settings.data_batches):
                    loader.next()
                elapsed = time.perf_counter() - start
            rates[(lmdb, workers)].append(settings.data_batches * builder.batch_size / elapsed)
    return {config: median(values) for config, values in rates.items()}


def bench_data(data_dir: Path, run_dir: Path, settings: Settings, seed: int,
               device: int) -> list[dict[str, Any]]:
    """Per (source, prefetch): loader images/s, and iteration time and data-wait share while training."""
    loader_rates = data_throughputs(data_dir, settings, seed)
    rows = []
    for lmdb in (False, True):
        for workers in (0, 2):
            name = f"data_{'lmdb' if lmdb else 'files'}_w{workers}"
            spec = NetSpec(name, "efficient", types_per_batch=settings.data_types, workers=workers, lmdb=lmdb)
            with solver_for(spec, data_dir, run_dir, settings, seed, device) as solver:
                steps = timed_steps(solver, settings.train_warmup, settings.train_steps)
                recorded = TIMINGS
                waits = list(recorded["data"])
                loss = [f + b for f, b in zip(recorded["loss_forward"], recorded["loss_backward"],
                                              strict=True)]
                batch = solver.net.blobs["data"].num
            rows.append({
                "source": "LMDB" if lmdb else "PNG files", "workers": workers, "batch": batch,
                "loader_images_per_s": loader_rates[(lmdb, workers)],
                "iteration_s": median(steps), "wait_s": median(waits),
                "wait_share": sum(waits) / sum(steps), "train_images_per_s": batch / median(steps),
                "loss_layer_s": median(loss),
            })
    return rows


# ---------------------------------------------------------------------------------------------------------
# Section 2: efficient vs two-branch Siamese


class HeldOutRanking:
    """The test ranking loss of a set of weights: the all-pairs hinge on fixed test batches, scored by the
    ranking deploy net (the same for both Siamese nets: the baseline's first branch has the deploy names)."""

    def __init__(self, data_dir: Path, settings: Settings, seed: int):
        from pylayers.images import ImageSource
        from pylayers.rank_data import RankBatchBuilder, read_manifest

        caffe = caffe_io.import_caffe()
        rank_set = read_manifest(data_dir / "manifest.csv", "test")
        builder = RankBatchBuilder(rank_set, ImageSource(data_dir), len(rank_set.types), 1, CROP, seed + 1)
        self.batches = [builder(index) for index in range(settings.test_batches)]
        self.net = caffe.Net(str(SHALLOW_DIR / "rank_deploy.prototxt"), caffe.TEST)
        self.net.blobs["data"].reshape(*self.batches[0]["data"].shape)
        self.net.reshape()

    def __call__(self, train_net: Any) -> tuple[float, float]:
        """(mean test loss, share of test pairs in the right order) of ``train_net``'s current weights."""
        for name, params in self.net.params.items():
            for index, blob in enumerate(params):
                blob.data[...] = train_net.params[name][index].data
        losses, right, total = [], 0, 0
        for batch in self.batches:
            self.net.blobs["data"].data[...] = batch["data"]
            self.net.forward()
            scores = self.net.blobs["fc8_m"].data.reshape(-1).astype(np.float64)
            loss, _ = all_pairs_hinge(scores, batch["label"], batch["group"], MARGIN)
            losses.append(loss)
            better, worse = pair_indices(batch["label"], batch["group"])
            right += int((scores[better] > scores[worse]).sum())
            total += int(better.size)
        return float(np.mean(losses)), right / max(total, 1)


def bench_siamese(data_dir: Path, run_dir: Path, settings: Settings, seed: int, device: int,
                  curve: bool = True) -> dict[str, Any]:
    """Train the efficient and the two-branch Shallow net on the same data; time and test both.

    Both solvers live side by side and train in alternating blocks of ``curve_test_every`` iterations
    (tested between blocks), so that a change of the machine's load during the run hits both alike.
    """
    from rankiqa import netconfig

    levels = 5
    images = settings.siamese_types * levels
    specs = [NetSpec("siamese_efficient", "efficient", types_per_batch=settings.siamese_types),
             NetSpec("siamese_pair", "pair", pairs=images // 2)]
    tester = HeldOutRanking(data_dir, settings, seed) if curve else None
    base_lr = settings.base_lr
    if base_lr is None:
        base_lr = netconfig.read_solver_param(RANK_SOLVER).base_lr
    results: dict[str, Any] = {"images": images, "base_lr": float(base_lr), "nets": {}}
    iters = settings.curve_iters if curve else settings.train_warmup + settings.train_steps
    block = settings.curve_test_every if curve else iters
    with contextlib.ExitStack() as stack:
        solvers = {spec.kind: stack.enter_context(solver_for(spec, data_dir, run_dir, settings, seed, device))
                   for spec in specs}
        # Both nets start from the same weights (the baseline's shared parameters follow their owners).
        for name, params in solvers["efficient"].net.params.items():
            for index, blob in enumerate(params):
                solvers["pair"].net.params[name][index].data[...] = blob.data
        points: dict[str, list[tuple[int, float, float]]] = {kind: [] for kind in solvers}
        steps: dict[str, list[float]] = {kind: [] for kind in solvers}
        done = 0
        while True:
            if tester is not None:
                for kind, solver in solvers.items():
                    points[kind].append((done, *tester(solver.net)))
            if done == iters:
                break
            count = min(block, iters - done)
            for kind, solver in solvers.items():
                for _ in range(count):
                    start = time.perf_counter()
                    solver.step(1)
                    steps[kind].append(time.perf_counter() - start)
            done += count
        for kind, solver in solvers.items():
            net = solver.net
            if kind == "efficient":
                pairs = pair_count(net.blobs["label"].data, net.blobs["group"].data)
            else:
                pairs = int(net.blobs["label"].num)
            timed = steps[kind][settings.train_warmup:] or steps[kind]
            results["nets"][kind] = {
                "images": int(net.blobs["data"].num) * (2 if kind == "pair" else 1),
                "pairs": pairs, "iteration_s": median(timed), "timed_steps": len(timed),
                "pairs_per_s": pairs / median(timed), "curve": points[kind],
            }
    eff, pair = results["nets"]["efficient"], results["nets"]["pair"]
    results["time_ratio"] = eff["iteration_s"] / pair["iteration_s"]
    results["pairs_ratio"] = eff["pairs_per_s"] / pair["pairs_per_s"]
    return results


def plot_curves(siamese: dict[str, Any], path: Path) -> None:
    """Test ranking loss against iterations for both nets (as the paper's supplementary Fig. 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axis = plt.subplots(figsize=(5.0, 3.4), dpi=100)
    labels = {"efficient": "efficient Siamese (all pairs)", "pair": "standard two-branch Siamese"}
    for kind, result in siamese["nets"].items():
        points = result["curve"]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3,
                  label=labels[kind])
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set_xlabel("training iteration")
    axis.set_ylabel("test ranking loss (all-pairs hinge)")
    axis.set_title(f"Shallow net, {siamese['images']} images per iteration", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


# ---------------------------------------------------------------------------------------------------------
# Section 4: evaluation


def deploy_on_crops(deploy: Path, batch: int, crops: Path, out: Path) -> Path:
    """A copy of ``deploy`` for ``caffe time`` whose ``Input`` layer is replaced by ``CropsDataLayer``
    (``batch`` crops per pass from the ``.npy`` file ``crops``), with the same top."""
    from rankiqa import netconfig

    net_param = netconfig.read_net_param(deploy)
    inputs = [layer for layer in net_param.layer if layer.type == "Input" and layer.input_param.shape]
    if not inputs:
        raise InputError("no Input layer with a shape", deploy)
    layer = inputs[0]
    layer.type = "Python"
    layer.ClearField("input_param")
    layer.python_param.module = "pylayers.crops_data"
    layer.python_param.layer = "CropsDataLayer"
    netconfig.set_param_str(layer, {"crops": str(crops.resolve()), "batch": batch})
    netconfig.write_text_proto(net_param, out, f"tools/bench.py: {deploy.name} on crops, batch {batch}")
    return out


def save_crops(images: list[np.ndarray], info: Any, crops: int, seed: int, limit: int, out: Path) -> Path:
    """The crops the scorer takes of ``images`` (``rankiqa.scoring.crop_positions``, image ordinal = index),
    at most ``limit`` of them, as a (K, 3, H, W) float32 ``.npy`` file ``out``."""
    from rankiqa import scoring

    ch, cw = info.crop_height, info.crop_width
    taken = []
    for index, image in enumerate(images):
        chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
        for y, x in scoring.crop_positions(image.shape[0], image.shape[1], ch, cw, crops, seed, index):
            taken.append(chw[:, y:y + ch, x:x + cw])
    with atomic_path(out) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.stack(taken[:limit]))
    return out


def bench_eval(data_dir: Path, work_dir: Path, settings: Settings, seed: int, device: int) -> dict[str, Any]:
    """Images per second of crop scoring: ``eval_batch`` crops per forward against one crop per forward,
    and each against its limit: ``caffe time``'s forward pass of the deploy net at that batch, which scores
    ``batch / crops`` images."""
    import cv2

    from pylayers.rank_data import read_manifest
    from rankiqa import caffe_time as ctime
    from rankiqa import (
        devices,
        scoring,
    )

    caffe = caffe_io.import_caffe()
    devices.set_device(caffe, device)
    rank_set = read_manifest(data_dir / "manifest.csv", "test")
    paths = sorted(set(rank_set.paths.values()))
    step = max(1, len(paths) // settings.eval_images)
    chosen = paths[::step][:settings.eval_images]
    images = [cv2.imread(str(data_dir / path), cv2.IMREAD_COLOR) for path in chosen]
    deploy = SHALLOW_DIR / "rank_deploy.prototxt"
    info = scoring.read_deploy(deploy)
    # The default batch, a small batch and the original's one crop per forward pass.
    batches = sorted({settings.eval_batch, max(2, settings.eval_batch // 6), 1}, reverse=True)
    scorers = {}
    for batch in batches:
        net = caffe.Net(str(deploy), caffe.TEST)  # random weights: the speed does not depend on them
        scorers[batch] = scoring.CropScorer(net, info, settings.eval_crops, batch, seed)
        list(scorers[batch].score([(0, 0, images[0])]))  # warm-up (allocations, reshape)
    work_dir.mkdir(parents=True, exist_ok=True)
    crops_file = save_crops(images, info, settings.eval_crops, seed, EVAL_LIMIT_CROPS,
                            work_dir / "eval_crops.npy")
    limit_nets = {batch: deploy_on_crops(deploy, batch, crops_file,
                                         work_dir / f"eval_deploy_b{batch}.prototxt") for batch in batches}
    rates: dict[int, list[float]] = {batch: [] for batch in batches}
    limits: dict[int, list[float]] = {batch: [] for batch in batches}
    # Repeats alternate between the scorers and `caffe time`, so that a change of load hits all alike; each
    # `caffe time` runs as many passes as the scorer just ran forwards (at least 2).
    for _ in range(settings.eval_repeats):
        for batch, scorer in scorers.items():
            start = time.perf_counter()
            scored = list(scorer.score((i, i, image) for i, image in enumerate(images)))
            rates[batch].append(len(scored) / (time.perf_counter() - start))
            passes = max(2, math.ceil(len(images) * settings.eval_crops / batch))
            timed = ctime.caffe_time(caffe, limit_nets[batch], passes, device, cwd=REPO_ROOT)
            if not timed["ok"]:
                raise RuntimeError(f"{timed['error']} on {limit_nets[batch]}:\n{timed['output_tail']}")
            limits[batch].append(batch / (settings.eval_crops * timed["forward_ms"] / 1000.0))
    one_crop = median(rates[1])
    rows = [{"batch": batch, "images_per_s": median(rates[batch]), "speedup": median(rates[batch]) / one_crop,
             "limit_images_per_s": median(limits[batch]),
             "repeat_ratios": [rate / limit for rate, limit in zip(rates[batch], limits[batch], strict=True)]}
            for batch in batches]
    for row in rows:
        row["of_limit"] = median(row["repeat_ratios"])
    caffe.set_mode_cpu()
    return {"images": len(images), "crops": settings.eval_crops,
            "sizes": sorted({im.shape[:2] for im in images}), "rows": rows,
            "batched": rows[0], "one_crop": rows[-1], "speedup": rows[0]["speedup"]}


# ---------------------------------------------------------------------------------------------------------
# Section 5: the training step against `caffe time` of the same train net


def files_view(data_dir: Path, out_dir: Path, max_level: int | None = None) -> Path:
    """``out_dir`` with a ``manifest.csv`` that lists ``data_dir``'s images (levels up to ``max_level``) by
    their path relative to ``out_dir``, and no LMDB beside it: the ranking data layer then reads the PNG
    files themselves, as ``make train_rank`` does on a set made without ``LMDB=1``."""
    import csv

    from rankiqa.manifest import MANIFEST_COLUMNS

    out_dir.mkdir(parents=True, exist_ok=True)
    source = data_dir / "manifest.csv"
    with open(source, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with atomic_path(out_dir / "manifest.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, MANIFEST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            if max_level is None or int(row["level"]) <= max_level:
                path = os.path.relpath((data_dir / row["path"]).resolve(), out_dir.resolve())
                writer.writerow(dict(row, path=path))
    return out_dir


def prepare_step_run(data_dir: Path, run_dir: Path, spec: StepNet, device: int,
                     workers: int | None = None) -> Any:
    """The run folder that ``make train_rank`` would write for ``spec`` (``rankiqa.runprep.prepare_rank``: its
    ``train.prototxt`` and ``solver.prototxt``, the driver's defaults for everything not named here).
    ``run_dir`` is the benchmark's own scratch (random weights, timing only) and is made afresh: a folder left
    by a benchmark of other nets would be refused by the driver's identity check, as a user's run is."""
    from rankiqa import runconfig, runprep

    if run_dir.is_symlink():
        run_dir.unlink()
    elif run_dir.exists():
        shutil.rmtree(run_dir)

    # Random initial weights on purpose (``WEIGHTS=none``): a step takes the same time whatever the weights,
    # and VGG-16's ImageNet weights, which the driver asks for, may be absent.
    config = runconfig.RunConfig(command="rank", rankset="tid2013", net=spec.net, data=data_dir, out=run_dir,
                                 gpu=str(device), types_per_batch=spec.types_per_batch, workers=workers,
                                 weights=Path("none"))
    run, _shares = runprep.prepare_rank(config)
    return run


def default_workers(net: str) -> int:
    """The prefetch workers of the training-phase data layers of ``prototxts/<net>/rank_train.prototxt``
    (what ``make train_rank`` uses when ``WORKERS`` is not given)."""
    from rankiqa import netconfig

    source = REPO_ROOT / "prototxts" / net / "rank_train.prototxt"
    return netconfig.loader_workers(netconfig.read_net_param(source), source)


class StepTimer:
    """The training step of a prepared run against ``caffe time`` of its own ``train.prototxt``.

    Holds the run's solver (``run.solver_path``, what the driver builds), which first takes ``warmup``
    untimed steps. Each ``round`` runs ``caffe time`` (``iters`` timed passes, in a child process), then
    ``iters`` timed ``solver.step(1)`` calls, each followed by reading the loss as the driver does (on a GPU
    this also waits for the step to finish), with Caffe's OpenBLAS at a given thread count (None: as it
    is). Rounds of several timers are meant to alternate, so that a change of the machine's load hits all
    of them alike.
    """

    def __init__(self, caffe: Any, run: Any, device: int, warmup: int):
        from rankiqa import (
            devices,
            snapshots,
        )

        self.caffe, self.run, self.device = caffe, run, device
        devices.set_device(caffe, device)
        # Caffe checks at construction that its snapshot prefix (under snapshots/.partial/) can be written.
        snapshots.discard_unfinished_snapshots(run.snapshot_dir)
        self.solver = caffe.get_solver(str(run.solver_path))
        self.solver.step(warmup)
        self.batch = int(self.solver.net.blobs["data"].num)
        self.records: dict[int | None, dict[str, list[Any]]] = {}

    def round(self, iters: int, threads: int | None = None) -> None:
        """One round of ``caffe time`` and as many timed steps, at ``threads`` BLAS threads."""
        from rankiqa import caffe_time as ctime
        from rankiqa import (
            devices,
            trainer,
        )

        record = self.records.setdefault(threads, {"steps": [], "passes": [], "tables": [], "means": [],
                                                   "ratios": []})
        with blas.threads_set(threads) as env:
            timed = ctime.caffe_time(self.caffe, self.run.train_net, iters, self.device, extra_env=env,
                                     cwd=REPO_ROOT)
            if not timed["ok"]:
                raise RuntimeError(f"{timed['error']} on {self.run.train_net}:\n{timed['output_tail']}")
            devices.set_device(self.caffe, self.device)
            steps = []
            for _ in range(iters):
                start = time.perf_counter()
                self.solver.step(1)
                trainer.net_loss(self.solver.net)
                steps.append(time.perf_counter() - start)
        passes = [ms / 1000.0 for ms in timed["iterations_ms"]]
        record["steps"] += steps
        record["passes"] += passes
        record["tables"].append(timed["layers"])
        record["means"].append(timed["forward_backward_ms"] / 1000.0)
        record["ratios"].append(median(steps) / median(passes))

    def solver_work(self, repeats: int) -> dict[str, float]:
        """Median seconds of what a step does beyond forward and backward, and ``caffe time`` does not:
        zeroing the gradients (``net.clear_param_diffs()``) and the weight update (``solver.apply_update()``,
        SGD with momentum and weight decay), each timed alone."""
        return {"clear_s": time_calls(self.solver.net.clear_param_diffs, repeats=repeats, min_seconds=0.0),
                "update_s": time_calls(self.solver.apply_update, repeats=repeats, min_seconds=0.0)}

    def result(self, threads: int | None = None) -> dict[str, Any]:
        """At ``threads``: the medians of the steps and of ``caffe time``'s passes; ``ratio``, the median of
        the rounds' ratios (each of a round's median step over its median pass, measured side by side) and
        their list; training images per second and the per-layer table (mean over rounds)."""
        record = self.records[threads]
        layers = [{"layer": rows[0]["layer"],
                   "forward_s": statistics.fmean(row["forward_ms"] for row in rows) / 1000.0,
                   "backward_s": statistics.fmean(row["backward_ms"] for row in rows) / 1000.0}
                  for rows in zip(*record["tables"], strict=True)]
        step, limit = median(record["steps"]), median(record["passes"])
        return {"train_net": str(self.run.train_net), "batch": self.batch, "step_s": step,
                "caffe_time_s": limit, "ratio": median(record["ratios"]),
                "round_ratios": list(record["ratios"]),
                "images_per_s": self.batch / step, "caffe_time_mean_s": statistics.fmean(record["means"]),
                "timed_steps": len(record["steps"]), "timed_passes": len(record["passes"]), "layers": layers}

    def close(self) -> None:
        """Let the solver (and its data layers' prefetch workers) go."""
        del self.solver  # its data layers stop their workers when Caffe frees them
        self.caffe.set_mode_cpu()


def bench_steps(data_dir: Path, work_dir: Path, settings: Settings, device: int) -> dict[str, Any]:
    """Section 5: per net of ``settings.step_nets`` (``gpu_step_nets`` on a GPU), the step against ``caffe
    time`` at the defaults (the prototxt's prefetch workers; on the CPU ``rankiqa.blas.training_threads``
    BLAS threads, as ``tools/train.py`` sets them); and, on the CPU, the Shallow step for each prefetch
    worker count of ``settings.step_workers`` with 1 BLAS thread, one per core and the default, all
    alternating round by round."""

    caffe = caffe_io.import_caffe()
    where = "gpu" if device >= 0 else "cpu"
    iters = dict(settings.step_iters)
    nets = []
    for spec in settings.step_nets if device < 0 else settings.gpu_step_nets:
        view = files_view(data_dir, work_dir / f"files_levels{spec.max_level or 'all'}", spec.max_level)
        run = prepare_step_run(view, work_dir / f"step_{where}_{spec.net}_{spec.batch()}", spec, device)
        workers = default_workers(spec.net)
        threads = blas.training_threads(workers) if device < 0 else None
        timer = StepTimer(caffe, run, device, settings.train_warmup)
        try:
            for _ in range(settings.step_rounds):
                timer.round(iters[spec.net], threads)
            result = timer.result(threads)
            with blas.threads_set(threads):
                result.update(timer.solver_work(max(3, iters[spec.net])))
            # The limit of a training step: `caffe time`'s pass plus the solver's own work.
            result["with_solver_work"] = result["step_s"] / (result["caffe_time_s"] + result["clear_s"]
                                                             + result["update_s"])
        finally:
            timer.close()
        nets.append({"net": spec.net, "workers": workers, "blas_threads": threads, **result})
    report: dict[str, Any] = {"nets": nets, "choices": []}
    if device >= 0:
        return report
    spec = settings.step_nets[0]
    view = files_view(data_dir, work_dir / "files_levelsall")
    cores = blas.usable_cores()
    options = {workers: sorted({1, cores, blas.training_threads(workers)})
               for workers in settings.step_workers}
    timers = {workers: StepTimer(caffe, prepare_step_run(
        view, work_dir / f"step_cpu_{spec.net}_{spec.batch()}_w{workers}", spec, -1, workers), -1,
        settings.train_warmup) for workers in settings.step_workers}
    try:
        for _ in range(settings.choice_rounds):
            for workers, timer in timers.items():
                for threads in options[workers]:
                    timer.round(iters[spec.net], threads)
        report["choices"] = [{"workers": workers, "blas_threads": threads, **timer.result(threads)}
                             for workers, timer in timers.items() for threads in options[workers]]
    finally:
        for timer in timers.values():
            timer.close()
    workers = default_workers(spec.net)
    report.update(cores=cores, default={"workers": workers, "blas_threads": blas.training_threads(workers)},
                  openblas_default=blas.openblas_default())
    return report


# ---------------------------------------------------------------------------------------------------------
# Online ranked batches (pylayers.online_source) against reading PNG files


def bench_online(data_dir: Path, settings: Settings, seed: int) -> dict[str, Any]:
    """Images per second of one loader process (a prefetch worker's share): the ranked batches read from
    the generated set's PNG files, made online from its pristine images (the same batches, bit for bit),
    and made online over every type of the original's list that is made online; repeats alternate."""
    from data_prep.distortions import LISTED_TYPES
    from pylayers import online_source
    from pylayers.rank_data import RankBatchBuilder, open_source, read_manifest

    rank_set = read_manifest(data_dir / "manifest.csv", "train")
    spec = {"pristine": str(data_dir / "pristine"), "rankset": "tid2013", "seed": seed}
    every = [t for t in LISTED_TYPES["tid2013"] if t not in online_source.OFFLINE_TYPES]
    builders = {"files": RankBatchBuilder(rank_set, open_source(rank_set, None, "bench"), settings.data_types,
                                          1, CROP, seed)}
    for name, types in (("online", list(BENCH_TYPES)), ("online_all", every)):
        online_set, source = online_source.open_online({**spec, "types": types}, "train", "bench")
        builders[name] = RankBatchBuilder(online_set, source, settings.data_types, 1, CROP, seed)
    first_batches = {name: builder(0) for name, builder in builders.items()}  # warm caches and imports
    if any(not np.array_equal(first_batches["online"][key], first_batches["files"][key])
           for key in first_batches["files"]):
        raise RuntimeError("the online batch differs from the batch of the PNG files: not the same work")
    rates: dict[str, list[float]] = {name: [] for name in builders}
    for repeat in range(settings.data_repeats):
        first = 1 + repeat * settings.data_batches
        for name, builder in builders.items():
            start = time.perf_counter()
            for index in range(first, first + settings.data_batches):
                builder(index)
            rates[name].append(settings.data_batches * builder.batch_size / (time.perf_counter() - start))
    return {"types_all": every, "offline": list(online_source.OFFLINE_TYPES),
            **{name: median(values) for name, values in rates.items()}}


def render_online(online: dict[str, Any], steps: dict[str, Any], gpu: dict[str, Any] | None,
                  s: Settings) -> list[str]:
    """The online section of BENCHMARKS.md: one loader process's images per second, and the prefetch
    workers that keep each measured training pass fed (its `caffe time` pass: forward and backward)."""
    lines = ["## Online ranked batches against PNG files", "",
             "| batches | images / s per worker | against PNG files |", "|---|---|---|",
             f"| read from PNG files ({len(BENCH_TYPES)} types) | {online['files']:.4g} | 1x |",
             f"| made online, the same batches ({len(BENCH_TYPES)} types) | {online['online']:.4g} | "
             f"{_x(online['online'] / online['files'])} |",
             f"| made online, {len(online['types_all'])} types ({', '.join(online['types_all'])}) | "
             f"{online['online_all']:.4g} | {_x(online['online_all'] / online['files'])} |", "",
             "| net, batch (where) | `caffe time` pass | images / s it takes | workers to feed it online "
             f"({len(BENCH_TYPES)} types / {len(online['types_all'])} types) |", "|---|---|---|---|"]
    measured = [(net, "CPU") for net in steps["nets"]] + [(net, "GPU") for net in (gpu or {}).get(
        "steps", {}).get("nets", [])]
    for net, where in measured:
        need = net["batch"] / net["caffe_time_s"]
        lines.append(f"| {net['net']}, {net['batch']} ({where}) | {_ms(net['caffe_time_s'])} | {need:.4g} | "
                     f"{math.ceil(need / online['online'])} / {math.ceil(need / online['online_all'])} |")
    lines += ["", _para(
        "How measured: `pylayers.rank_data.RankBatchBuilder` in this process (what one prefetch worker",
        f"does), {s.data_types} types x 5 levels x 1 image per batch, random {CROP} crops, timed over",
        f"{s.data_batches} batches per repeat, {s.data_repeats} repeat(s) alternating between the rows",
        "(median). PNG files: the generated set of this benchmark. Online (`pylayers.online_source`): its",
        "`pristine/` images as the pristine folder, each image distorted when a batch takes it (the whole",
        "image, then the crop), the same seed: the same batches as the files, bit for bit",
        "(tests/test_online_source.py); the last row draws from every listed type but",
        f"{', '.join(online['offline'])} (too slow online: read from a precomputed folder or left",
        "out). Workers needed: the images per second of each net's `caffe time` pass of section 5 (and",
        "section 6 on a GPU), divided by a worker's online images per second, rounded up; workers share",
        "the machine's cores with Caffe, so a CPU needs that many cores beyond Caffe's own."), ""]
    return lines


# ---------------------------------------------------------------------------------------------------------
# Section 6: GPU


def gpu_status(caffe: Any, gpu: int) -> tuple[bool, str]:
    """Whether the GPU figures can be measured, and why not when they cannot."""
    from rankiqa import devices

    if gpu < 0:
        return False, ("no GPU was requested (`--gpu -1`; `make bench` passes GPU=0 only when a CUDA build "
                       "is selected and `nvidia-smi` answers)")
    if caffe_io.build_mode(caffe) == "cpu":
        return False, f"`--gpu {gpu}` was given, but this Caffe build is CPU-only (BUILD_INFO mode=cpu)"
    # Probed in a child process: a CPU-only build or a missing device aborts the process (glog FATAL).
    if not devices.gpu_usable(gpu):
        return False, (f"`--gpu {gpu}` was given, but Caffe could not use that device (probed in a child "
                       "process)")
    return True, f"GPU {gpu}"


# ---------------------------------------------------------------------------------------------------------
# Report


def render(report: dict[str, Any], plots_rel: str) -> str:
    """The Markdown of BENCHMARKS.md."""
    s: Settings = report["settings"]
    quick = " (`--quick`: tiny sizes, for the tests; the figures are noisy)" if report["quick"] else ""
    lines = ["# Benchmarks", "",
             _para(f"Generated by `{report['command']}` on {report['date']} in",
                   f"{report['wall_s']:.0f} s{quick}. Every figure is a ratio of two measurements taken",
                   "side by side in this one run on this machine. Timing: `time.perf_counter`, warm-up",
                   "first, then repeats; the median is reported."),
             "", "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in report["machine"].items()]
    before, after = report["load_before"], report["load_after"]
    lines += [f"| load average (1/5/15 min) before | {before[0]:.2f} / {before[1]:.2f} / {before[2]:.2f} |",
              f"| load average (1/5/15 min) after | {after[0]:.2f} / {after[1]:.2f} / {after[2]:.2f} |"]
    if report["loads"]:
        lines.append(f"| 1-minute load average at the sections' starts | {min(report['loads']):.2f} to "
                     f"{max(report['loads']):.2f} |")
    lines.append("")
    cores = blas.usable_cores()
    peak = max(before[0], after[0], *report["loads"])
    if peak > 0.5 * cores:
        lines += [_para("**The machine was shared during this run** (load average up to",
                        f"{peak:.1f} on {cores} cores): absolute times are slower than on an idle machine;",
                        "both sides of each ratio ran under the same load."), ""]
    lines += [_para("Data: a TID2013-style ranking set generated by `data_prep.make_ranks.generate` from the",
                    f"first {s.refs} embedded default photographs (scikit-image),",
                    f"{len(BENCH_TYPES)} distortion types ({', '.join(BENCH_TYPES)}) x 4 levels + pristine,",
                    "as PNG files and as LMDB;",
                    f"Shallow net (crop {CROP}) in sections 1-4, Shallow and VGG-16 (crop 224) in",
                    "section 5; Caffe on the CPU in sections 1-5."), ""]

    lines += render_loss(report, plots_rel)

    # 2. efficient vs two-branch Siamese
    sia = report["siamese"]
    eff, pair = sia["nets"]["efficient"], sia["nets"]["pair"]
    lines += ["## 2. Efficient vs standard Siamese (Shallow net, CPU)", "",
              "| net | images / iteration | ranking pairs / iteration | time / iteration | pairs / s |",
              "|---|---|---|---|---|",
              f"| efficient (one forward, all pairs per group) | {eff['images']} | {eff['pairs']} | "
              f"{_ms(eff['iteration_s'])} | {eff['pairs_per_s']:.4g} |",
              f"| two-branch baseline | {pair['images']} | {pair['pairs']} | {_ms(pair['iteration_s'])} | "
              f"{pair['pairs_per_s']:.4g} |", "",
              _para(f"Time per iteration, efficient / baseline: **{_x(sia['time_ratio'])}**; ranking pairs",
                    f"per second, efficient / baseline: **{_x(sia['pairs_ratio'])}**."), "",
              f"![test ranking loss]({plots_rel}/siamese_test_loss.png)", "",
              "| iteration | efficient: test loss | efficient: pairs in order | baseline: test loss | "
              "baseline: pairs in order |", "|---|---|---|---|---|"]
    for (it, e_loss, e_acc), (_it, p_loss, p_acc) in zip(eff["curve"], pair["curve"], strict=True):
        lines.append(f"| {it} | {e_loss:.4g} | {100 * e_acc:.3g}% | {p_loss:.4g} | {100 * p_acc:.3g}% |")
    lines += ["", _para(
        "How measured: both nets are the prototxts of `prototxts/shallow/` (`rank_train`, `pair_train`),",
        "configured as `tools/train.py` configures them, with the same solver (`rank_tid2013`: SGD,",
        f"momentum 0.9, base_lr {sia['base_lr']:g}), the same seed and the same initial weights. The",
        f"efficient batch is {s.siamese_types} types x 5 levels x 1 image; the baseline gets",
        f"{pair['pairs']} pairs,",
        f"i.e. the same {eff['images']} images per iteration. Both read PNG files with 2 prefetch workers.",
        f"Each of the {s.curve_iters} `solver.step(1)` calls is timed; the median of all but the first",
        f"{s.train_warmup} is reported. The test ranking loss is the all-pairs hinge (margin 10, divided by",
        "N) of `rank_deploy.prototxt` carrying each net's current weights, on",
        f"{s.test_batches} fixed test batch(es) (all types x 5 levels of the held-out reference, fixed",
        "crops), the same for both nets; 'pairs in order' is the share of those test pairs that the scores",
        "order correctly. Small data and few iterations: the curves show a trend, not converged models."), ""]

    # 3. data layer
    lines += ["## 3. Data layer", "",
              "| source | prefetch | loader images / s | train iteration | wait for data / iteration | "
              "wait share | training images / s |", "|---|---|---|---|---|---|---|"]
    for row in report["data"]:
        prefetch = f"{row['workers']} workers, 4 batches ahead" if row["workers"] else "none (solver thread)"
        lines.append(f"| {row['source']} | {prefetch} | {row['loader_images_per_s']:.4g} | "
                     f"{_ms(row['iteration_s'])} | {_ms(row['wait_s'])} | "
                     f"**{100 * row['wait_share']:.3g}%** | "
                     f"{row['train_images_per_s']:.4g} |")
    lines += ["", _para(
        "How measured: *loader images / s*: `pylayers.rank_data.RankBatchBuilder`",
        f"({s.data_types}x5x1 batches, random {CROP} crops) behind `pylayers.prefetch.Prefetcher`, a",
        "fresh loader per repeat timed from its",
        f"start over {s.data_batches} batches ({s.data_repeats} repeat(s) alternating between the four",
        "configurations, median), nothing else of the benchmark running.",
        "*Wait share*: a timed subclass of `RankDataLayer` records each forward (taking a ready batch or",
        f"loading one, plus the copy into the blob) during {s.train_steps} timed `solver.step(1)` calls",
        f"after {s.train_warmup} warm-up calls of the {s.data_types}x5x1 Shallow training net; the share is",
        "the summed wait over the summed iteration time (the goal: under 5% with prefetch). The prefetch",
        "workers compete with Caffe's BLAS threads for the same cores."), ""]

    lines += render_eval(report["eval"], s, gpu=False)
    lines += render_steps(report["steps"], s)
    if report.get("online") is not None:
        lines += render_online(report["online"], report["steps"], report["gpu"], s)
    lines += ["## 6. GPU", ""]
    gpu = report["gpu"]
    if gpu is None:
        lines += [_para(f"**No GPU was available in this run**: {report['gpu_reason']}. No GPU figures are",
                        "reported and none are estimated."), ""]
    else:
        lines += [_para(f"Device: **{gpu['name']}** (Caffe GPU mode, device {gpu['device']}). The ratios of",
                        "sections 4 and 5, measured the same way in Caffe's GPU mode (no worker or BLAS",
                        "thread sweep), and the training images per second of each net."), ""]
        lines += render_step_table(gpu["steps"]["nets"])
        lines += render_eval(gpu["eval"], s, gpu=True)
    lines += gpu_check_section()
    return "\n".join(lines)


def render_loss(report: dict[str, Any], plots_rel: str) -> list[str]:
    """Section 1 of BENCHMARKS.md."""
    s: Settings = report["settings"]
    lines = ["## 1. Loss layer: all-pairs hinge vs Python pair loop", "",
             "| batch (types x levels x images) | N | group size | pairs | pairs built per call | "
             "pairs reused (the layer) | pair loop | speed-up, built | speed-up, reused |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in report["loss"]:
        lines.append(f"| {row['layout']} | {row['n']} | {row['group_size']} | {row['pairs']} | "
                     f"{_ms(row['built_s'])} | {_ms(row['reused_s'])} | {_ms(row['loop_s'])} | "
                     f"**{_x(row['speedup_built'])}** | {_x(row['speedup_reused'])} |")
    scaling = report["loss_scaling"]
    slopes = scaling["slopes"]
    lines += ["", f"![loss cost against N and against the group size]({plots_rel}/loss_scaling.png)", "",
              _para("Fitted log-log slopes (cost ~ size^slope, over the upper half of each curve): against N",
                    f"at group size {scaling['group_size']} (N up to {scaling['by_n'][-1]['n']}; the loop up",
                    f"to {s.loop_max_n}),",
                    f"pairs built per call {slopes[('n', 'built')]:.2f}, pairs reused",
                    f"{slopes[('n', 'reused')]:.2f}, pair loop {slopes[('n', 'loop')]:.2f}; against the",
                    f"group size at N = {scaling['n']}, built {slopes[('group_size', 'built')]:.2f},",
                    f"reused {slopes[('group_size', 'reused')]:.2f}, loop",
                    f"{slopes[('group_size', 'loop')]:.2f}. A cost proportional to the sum of the squared",
                    "group sizes (here N x the group size) gives slope 1 on both axes, one proportional to",
                    "N x N gives 2 against N and 0 against the group size; a call's fixed cost flattens the",
                    "small sizes, memory traffic steepens the large ones."), ""]
    share = report["data"][1]  # PNG files with prefetch: the default training configuration
    loop45 = report["loss"][0]["loop_s"]
    lines += [_para(
        f"Share of one Shallow training iteration ({s.data_types}x5x1 = {share['batch']} images, PNG files,",
        "2 prefetch workers): the loss layer's forward+backward inside Caffe took",
        f"{_ms(share['loss_layer_s'])} of a {_ms(share['iteration_s'])} iteration",
        f"(**{100 * share['loss_layer_s'] / share['iteration_s']:.2g}%**); the pair loop's {_ms(loop45)}",
        f"would be {100 * loop45 / share['iteration_s']:.2g}% of it."), "", _para(
        "How measured: *pairs built per call*: `pylayers.rank_loss.all_pairs_hinge` (numpy; one call builds",
        "the pairs of the batch's groups (`pair_indices`) and computes loss and gradient, i.e. forward +",
        "backward); *pairs reused*: `hinge_on_pairs` on pairs built beforehand, which is what",
        "`AllPairsHingeLossLayer` runs at every iteration of a run (every batch has the same levels and",
        "groups, so it builds the pairs once); *pair loop*: `all_pairs_hinge_loop`, the reference Python",
        "loop over every ordered pair of the batch. All three on the same random scores, checked equal",
        f"first; one warm-up call, then {s.loss_repeats} rounds (the loop: a third as many, at least 3) of",
        "as many calls as fill 20-50 ms; median per call. The in-Caffe share comes from a timed subclass",
        "of `AllPairsHingeLossLayer` (perf_counter around forward and backward) in the real Shallow",
        f"training net: median over {s.train_steps} iterations after {s.train_warmup} warm-up",
        "iterations."), ""]
    return lines


def render_eval(ev: dict[str, Any], s: Settings, gpu: bool) -> list[str]:
    """Section 4 of BENCHMARKS.md (or its GPU part in section 6)."""
    sizes = ", ".join(f"{h}x{w}" for h, w in ev["sizes"])
    where = "GPU" if gpu else "CPU"
    # `make eval`'s EVAL_BATCH: one crop per forward on the CPU, 60 on a GPU (Makefile).
    default = 60 if gpu else 1
    lines = [] if gpu else ["## 4. Evaluation: batched vs one crop per forward, and against `caffe time`", ""]
    lines += [f"| scorer ({where}) | crops per forward | images / s | vs one crop per forward | "
              "`caffe time` limit, images / s | of the limit | repeats' shares |",
              "|---|---|---|---|---|---|---|"]
    for row in ev["rows"]:
        name = "one crop per forward (the original's way)" if row["batch"] == 1 else "batched"
        if row["batch"] == default:
            name += ", `make eval`'s default here"
        share = f"{100 * row['of_limit']:.3g}%"
        share = f"**{share}**" if row["batch"] == default else share
        low, high = min(row["repeat_ratios"]), max(row["repeat_ratios"])
        lines.append(f"| {name} | {row['batch']} | {row['images_per_s']:.4g} | {_x(row['speedup'])} | "
                     f"{row['limit_images_per_s']:.4g} | {share} | {100 * low:.3g}% to {100 * high:.3g}% |")
    lines += ["", _para(f"Batched ({ev['batched']['batch']} crops per forward) / one crop per",
                        f"forward: **{_x(ev['speedup'])}**."), ""]
    if gpu:
        return lines
    return lines + [_para(
        "How measured: `rankiqa.scoring.CropScorer` (what `tools.evaluate` runs; `batch=1` is its",
        "one-crop-per-forward mode) on the Shallow ranking deploy net,",
        f"{ev['images']} images of the generated set held in memory (height x width {sizes}),",
        f"{ev['crops']} random {CROP} crops each (the paper's protocol), the same crop positions",
        "for all; one warm-up image, then",
        f"{s.eval_repeats} repeat(s) alternating between the scorers, median. Image decoding is",
        "left out (the same for all). *Limit*: `caffe time` of the same deploy net at each batch size,",
        "right after each repeat of that scorer and with as many passes as the scorer ran forwards; its",
        "input layer is `pylayers.crops_data.CropsDataLayer`, which copies the scorer's own crops (those",
        f"of the first {min(ev['images'], EVAL_LIMIT_CROPS // ev['crops'])} image(s), cycling) into the",
        "input blob (on an `Input` blob `caffe time` would run the net on zeros, which is faster than on",
        "images); its average forward pass scores batch / crops images. *Of the limit*: the median over",
        "the repeats of the scorer's rate over the limit of the same repeat. `caffe time` also runs a",
        "backward pass, which on a deploy net (no loss) is skipped, so only its forward time is used."), ""]


def render_step_table(nets: list[dict[str, Any]]) -> list[str]:
    """The step-against-`caffe time` table of section 5 (and of section 6 on a GPU)."""
    lines = ["| net | batch | prefetch workers | BLAS threads | step (`solver.step`) | `caffe time` "
             "forward+backward | step / `caffe time` | rounds' ratios | solver's own work: gradients zeroed "
             "+ weights updated | step / (`caffe time` + solver's own work) | training images / s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for net in nets:
        threads = "-" if net["blas_threads"] is None else net["blas_threads"]
        lines.append(f"| {net['net']} | {net['batch']} | {net['workers']} | {threads} | "
                     f"{_ms(net['step_s'])} | {_ms(net['caffe_time_s'])} | **{_x(net['ratio'])}** | "
                     f"{_span(net['round_ratios'])} | {_ms(net['clear_s'])} + {_ms(net['update_s'])} | "
                     f"{_x(net['with_solver_work'])} | {net['images_per_s']:.4g} |")
    return lines + [""]


def _span(ratios: list[float]) -> str:
    """The range of per-round ratios, ``0.98x to 1.05x`` (one value when there was one round)."""
    low, high = min(ratios), max(ratios)
    return _x(low) if len(ratios) == 1 else f"{_x(low)} to {_x(high)}"


def render_steps(steps: dict[str, Any], s: Settings) -> list[str]:
    """Section 5 of BENCHMARKS.md: the step against `caffe time`, Caffe's per-layer tables, and the
    worker / BLAS thread measurements behind the defaults."""
    lines = ["## 5. Training step against `caffe time` of the same train net (CPU)", ""]
    lines += render_step_table(steps["nets"])
    for net in steps["nets"]:
        total = sum(layer["forward_s"] + layer["backward_s"] for layer in net["layers"])
        lines += [f"`caffe time` per layer, {net['net']} at batch {net['batch']} (mean over the rounds; the",
                  f"layers' sum {_ms(total)}, the pass {_ms(net['caffe_time_mean_s'])}):", "",
                  "| layer | forward | backward | share of the pass |", "|---|---|---|---|"]
        for layer in net["layers"]:
            both = layer["forward_s"] + layer["backward_s"]
            lines.append(f"| {layer['layer']} | {_ms(layer['forward_s'])} | {_ms(layer['backward_s'])} | "
                         f"{100 * both / total:.3g}% |" if total > 0 else
                         f"| {layer['layer']} | {_ms(layer['forward_s'])} | {_ms(layer['backward_s'])} | - |")
        lines.append("")
    choices = steps["choices"]
    if choices:
        default = steps["default"]
        fastest = min(choices, key=lambda row: row["step_s"])
        lines += [_para(f"Prefetch workers and OpenBLAS threads, Shallow at batch {choices[0]['batch']}",
                        f"({steps['cores']} usable cores). The defaults: {default['workers']} workers (the",
                        "prototxt's `workers`) and BLAS threads = usable cores - max(workers, 1), at least 1",
                        f"(`rankiqa.blas.training_threads`: {default['blas_threads']} here, set by",
                        "`tools/train.py`; OpenBLAS alone would start",
                        f"{steps['openblas_default']}):"), "",
                  "| prefetch workers | BLAS threads | step | `caffe time` | step / `caffe time` | "
                  "rounds' ratios | training images / s | |", "|---|---|---|---|---|---|---|---|"]
        for row in choices:
            marks = [word for word, hit in (("default", row["workers"] == default["workers"]
                                             and row["blas_threads"] == default["blas_threads"]),
                                            ("fastest step", row is fastest)) if hit]
            threads = row["blas_threads"]
            lines.append(f"| {row['workers']} | {threads} | {_ms(row['step_s'])} | "
                         f"{_ms(row['caffe_time_s'])} | {_x(row['ratio'])} | {_span(row['round_ratios'])} | "
                         f"{row['images_per_s']:.4g} | {', '.join(marks)} |")
        lines.append("")
    lines += [_para(
        "How measured: for each net, the run folder that `make train_rank` writes",
        "(`rankiqa.runprep.prepare_rank`: its `train.prototxt` and `solver.prototxt`; TID2013 style, one",
        "image per group, the driver's defaults) on the PNG files of the generated set; VGG-16 on levels 0",
        "and 1 only, one type per batch, which makes its batch of 2. The solver of that folder takes",
        f"{s.train_warmup} untimed steps, then {s.step_rounds} round(s) alternate `caffe time -model",
        "train.prototxt` (Caffe's own tool: the same net, our Python data and loss layers included, in a",
        "child process; its per-pass times, logged to the millisecond) and as many timed",
        "`solver.step(1)` calls, each followed by reading the loss as the driver does; passes per round:",
        ", ".join(f"{net} {count}" for net, count in s.step_iters) + ".",
        "Reported: the median step and the median `caffe time` pass over all rounds; step / `caffe",
        "time`: the median over the rounds of each round's ratio (the two measured side by side), and",
        "their range (how much the load moved them). Both sides run with the same BLAS threads: set through",
        "`openblas_set_num_threads` here, `OPENBLAS_NUM_THREADS` for `caffe time`. `caffe time` runs",
        "forward and backward only: the step also zeroes the gradients and updates the weights (SGD with",
        "momentum and weight decay), each timed alone afterwards (`net.clear_param_diffs()`,",
        "`solver.apply_update()`; medians), and the last ratio compares the step with `caffe time`'s",
        "median pass plus that work. The workers / threads table repeats the rounds for",
        f"the Shallow net ({s.choice_rounds} round(s) per row, the rows alternating) with `--workers`",
        "set."), ""]
    return lines


#: The report of a real GPU run of tools/gpu_check.py, committed by whoever ran it (its Markdown snippet).
GPU_CHECK_RECORD = REPO_ROOT / "docs" / "bench" / "gpu_check.md"


def gpu_check_section() -> list[str]:
    """The GPU check (VGG-16 on a GPU, against `caffe time`): its recorded report, or the plain statement
    that there is none. Never estimated."""
    lines = [f"{GPU_CHECK_HEADING}, our Python layers against `caffe time`)", ""]
    if GPU_CHECK_RECORD.is_file():
        where = GPU_CHECK_RECORD.relative_to(GPU_CHECK_RECORD.parents[2])
        return lines + [f"From `{where}` (a run of `tools/gpu_check.py` on a GPU):", "",
                        GPU_CHECK_RECORD.read_text(encoding="utf-8"), ""]
    return lines + [_para(
        "**Not measured: no run of the GPU check on a GPU is recorded** (there is no",
        "`docs/bench/gpu_check.md`). It is prepared: `make gpu-bundle` packs the CUDA build for a GPU",
        "machine without network and `gpu/bundle_run.sh` runs the check there (or",
        "`make gpu-check CUDA=1` on any GPU machine); its Markdown report, kept by",
        "`python -m tools.bench --record-gpu-check gpu_check.md`, is shown here."), ""]


GPU_CHECK_HEADING = "### GPU check (VGG-16"


def record_gpu_check(report: Path, benchmarks: Path) -> None:
    """Keep the Markdown report of a GPU run of tools/gpu_check.py as ``docs/bench/gpu_check.md`` and
    rewrite the GPU-check part of ``benchmarks`` to show it, without rerunning the benchmarks."""
    text = report.read_text(encoding="utf-8") if report.is_file() else None
    if text is None:
        raise InputError("no such report (the gpu_check.md of a GPU run)", report)
    # tools/gpu_check.py names the device ("(device 0)") only in GPU mode, and the build mode beside it.
    on_gpu = re.search(r"\(device \d+\); Caffe build: cuda", text)
    if not text.startswith("## GPU check") or "CPU smoke run" in text or on_gpu is None:
        raise InputError("not the report of a GPU run of tools/gpu_check.py", report)
    current = benchmarks.read_text(encoding="utf-8") if benchmarks.is_file() else ""
    if current.count(GPU_CHECK_HEADING) != 1:
        raise InputError(f"expected one '{GPU_CHECK_HEADING}...' section; regenerate it with make bench",
                         benchmarks)
    atomic_write_text(GPU_CHECK_RECORD, text)
    head = current[:current.index(GPU_CHECK_HEADING)]
    atomic_write_text(benchmarks, head + "\n".join(gpu_check_section()))


# ---------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="Markdown report to write")
    parser.add_argument("--gpu", type=int, default=-1, help="GPU id for section 5; -1 (default): CPU only")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (about a minute; for the tests)")
    parser.add_argument("--plots-dir", type=Path, default=None,
                        help="where the PNG plots go (default: docs/bench beside --out)")
    parser.add_argument("--work-dir", type=Path, default=Path("data/bench"),
                        help="generated ranking set and resolved nets (default data/bench; the ranking set "
                             "is reused)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record-gpu-check", type=Path, metavar="GPU_CHECK_MD",
                        help="only keep this gpu_check.md of a GPU run as docs/bench/gpu_check.md and show "
                             "it in --out's GPU section (no benchmarks are run)")
    return parser


@cli_main
def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    settings = QUICK if args.quick else FULL
    out: Path = args.out
    plots_dir: Path = args.plots_dir if args.plots_dir is not None else out.parent / "docs" / "bench"
    if out.exists() and out.is_dir():
        raise InputError("--out is a folder; give the Markdown file to write", out)
    if args.work_dir.exists() and not args.work_dir.is_dir():
        raise InputError("--work-dir exists and is not a folder", args.work_dir)
    if args.record_gpu_check is not None:
        record_gpu_check(args.record_gpu_check, out)
        print(f"recorded {args.record_gpu_check} as {GPU_CHECK_RECORD}; updated {out}", file=sys.stderr)
        return 0

    caffe = caffe_io.import_caffe()
    load_before = os.getloadavg()
    loads: list[float] = []  # the 1-minute load average at the start of every section

    def say(text: str) -> None:
        loads.append(os.getloadavg()[0])
        print(f"[bench {time.perf_counter() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    say("generating the ranking set")
    data_dir = make_rankset(args.work_dir, settings, args.seed)
    run_dir = args.work_dir / ("nets_quick" if args.quick else "nets")
    say("1. loss layer")
    loss = bench_loss(settings, args.seed)
    scaling = loss_scaling(settings, args.seed)
    say("3. data layer (and the loss layer's share of an iteration)")
    data = bench_data(data_dir, run_dir, settings, args.seed, -1)
    say("2. efficient vs two-branch Siamese")
    siamese = bench_siamese(data_dir, run_dir, settings, args.seed, -1)
    say("4. evaluation")
    evaluation = bench_eval(data_dir, run_dir, settings, args.seed, -1)
    say("5. training step against `caffe time`")
    steps = bench_steps(data_dir, run_dir, settings, -1)
    gpu_ok, reason = gpu_status(caffe, args.gpu)
    gpu = None
    if gpu_ok:
        say("6. GPU")
        gpu = {"device": args.gpu, "name": gpu_name(args.gpu),
               "steps": bench_steps(data_dir, run_dir, settings, args.gpu),
               "eval": bench_eval(data_dir, run_dir, settings, args.seed, args.gpu)}
        caffe.set_mode_cpu()
    say("online ranked batches against PNG files")
    online = bench_online(data_dir, settings, args.seed)
    plots_dir.mkdir(parents=True, exist_ok=True)
    plot_curves(siamese, plots_dir / "siamese_test_loss.png")
    plot_loss_scaling(scaling, plots_dir / "loss_scaling.png")
    mode = "CPU (sections 1-5)" + (", GPU (section 6)" if gpu else "")
    command = "python -m tools.bench " + " ".join(sys.argv[1:] if argv is None else argv)
    report = {
        "command": command.strip(),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "quick": args.quick, "settings": settings, "machine": machine_info(caffe, mode),
        "load_before": load_before, "load_after": os.getloadavg(), "loads": loads, "loss": loss,
        "loss_scaling": scaling, "data": data, "siamese": siamese, "eval": evaluation, "steps": steps,
        "gpu": gpu, "gpu_reason": reason, "online": online, "wall_s": time.perf_counter() - started,
    }
    plots_rel = os.path.relpath(plots_dir.resolve(), out.resolve().parent).replace(os.sep, "/")
    atomic_write_text(out, render(report, plots_rel))
    say(f"wrote {out} and the plots in {plots_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
