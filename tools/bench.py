"""``make bench``: measured speed ratios of the RankIQA pipeline, written to ``BENCHMARKS.md`` (with plots).

    python -m tools.bench --out BENCHMARKS.md [--gpu -1] [--quick] [--plots-dir docs/bench]
        [--work-dir data/bench] [--seed 0]

Every figure is a ratio of two things measured side by side in the same run, on the same machine (named in
the report with its load average, because a shared machine slows both sides):

1. Loss layer: forward+backward of the vectorised all-pairs hinge (``pylayers.rank_loss.all_pairs_hinge``)
   against the Python pair loop (``all_pairs_hinge_loop``, the original's approach), for 9x5x1, 9x5x4 and
   4x6x8 batches (types x levels x images); and the loss layer's share of one Shallow training iteration.
2. Efficient vs standard Siamese (Shallow net): time per training iteration and ranking pairs per second of
   the efficient net (one forward, all pairs of each group) against the two-branch baseline with the same
   number of images per iteration; and the test ranking loss against iterations for both (a plot).
3. Data layer: images per second and the share of each training iteration spent waiting for data, with and
   without prefetch workers, from PNG files and from the LMDB.
4. Evaluation: images per second of batched crop scoring against one crop per forward pass.
5. GPU: only with ``--gpu N`` (N >= 0) on a CUDA build of Caffe; otherwise the section says that no GPU was
   available. GPU figures are never estimated.

Timing: ``time.perf_counter``, warm-up runs first, then several repeats, and the median. The ranking data
come from ``data_prep.make_ranks.generate`` (a small TID2013-style set of the embedded default photographs,
cached under ``--work-dir``). ``--quick`` is a tiny version for the tests (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Before pycaffe loads (through the layers below): glog reads the level once, and its INFO lines for
# every net built here would bury the progress lines. GLOG_minloglevel=0 shows them again.
os.environ.setdefault("GLOG_minloglevel", "2")

from pylayers.pair_data import PairDataLayer
from pylayers.rank_data import RankDataLayer
from pylayers.rank_loss import AllPairsHingeLossLayer, all_pairs_hinge, all_pairs_hinge_loop, pair_count
from rankiqa import caffe_io
from rankiqa.errors import InputError, cli_main
from rankiqa.fsutil import atomic_path, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
SHALLOW_DIR = REPO_ROOT / "prototxts" / "shallow"
RANK_SOLVER = REPO_ROOT / "prototxts" / "solvers" / "rank_tid2013.prototxt"

#: Nine distortion types that are quick to generate (9 = the original's types per TID-style batch).
BENCH_TYPES = ("GN", "GNC", "IN", "GB", "JPEG", "MSH", "MSL", "CCL", "CCH")
#: Batch layouts of section 1: (types, levels, images per group).
LOSS_LAYOUTS = ((9, 5, 1), (9, 5, 4), (4, 6, 8))
CROP = 227  # the Shallow net's input
MARGIN = 10.0


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run (the full run or ``--quick``)."""

    refs: int                # pristine references in the generated ranking set
    loss_repeats: int        # repeats of the section-1 numpy timings
    train_warmup: int        # solver steps before timing (section 3)
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


FULL = Settings(refs=5, loss_repeats=9, train_warmup=3, train_steps=10, curve_iters=60, curve_test_every=5,
                test_batches=4, siamese_types=8, data_types=9, data_batches=8, data_repeats=3, eval_images=8,
                eval_crops=30, eval_batch=60, eval_repeats=3, base_lr=None)
QUICK = Settings(refs=3, loss_repeats=3, train_warmup=1, train_steps=2, curve_iters=4, curve_test_every=2,
                 test_batches=1, siamese_types=2, data_types=2, data_batches=3, data_repeats=1, eval_images=2,
                 eval_crops=4, eval_batch=8, eval_repeats=1, base_lr=None)


# ---------------------------------------------------------------------------------------------------------
# Timed layers: the real data and loss layers, with the duration of every forward/backward recorded.
# Caffe imports them from this module by name ("tools.bench"); when this file runs as ``__main__`` that is
# a second module object, so the driver always reads TIMINGS through importlib (see ``timings()``).

TIMINGS: dict[str, list[float]] = {"data": [], "loss_forward": [], "loss_backward": []}
DATA_LAYERS: list[Any] = []  # every timed data layer created, so that its workers can be stopped


class _TimedDataMixin:
    """Records how long each forward of a data layer (the solver's wait for a batch) takes."""

    def setup(self, bottom, top) -> None:
        super().setup(bottom, top)
        DATA_LAYERS.append(self)

    def forward(self, bottom, top) -> None:
        start = time.perf_counter()
        super().forward(bottom, top)
        TIMINGS["data"].append(time.perf_counter() - start)


class TimedRankDataLayer(_TimedDataMixin, RankDataLayer):
    """``RankDataLayer`` with its wait for data timed."""


class TimedPairDataLayer(_TimedDataMixin, PairDataLayer):
    """``PairDataLayer`` with its wait for data timed."""


class TimedAllPairsHingeLossLayer(AllPairsHingeLossLayer):
    """``AllPairsHingeLossLayer`` that records its forward and backward durations."""

    def forward(self, bottom, top) -> None:
        start = time.perf_counter()
        super().forward(bottom, top)
        TIMINGS["loss_forward"].append(time.perf_counter() - start)

    def backward(self, top, propagate_down, bottom) -> None:
        start = time.perf_counter()
        super().backward(top, propagate_down, bottom)
        TIMINGS["loss_backward"].append(time.perf_counter() - start)


def _layer_module() -> Any:
    """The ``tools.bench`` module object that Caffe's Python layers live in."""
    return importlib.import_module("tools.bench")


def timings() -> dict[str, list[float]]:
    """The durations recorded by the timed layers (shared with Caffe's import of this module)."""
    return _layer_module().TIMINGS


def clear_timings() -> None:
    """Forget the recorded durations (before a timed stretch)."""
    for values in timings().values():
        values.clear()


def stop_data_workers() -> None:
    """Stop the prefetch workers of every timed data layer, so that none keeps loading batches in the
    background (and steals CPU) while the next configuration is timed."""
    layers = _layer_module().DATA_LAYERS
    for layer in layers:
        prefetcher = getattr(layer, "prefetcher", None)
        if prefetcher is not None:
            prefetcher.close()
    layers.clear()


# ---------------------------------------------------------------------------------------------------------
# Timing helpers


def median(values: list[float]) -> float:
    """The median, as a plain float."""
    return float(statistics.median(values))


def time_calls(func: Callable[[], Any], repeats: int, warmup: int = 1, min_seconds: float = 0.02) -> float:
    """Median seconds per call of ``func``: ``warmup`` untimed calls, then ``repeats`` timed rounds.

    A round runs ``func`` as many times as it takes for about ``min_seconds`` (calibrated once), so that
    microsecond-scale calls are not lost in the timer's resolution.
    """
    for _ in range(warmup):
        func()
    start = time.perf_counter()
    func()
    single = max(time.perf_counter() - start, 1e-7)
    number = max(1, int(math.ceil(min_seconds / single)))
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            func()
        rounds.append((time.perf_counter() - start) / number)
    return median(rounds)


# ---------------------------------------------------------------------------------------------------------
# Machine description


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or what ``platform`` knows)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def blas_threads() -> str:
    """How many threads OpenBLAS (Caffe's CPU BLAS here) may use, and where that comes from."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var):
            return f"{os.environ[var]} ({var})"
    return f"{os.cpu_count()} (OpenBLAS default: one per core; OPENBLAS_NUM_THREADS unset)"


def machine_info(caffe: Any, mode: str) -> dict[str, str]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "CPU": cpu_model(),
        "cores usable": str(cores),
        "Caffe mode": mode,
        "Caffe build": caffe_io.build_mode(caffe),
        "BLAS threads": blas_threads(),
        "Python": platform.python_version(),
        "NumPy": np.__version__,
        "OS": platform.platform(),
    }


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


def bench_loss(settings: Settings, seed: int) -> list[dict[str, Any]]:
    """Seconds per forward+backward of the vectorised loss and of the pair loop, per batch layout."""
    rng = np.random.default_rng(seed)
    rows = []
    for types, levels, images in LOSS_LAYOUTS:
        level_ids, group_ids = layout_arrays(types, levels, images)
        # Scores in the margin's range, so that about half of the pairs are active (both branches work).
        scores = rng.normal(0.0, MARGIN, size=level_ids.size).astype(np.float32)
        loss_v, grad_v = all_pairs_hinge(scores, level_ids, group_ids, MARGIN)
        loss_l, grad_l = all_pairs_hinge_loop(scores, level_ids, group_ids, MARGIN)
        if not (np.isclose(loss_v, loss_l) and np.allclose(grad_v, grad_l)):
            raise RuntimeError(f"vectorised and loop losses disagree on the {types}x{levels}x{images} batch")
        vec = time_calls(lambda s=scores, lv=level_ids, g=group_ids: all_pairs_hinge(s, lv, g, MARGIN),
                         settings.loss_repeats)
        loop = time_calls(lambda s=scores, lv=level_ids, g=group_ids: all_pairs_hinge_loop(s, lv, g, MARGIN),
                          settings.loss_repeats, min_seconds=0.05)
        pairs = pair_count(level_ids, group_ids)
        rows.append({"layout": f"{types}x{levels}x{images}", "n": int(level_ids.size), "pairs": pairs,
                     "vectorised_s": vec, "loop_s": loop, "speedup": loop / vec})
    return rows


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
    """A Caffe SGD solver for ``spec``, with the timed layers of this module swapped in."""
    from tools import train

    caffe = train.import_caffe()
    source = SHALLOW_DIR / ("rank_train.prototxt" if spec.kind == "efficient" else "pair_train.prototxt")
    levels, _splits = train.manifest_levels(data_dir / "manifest.csv")
    net_param = train.configure_rank_net(train.read_net_param(source), source, data_dir,
                                         types_per_batch=spec.types_per_batch, images_per_group=1,
                                         levels=levels, seed=seed, workers=spec.workers, direction="quality")
    # Only the training phase is timed: drop the test-phase data layer (no test net, no idle workers).
    kept = [layer for layer in net_param.layer if train.layer_phase(layer) != "test"]
    del net_param.layer[:]
    net_param.layer.extend(kept)
    for layer in net_param.layer:
        if layer.type != "Python":
            continue
        module = layer.python_param.module.split(".")[-1]
        params = train.get_param_str(layer, source)
        if module in ("rank_data", "pair_data"):
            if not spec.lmdb:
                params.pop("lmdb", None)
            elif "lmdb" not in params:
                raise InputError("no images.lmdb beside the manifest", data_dir)
            if module == "pair_data":
                params["batch_size"] = spec.pairs
            train.set_param_str(layer, params)
            layer.python_param.layer = "TimedRankDataLayer" if module == "rank_data" else "TimedPairDataLayer"
        elif layer.python_param.layer == "AllPairsHingeLossLayer":
            layer.python_param.layer = "TimedAllPairsHingeLossLayer"
        else:
            continue
        layer.python_param.module = "tools.bench"
    run_dir.mkdir(parents=True, exist_ok=True)
    net_path = run_dir / f"{spec.name}_train.prototxt"
    train.write_text_proto(net_param, net_path, f"tools/bench.py: {spec.name}")
    solver_param = train.configure_solver(train.read_solver_param(RANK_SOLVER), net_path,
                                          run_dir / "snapshots" / spec.name, max_iter=100000,
                                          base_lr=settings.base_lr, snapshot=0, seed=seed, device=device,
                                          test_iter=None)
    solver_path = run_dir / f"{spec.name}_solver.prototxt"
    train.write_text_proto(solver_param, solver_path, f"tools/bench.py: {spec.name}")
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
                recorded = timings()
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
        from pylayers.prefetch import ImageSource
        from pylayers.rank_data import RankBatchBuilder, read_manifest
        from tools import train

        caffe = train.import_caffe()
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
            mask = (batch["group"][:, None] == batch["group"][None, :]) & \
                (batch["label"][:, None] < batch["label"][None, :])
            right += int((scores[:, None] > scores[None, :])[mask].sum())
            total += int(mask.sum())
        return float(np.mean(losses)), right / max(total, 1)


def bench_siamese(data_dir: Path, run_dir: Path, settings: Settings, seed: int, device: int,
                  curve: bool = True) -> dict[str, Any]:
    """Train the efficient and the two-branch Shallow net on the same data; time and test both.

    Both solvers live side by side and train in alternating blocks of ``curve_test_every`` iterations
    (tested between blocks), so that a change of the machine's load during the run hits both alike.
    """
    from pylayers.rank_loss import pair_count
    from tools import train

    levels = 5
    images = settings.siamese_types * levels
    specs = [NetSpec("siamese_efficient", "efficient", types_per_batch=settings.siamese_types),
             NetSpec("siamese_pair", "pair", pairs=images // 2)]
    tester = HeldOutRanking(data_dir, settings, seed) if curve else None
    base_lr = settings.base_lr
    if base_lr is None:
        base_lr = train.read_solver_param(RANK_SOLVER).base_lr
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


def bench_eval(data_dir: Path, settings: Settings, seed: int, device: int) -> dict[str, Any]:
    """Images per second of crop scoring: ``eval_batch`` crops per forward against one crop per forward."""
    import cv2

    from pylayers.rank_data import read_manifest
    from tools import scoring, train

    caffe = train.import_caffe()
    if device >= 0:
        caffe.set_mode_gpu()
        caffe.set_device(device)
    else:
        caffe.set_mode_cpu()
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
    rates: dict[int, list[float]] = {batch: [] for batch in batches}
    # Repeats alternate between the scorers, so that a change of load hits all of them alike.
    for _ in range(settings.eval_repeats):
        for batch, scorer in scorers.items():
            start = time.perf_counter()
            scored = list(scorer.score((i, i, image) for i, image in enumerate(images)))
            rates[batch].append(len(scored) / (time.perf_counter() - start))
    one_crop = median(rates[1])
    rows = [{"batch": batch, "images_per_s": median(rates[batch]), "speedup": median(rates[batch]) / one_crop}
            for batch in batches]
    return {"images": len(images), "crops": settings.eval_crops,
            "sizes": sorted({im.shape[:2] for im in images}), "rows": rows,
            "batched": rows[0], "one_crop": rows[-1], "speedup": rows[0]["speedup"]}


# ---------------------------------------------------------------------------------------------------------
# Section 5: GPU


def gpu_status(caffe: Any, gpu: int) -> tuple[bool, str]:
    """Whether the GPU figures can be measured, and why not when they cannot."""
    from tools import train

    if gpu < 0:
        return False, ("no GPU was requested (`--gpu -1`; `make bench` passes GPU=0 only when a CUDA build "
                       "is selected and `nvidia-smi` answers)")
    if caffe_io.build_mode(caffe) == "cpu":
        return False, f"`--gpu {gpu}` was given, but this Caffe build is CPU-only (BUILD_INFO mode=cpu)"
    # Probed in a child process: a CPU-only build or a missing device aborts the process (glog FATAL).
    if not train.gpu_usable(gpu):
        return False, (f"`--gpu {gpu}` was given, but Caffe could not use that device (probed in a child "
                       "process)")
    return True, f"GPU {gpu}"


def gpu_name(gpu: int) -> str:
    """The GPU's name from nvidia-smi, for the report."""
    import subprocess

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", str(gpu)],
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        if out:
            return out
    return "unknown (nvidia-smi did not answer)"


# ---------------------------------------------------------------------------------------------------------
# Report


def _ms(seconds: float) -> str:
    """A duration in s, ms or µs, three significant digits."""
    if seconds >= 1.0:
        return f"{seconds:.3g} s"
    return f"{seconds * 1000:.3g} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.3g} µs"


def _x(ratio: float) -> str:
    """A ratio as ``1.23x``."""
    return f"{ratio:.3g}x"


def _para(*parts: str) -> str:
    """One Markdown paragraph from pieces (kept short in the source)."""
    return " ".join(part.strip() for part in parts)


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
              f"| load average (1/5/15 min) after | {after[0]:.2f} / {after[1]:.2f} / {after[2]:.2f} |", ""]
    cores = os.cpu_count() or 1
    peak = max(before[0], after[0])
    if peak > 0.5 * cores:
        lines += [_para("**The machine was shared during this run** (load average up to",
                        f"{peak:.1f} on {cores} cores): absolute times are slower than on an idle machine;",
                        "both sides of each ratio ran under the same load."), ""]
    lines += [_para("Data: a TID2013-style ranking set generated by `data_prep.make_ranks.generate` from the",
                    f"first {s.refs} embedded default photographs (scikit-image),",
                    f"{len(BENCH_TYPES)} distortion types ({', '.join(BENCH_TYPES)}) x 4 levels + pristine,",
                    "as PNG files and as LMDB;",
                    f"Shallow net, crop {CROP}, Caffe on the CPU."), ""]

    # 1. loss layer
    lines += ["## 1. Loss layer: vectorised all-pairs hinge vs Python pair loop", "",
              "| batch (types x levels x images) | N | pairs | vectorised | pair loop | speed-up |",
              "|---|---|---|---|---|---|"]
    for row in report["loss"]:
        lines.append(f"| {row['layout']} | {row['n']} | {row['pairs']} | {_ms(row['vectorised_s'])} | "
                     f"{_ms(row['loop_s'])} | {_x(row['speedup'])} |")
    share = report["data"][1]  # PNG files with prefetch: the default training configuration
    loop45 = report["loss"][0]["loop_s"]
    lines += ["", _para(
        f"Share of one Shallow training iteration ({s.data_types}x5x1 = {share['batch']} images, PNG files,",
        "2 prefetch workers): the loss layer's forward+backward inside Caffe took",
        f"{_ms(share['loss_layer_s'])} of a {_ms(share['iteration_s'])} iteration",
        f"(**{100 * share['loss_layer_s'] / share['iteration_s']:.2g}%**); the pair loop's {_ms(loop45)}",
        f"would be {100 * loop45 / share['iteration_s']:.2g}% of it."), "", _para(
        "How measured: `pylayers.rank_loss.all_pairs_hinge` (numpy; one call computes loss and gradient,",
        "i.e. forward + backward) and `all_pairs_hinge_loop` (the reference Python loop over every ordered",
        "pair of the batch) on the same random scores, checked equal first; one warm-up call, then",
        f"{s.loss_repeats} rounds of as many calls as fill 20-50 ms; median per call. The in-Caffe share",
        "comes from a timed subclass of `AllPairsHingeLossLayer` (perf_counter around forward and backward)",
        f"in the real Shallow training net: median over {s.train_steps} iterations after {s.train_warmup}",
        "warm-up iterations."), ""]

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

    # 4. evaluation
    ev = report["eval"]
    sizes = ", ".join(f"{h}x{w}" for h, w in ev["sizes"])
    lines += ["## 4. Evaluation: batched vs one crop per forward", "",
              "| scorer | crops per forward | images / s | vs one crop per forward |", "|---|---|---|---|"]
    for row in ev["rows"]:
        name = "one crop per forward (the original's way)" if row["batch"] == 1 else "batched"
        lines.append(f"| {name} | {row['batch']} | {row['images_per_s']:.4g} | {_x(row['speedup'])} |")
    default = ", the default `EVAL_BATCH`" if ev["batched"]["batch"] == 60 else ""
    lines += ["", _para(f"Batched ({ev['batched']['batch']} crops per forward{default}) / one crop per",
                        f"forward: **{_x(ev['speedup'])}**."), "", _para(
                  "How measured: `tools.scoring.CropScorer` (what `tools.evaluate` runs; `batch=1` is its",
                  "one-crop-per-forward mode) on the Shallow ranking deploy net,",
                  f"{ev['images']} images of the generated set held in memory (height x width {sizes}),",
                  f"{ev['crops']} random {CROP} crops each (the paper's protocol), the same crop positions",
                  "for all; one warm-up image, then",
                  f"{s.eval_repeats} repeat(s) alternating between the scorers, median. Image decoding is",
                  "left out (the same for all)."),
              ""]

    # 5. GPU
    lines += ["## 5. GPU", ""]
    gpu = report["gpu"]
    if gpu is None:
        lines += [_para(f"**No GPU was available in this run**: {report['gpu_reason']}. No GPU figures are",
                        "reported and none are estimated. (The VGG-16 comparison against `caffe time`",
                        "belongs to the GPU check of issue 8.)"), ""]
    else:
        g_sia, g_eval = gpu["siamese"], gpu["eval"]
        g_eff, g_pair = g_sia["nets"]["efficient"], g_sia["nets"]["pair"]
        lines += [f"Device: {gpu['name']} (Caffe GPU mode, device {gpu['device']}).", "",
                  "| figure | efficient / batched | baseline / one crop | ratio |", "|---|---|---|---|",
                  f"| Shallow time / iteration | {_ms(g_eff['iteration_s'])} | "
                  f"{_ms(g_pair['iteration_s'])} | {_x(g_sia['time_ratio'])} |",
                  f"| Shallow ranking pairs / s | {g_eff['pairs_per_s']:.4g} | {g_pair['pairs_per_s']:.4g} | "
                  f"{_x(g_sia['pairs_ratio'])} |",
                  f"| evaluation images / s | {g_eval['batched']['images_per_s']:.4g} | "
                  f"{g_eval['one_crop']['images_per_s']:.4g} | {_x(g_eval['speedup'])} |", "",
                  "How measured: as sections 2 and 4, in Caffe's GPU mode (timing only, no test curve).", ""]
    lines += gpu_check_section()
    return "\n".join(lines)


#: The report of a real GPU run of tools/gpu_check.py, committed by whoever ran it (its Markdown snippet).
GPU_CHECK_RECORD = Path(__file__).resolve().parents[1] / "docs" / "bench" / "gpu_check.md"


def gpu_check_section() -> list[str]:
    """The GPU check of issue 8 (VGG-16 on a GPU, against `caffe time`): its recorded report, or the plain
    statement that there is none. Never estimated."""
    lines = [f"{GPU_CHECK_HEADING}, our Python layers against `caffe time`)", ""]
    if GPU_CHECK_RECORD.is_file():
        where = GPU_CHECK_RECORD.relative_to(GPU_CHECK_RECORD.parents[2])
        return lines + [f"From `{where}` (a run of `tools/gpu_check.py` on a GPU):", "",
                        GPU_CHECK_RECORD.read_text(encoding="utf-8"), ""]
    return lines + [_para(
        "**Not measured: no run of the GPU check on a GPU is recorded** (there is no",
        "`docs/bench/gpu_check.md`). It is prepared: `make gpu-bundle` packs the CUDA build for the",
        "`device` tool's GPU machine and `tools/gpu_bundle_run.sh` runs the check there (or",
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
                        help="generated ranking set and resolved nets (default data/bench; reused)")
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
    from tools import train

    caffe = train.import_caffe()
    load_before = os.getloadavg()

    def say(text: str) -> None:
        print(f"[bench {time.perf_counter() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    say("generating the ranking set")
    data_dir = make_rankset(args.work_dir, settings, args.seed)
    run_dir = args.work_dir / ("nets_quick" if args.quick else "nets")
    say("1. loss layer")
    loss = bench_loss(settings, args.seed)
    say("3. data layer (and the loss layer's share of an iteration)")
    data = bench_data(data_dir, run_dir, settings, args.seed, -1)
    say("2. efficient vs two-branch Siamese")
    siamese = bench_siamese(data_dir, run_dir, settings, args.seed, -1)
    say("4. evaluation")
    evaluation = bench_eval(data_dir, settings, args.seed, -1)
    gpu_ok, reason = gpu_status(caffe, args.gpu)
    gpu = None
    if gpu_ok:
        say("5. GPU")
        gpu = {"device": args.gpu, "name": gpu_name(args.gpu),
               "siamese": bench_siamese(data_dir, run_dir, settings, args.seed, args.gpu, curve=False),
               "eval": bench_eval(data_dir, settings, args.seed, args.gpu)}
        caffe.set_mode_cpu()
    plots_dir.mkdir(parents=True, exist_ok=True)
    plot_curves(siamese, plots_dir / "siamese_test_loss.png")
    mode = "CPU (sections 1-4)" + (", GPU (section 5)" if gpu else "")
    command = "python -m tools.bench " + " ".join(sys.argv[1:] if argv is None else argv)
    report = {
        "command": command.strip(),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "quick": args.quick, "settings": settings, "machine": machine_info(caffe, mode),
        "load_before": load_before, "load_after": os.getloadavg(), "loss": loss, "data": data,
        "siamese": siamese, "eval": evaluation, "gpu": gpu, "gpu_reason": reason,
        "wall_s": time.perf_counter() - started,
    }
    plots_rel = os.path.relpath(plots_dir.resolve(), out.resolve().parent).replace(os.sep, "/")
    atomic_write_text(out, render(report, plots_rel))
    say(f"wrote {out} and {plots_dir / 'siamese_test_loss.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
