"""The GPU check: prove that CUDA Caffe trains with our Python layers, in one prepared command.

    python -m tools.gpu_check --out gpu_check.json [--gpu 0] [--cpu-smoke] [--work-dir /tmp/gpu_check]
        [--steps train,compare,time,nccl] [--tolerance 1e-4] [--seed 0]

Steps (each recorded in the JSON; a failed step does not stop the others, but makes the exit status 1):

0. ``device``: the device (``caffe.set_device`` + ``set_mode_gpu``, probed in a child process first because
   a CPU-only build or a missing device aborts the process), ``nvidia-smi -L``, ``caffe device_query`` and
   the ``BUILD_INFO`` file of the imported pycaffe's build.
1. ``train``: a tiny ranking set (``data_prep.make_ranks.generate``: a few default photographs, a few fast
   distortion types), then a few SGD iterations of the VGG-16 ranking net (random init: no ImageNet weights
   here) with ``RankDataLayer`` and ``AllPairsHingeLossLayer`` on one FIXED batch
   (``pylayers.fixed_data.FixedRankDataLayer`` repeats the data layer's first batch). Passes when every
   loss is finite and the last is below the first.
2. ``compare``: the Shallow ranking deploy net with identical weights (Caffe's fillers, seeded, saved once)
   run on the CPU and on the GPU on the same input; passes when max |CPU - GPU| of ``fc8_m`` < tolerance.
3. ``time``: VGG-16 forward+backward per iteration, (a) in pycaffe with our Python data and loss layers
   (the timed subclasses of ``pylayers.timed``, prefetch workers as in training), (b) in pycaffe with
   Caffe's own layers only (``Input`` + ``EuclideanLoss``, same trunk), (c) ``caffe time`` on net (b).

4. ``nccl``: a few iterations of ``tools/train.py rank --gpus <device>``: Caffe's multi-GPU path (NCCL, a
   process per GPU) with one rank, as one GPU allows; finite losses and the final snapshot.

``--cpu-smoke`` runs the same code on the CPU with tiny sizes (the Shallow net in steps 1, 3 and 4, CPU vs
CPU in step 2, ``--gpu -1`` instead of ``--gpus`` in step 4), so that the script is tested where there is no
GPU. ``--gpu -1`` without ``--cpu-smoke`` runs the full sizes on the CPU (slow: a CPU reference, e.g. to
check the fixed-batch learning rate).

Outputs: the JSON (``--out``, rewritten atomically after every step, so a run cut short keeps what it
measured) and a Markdown snippet for BENCHMARKS.md beside it (same name, ``.md``). Exit status: 0 all
checks passed, 1 a check failed, 2 bad command line (``rankiqa.errors.cli_main``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

# Before pycaffe loads (through pylayers): glog reads the level once.
os.environ.setdefault("GLOG_minloglevel", "2")

from pylayers import timed as timed_layers
from rankiqa import caffe_io, logparse, measure
from rankiqa.caffe_time import caffe_binary, caffe_time, glog_env, run_command
from rankiqa.errors import InputError, cli_main
from rankiqa.fsutil import atomic_write_text
from rankiqa.paths import PROTOTXT_DIR, REPO_ROOT

PROTOTXTS = PROTOTXT_DIR
RANK_SOLVER = PROTOTXTS / "solvers" / "rank_tid2013.prototxt"
#: Distortion types that are quick to generate (a subset of tools.bench's).
CHECK_TYPES = ("GN", "GB", "JPEG")
STEPS = ("train", "compare", "time", "nccl")
SCORE_BLOB = "fc8_m"  # the ranking head of both nets


@dataclass(frozen=True)
class Settings:
    """Sizes of one check run (the GPU run or ``--cpu-smoke``)."""

    net: str              # prototxts/<net>/ for steps 1 and 3
    crop: int             # its input size
    refs: int             # pristine references in the generated ranking set
    types: int            # distortion types per batch (x 5 levels = the batch)
    train_iters: int      # SGD iterations on the fixed batch (step 1)
    base_lr: float | None  # None: the solver's (rank_tid2013: 1e-4, as the original)
    compare_batch: int    # images through the Shallow deploy net (step 2)
    time_warmup: int      # untimed forward+backward calls before timing (step 3)
    time_iters: int       # timed calls (median) and `caffe time` iterations
    time_workers: int     # prefetch workers of the Python data layer while timing (as in training)
    nccl_iters: int       # iterations of tools/train.py on the multi-GPU (NCCL) path (step 4)


GPU = Settings(net="vgg16", crop=224, refs=3, types=3, train_iters=8, base_lr=None, compare_batch=8,
               time_warmup=3, time_iters=20, time_workers=2, nccl_iters=10)
# The smoke run's Shallow net learns visibly faster at 1e-3 than at the solver's 1e-4 in 4 iterations.
SMOKE = Settings(net="shallow", crop=227, refs=2, types=2, train_iters=4, base_lr=1e-3, compare_batch=2,
                 time_warmup=1, time_iters=2, time_workers=0, nccl_iters=2)


# ---------------------------------------------------------------------------------------------------------
# Helpers


def build_info(caffe: Any) -> str | None:
    """The text of the build's BUILD_INFO file (dev/build_caffe.sh), or None when there is none."""
    path = caffe_io.caffe_prefix(caffe) / "BUILD_INFO"
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def loss_falls(losses: list[float]) -> bool:
    """Every loss finite and the last below the first (at least two iterations)."""
    return len(losses) >= 2 and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def use_device(caffe: Any, device: int) -> None:
    """Caffe's global mode: CPU (-1) or GPU ``device``."""
    from rankiqa import devices

    devices.set_device(caffe, device)


def sync(net: Any) -> None:
    """Wait for the GPU: reading a parameter gradient copies it to the host (a synchronising memcpy), so
    the time of an asynchronous backward pass is not charged to the next call."""
    first = next(iter(net.params.values()))
    float(first[0].diff.flat[0])


# ---------------------------------------------------------------------------------------------------------
# Nets


def rankset(work_dir: Path, settings: Settings, seed: int) -> Path:
    """The tiny TID2013-style ranking set (files only); resumed when already there."""
    from data_prep.make_ranks import generate

    out = work_dir / f"ranks_{settings.refs}refs_seed{seed}"
    generate("tid2013", "default", out, seed=seed, jobs=min(4, os.cpu_count() or 1), lmdb=False,
             types=list(CHECK_TYPES), limit_refs=settings.refs, progress=False, warn=lambda message: None)
    return out


def train_net_param(settings: Settings, data_dir: Path, seed: int, workers: int) -> Any:
    """``prototxts/<net>/rank_train.prototxt`` configured as tools/train.py does, training phase only."""
    from rankiqa import manifest, netconfig

    source = PROTOTXTS / settings.net / "rank_train.prototxt"
    levels, _splits = manifest.manifest_levels(data_dir / "manifest.csv")
    net_param = netconfig.configure_rank_net(netconfig.read_net_param(source), source, data_dir,
                                         types_per_batch=settings.types, images_per_group=1, levels=levels,
                                         seed=seed, workers=workers, direction="quality")
    kept = [layer for layer in net_param.layer if netconfig.layer_phase(layer) != "test"]
    del net_param.layer[:]
    net_param.layer.extend(kept)
    return net_param


def swap_python_layer(net_param: Any, module_suffix: str, module: str, layer_class: str) -> None:
    """Point every ``pylayers.<module_suffix>`` layer at ``module.layer_class`` (a subclass)."""
    from rankiqa import netconfig

    layers = list(netconfig.python_layers(net_param, module_suffix))
    if not layers:
        raise InputError(f"no pylayers.{module_suffix} layer in {net_param.name}")
    for layer in layers:
        layer.python_param.module = module
        layer.python_param.layer = layer_class


def caffe_only_net_param(net_param: Any, batch: int, crop: int) -> Any:
    """The same trunk with Caffe's own layers only: an ``Input`` layer (``data`` and a ``target`` for the
    loss) instead of the Python data layer, ``EuclideanLoss`` on the score instead of the Python loss."""
    from rankiqa import caffe_io

    pb2 = caffe_io.caffe_pb2()
    out = pb2.NetParameter()
    out.CopyFrom(net_param)
    out.name = net_param.name + "_caffe_layers_only"
    del out.layer[:]
    score = None
    for layer in net_param.layer:
        if layer.type != "Python":
            out.layer.add().CopyFrom(layer)
            continue
        module = layer.python_param.module.split(".")[-1]
        if module == "rank_data":
            data = out.layer.add()
            data.name, data.type = "data", "Input"
            data.top.extend(["data", "target"])
            data.input_param.shape.add().dim.extend([batch, 3, crop, crop])
            data.input_param.shape.add().dim.extend([batch, 1])
        elif module == "rank_loss":
            score = layer.bottom[0]
            loss = out.layer.add()
            loss.name, loss.type = "loss", "EuclideanLoss"
            loss.bottom.extend([score, "target"])
            loss.top.append("loss")
            loss.loss_weight.append(1.0)
        else:
            raise InputError(f"layer {layer.name!r}: no Caffe stand-in for Python module {module!r}")
    if score is None:
        raise InputError(f"no pylayers.rank_loss layer in {net_param.name}")
    for layer in out.layer:
        unknown = {"label", "group"} & set(layer.bottom)
        if unknown:
            raise InputError(f"layer {layer.name!r} reads {sorted(unknown)}, which only the Python data "
                             "layer provides")
    return out


# ---------------------------------------------------------------------------------------------------------
# Steps


def step_device(caffe: Any, device: int) -> dict[str, Any]:
    """Which device and which Caffe build the figures come from."""
    info: dict[str, Any] = {"device": device, "caffe": str(caffe_io.caffe_prefix(caffe)),
                            "build_mode": caffe_io.build_mode(caffe), "build_info": build_info(caffe)}
    smi = run_command(["nvidia-smi", "-L"], timeout=30)
    info["nvidia_smi"] = smi["output"].strip() if smi["returncode"] == 0 else None
    if device < 0:
        info.update(name=f"CPU: {measure.cpu_model()}", ok=True)
        return info
    from rankiqa import devices

    query = run_command([str(caffe_binary(caffe)), "device_query", "-gpu", str(device)], 60, glog_env())
    info["device_query"] = query["output"][-4000:] or query.get("error")
    names = re.findall(r"Name:\s*(.+)", query["output"])
    info["name"] = names[0].strip() if names else measure.gpu_name(device)
    # Probed in a child process: a CPU-only build or a missing device aborts (glog FATAL) the process.
    usable = devices.gpu_usable(device)
    info["usable"] = usable
    if not usable:
        info.update(ok=False, error=f"Caffe cannot use GPU {device} (build mode {info['build_mode']})")
        return info
    use_device(caffe, device)
    info["ok"] = True
    return info


def step_train(caffe: Any, settings: Settings, data_dir: Path, run_dir: Path, device: int,
               seed: int, say: Callable[[str], None] = lambda text: None) -> dict[str, Any]:
    """A few SGD iterations of the ranking net on one fixed batch: finite, falling loss.

    The training losses are noisy (VGG-16's dropout draws new masks every iteration), so the pass criterion
    is the loss of the same fixed batch in the TEST phase (no dropout), by a second net sharing the solver's
    weights, before and after the iterations: all losses finite and the after below the before.
    """
    from rankiqa import netconfig

    net_param = train_net_param(settings, data_dir, seed, workers=0)
    swap_python_layer(net_param, "rank_data", "pylayers.fixed_data", "FixedRankDataLayer")
    for layer in netconfig.python_layers(net_param, "fixed_data"):
        layer.ClearField("include")  # the TRAIN-only data layer also feeds the TEST-phase probe below
    net_path = run_dir / "train_fixed.prototxt"
    netconfig.write_text_proto(net_param, net_path, "tools/gpu_check.py: ranking net on one fixed batch")
    solver_param = netconfig.configure_solver(netconfig.read_solver_param(RANK_SOLVER), net_path,
                                          run_dir / "snapshots" / "fixed", max_iter=100000,
                                          base_lr=settings.base_lr, snapshot=0, seed=seed, device=device,
                                          test_iter=None)
    solver_path = run_dir / "train_fixed_solver.prototxt"
    netconfig.write_text_proto(solver_param, solver_path, "tools/gpu_check.py: fixed-batch solver")
    use_device(caffe, device)
    caffe.set_random_seed(seed)
    solver = caffe.get_solver(str(solver_path))
    # The same prototxt, TEST phase: its FixedRankDataLayer builds the same first batch (seed, index 0).
    probe = caffe.Net(str(net_path), caffe.TEST)
    probe.share_with(solver.net)

    def probe_loss() -> float:
        return float(np.asarray(probe.forward()["loss"]).reshape(-1)[0])

    before = probe_loss()
    say(f"  test-phase loss before: {before:.6g}")
    losses, seconds = [], []
    for _ in range(settings.train_iters):
        start = time.perf_counter()
        solver.step(1)
        loss = float(solver.net.blobs["loss"].data.reshape(-1)[0])  # copies to the host: synchronises
        seconds.append(time.perf_counter() - start)
        losses.append(loss)
        say(f"  iteration {len(losses)}/{settings.train_iters}: loss {loss:.6g} ({seconds[-1]:.2f} s)")
    after = probe_loss()
    say(f"  test-phase loss after: {after:.6g}")
    batch = int(solver.net.blobs["data"].num)
    same_batch = bool(np.array_equal(probe.blobs["data"].data, solver.net.blobs["data"].data))
    return {"net": settings.net, "batch": batch, "layout": f"{settings.types}x5x1",
            "base_lr": float(solver_param.base_lr), "iterations": settings.train_iters,
            "losses": losses, "iteration_s": seconds, "test_loss_before": before, "test_loss_after": after,
            "same_batch": same_batch, "train_last_below_first": loss_falls(losses),
            "ok": same_batch and all(math.isfinite(v) for v in losses) and loss_falls([before, after])}


def step_compare(caffe: Any, settings: Settings, run_dir: Path, device: int, seed: int,
                 tolerance: float) -> dict[str, Any]:
    """Shallow deploy net, identical weights, CPU vs ``device`` (CPU again in the smoke run)."""
    deploy = PROTOTXTS / "shallow" / "rank_deploy.prototxt"
    weights = run_dir / "shallow_compare.caffemodel"
    use_device(caffe, -1)
    caffe.set_random_seed(seed)
    reference = caffe.Net(str(deploy), caffe.TEST)  # weights from the prototxt's (seeded) fillers
    reference.save(str(weights))
    rng = np.random.default_rng(seed)
    shape = (settings.compare_batch, 3, 227, 227)
    images = rng.uniform(0.0, 255.0, size=shape).astype(np.float32)

    def scores(net: Any) -> np.ndarray:
        net.blobs["data"].reshape(*shape)
        net.reshape()
        net.blobs["data"].data[...] = images
        return np.array(net.forward()[SCORE_BLOB], dtype=np.float64).reshape(-1)

    cpu = scores(reference)
    use_device(caffe, device)
    other = scores(caffe.Net(str(deploy), caffe.TEST, weights=str(weights)))
    use_device(caffe, -1)
    diff = float(np.max(np.abs(cpu - other)))
    scale = float(np.max(np.abs(cpu)))
    return {"net": "shallow rank_deploy", "batch": settings.compare_batch, "against": "GPU" if device >= 0
            else "CPU", "max_abs_diff": diff, "max_rel_diff": diff / scale if scale > 0 else diff,
            "max_abs_score": scale, "tolerance": tolerance, "scores_cpu": cpu.tolist(),
            "scores_other": other.tolist(), "ok": bool(math.isfinite(diff) and diff < tolerance)}


def time_net(net: Any, settings: Settings) -> float:
    """Median seconds of one forward+backward (synchronised) of ``net``."""
    def once() -> None:
        net.forward()
        net.backward()
        sync(net)

    return measure.time_calls(once, repeats=settings.time_iters, warmup=settings.time_warmup, min_seconds=0.0)


def step_time(caffe: Any, settings: Settings, data_dir: Path, run_dir: Path, device: int,
              seed: int) -> dict[str, Any]:
    """Forward+backward per iteration: Python layers vs Caffe's own layers vs ``caffe time``."""
    from rankiqa import caffe_io, netconfig

    result: dict[str, Any] = {"net": settings.net}
    # (a) our data and loss layers: the timed subclasses (pylayers.timed) also record data waits and the
    # loss's time.
    net_param = train_net_param(settings, data_dir, seed, workers=settings.time_workers)
    plain_param = caffe_io.caffe_pb2().NetParameter()
    plain_param.CopyFrom(net_param)  # before the swap: (b) replaces the pylayers.* layers
    swap_python_layer(net_param, "rank_data", "pylayers.timed", "TimedRankDataLayer")
    swap_python_layer(net_param, "rank_loss", "pylayers.timed", "TimedAllPairsHingeLossLayer")
    python_path = run_dir / "time_python_layers.prototxt"
    netconfig.write_text_proto(net_param, python_path,
                               "tools/gpu_check.py: timed, our Python data + loss layers")
    use_device(caffe, device)
    caffe.set_random_seed(seed)
    try:
        net = caffe.Net(str(python_path), caffe.TRAIN)
        batch = int(net.blobs["data"].num)
        timed_layers.clear_timings()
        result["python_layers_s"] = time_net(net, settings)
        recorded = timed_layers.TIMINGS
        result["data_wait_s"] = measure.median(recorded["data"])
        result["loss_layer_s"] = measure.median([f + b for f, b in zip(recorded["loss_forward"],
                                                                     recorded["loss_backward"], strict=True)])
        del net
    finally:
        timed_layers.stop_data_workers()
    result.update(batch=batch, workers=settings.time_workers)
    # (b) Caffe's own layers only, in pycaffe.
    caffe_only = caffe_only_net_param(plain_param, batch, settings.crop)
    caffe_path = run_dir / "time_caffe_layers.prototxt"
    netconfig.write_text_proto(caffe_only, caffe_path, "tools/gpu_check.py: timed, Caffe layers only")
    net = caffe.Net(str(caffe_path), caffe.TRAIN)
    rng = np.random.default_rng(seed)
    net.blobs["data"].data[...] = rng.uniform(0.0, 255.0, size=net.blobs["data"].data.shape)
    net.blobs["target"].data[...] = rng.normal(size=net.blobs["target"].data.shape)
    result["caffe_layers_s"] = time_net(net, settings)
    del net
    use_device(caffe, -1)
    # (c) Caffe's own benchmark tool on net (b).
    timed = caffe_time(caffe, caffe_path, settings.time_iters, device, timeout=300)
    result["caffe_time"] = timed
    if not timed["ok"]:
        result.update(ok=False, error=f"{timed['error']} ({caffe_binary(caffe)})")
        return result
    result["caffe_time_s"] = timed["forward_backward_ms"] / 1000.0
    result["python_over_caffe"] = result["python_layers_s"] / result["caffe_layers_s"]
    figures = [result["python_layers_s"], result["caffe_layers_s"], result["caffe_time_s"]]
    result["ok"] = all(math.isfinite(v) and v > 0 for v in figures)
    return result


def step_nccl(settings: Settings, data_dir: Path, run_dir: Path, device: int, seed: int) -> dict[str, Any]:
    """Ranking training through ``tools/train.py`` on Caffe's multi-GPU path: ``--gpus <device>`` trains in
    one GPU process of its own (NCCL unique id, broadcast of the weights, all-reduce after every
    backward), the path ``GPUS=0,1`` takes with more processes; on a machine with one GPU, one process is
    what can run. Passes when the driver exits 0, every logged loss is finite and the final snapshot
    is written. The CPU smoke run trains through the same driver with ``--gpu -1`` (NCCL needs a GPU): it
    tests this step, not NCCL."""
    out = run_dir / "nccl_run"
    shutil.rmtree(out, ignore_errors=True)  # a fresh run: tools/train.py would resume an old one
    placement = ["--gpus", str(device)] if device >= 0 else ["--gpu", "-1"]
    command = [sys.executable, "-m", "tools.train", "rank", "--rankset", "tid2013", "--net", settings.net,
               "--data", str(data_dir), "--out", str(out), *placement, "--iters", str(settings.nccl_iters),
               "--snapshot", str(settings.nccl_iters), "--test-interval", "0", "--display", "1",
               "--seed", str(seed), "--types-per-batch", str(settings.types), "--workers", "0",
               "--weights", "none"]  # a check of the training path: random initialisation on purpose
    # The GPU run takes seconds; the limit only stops a hung driver.
    done = run_command(command, timeout=240, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])))
    log = out / "log.txt"
    losses = logparse.parse_log(log).series("train_loss")[1] if log.is_file() else []
    final = sorted((out / "snapshots").glob(f"*_iter_{settings.nccl_iters}.caffemodel"))
    run_json = out / "run.json"
    gpus = json.loads(run_json.read_text(encoding="utf-8")).get("gpus") if run_json.is_file() else None
    ok = (done["returncode"] == 0 and bool(losses) and all(math.isfinite(v) for v in losses)
          and bool(final) and (gpus == [device] if device >= 0 else True))
    result: dict[str, Any] = {"nccl": device >= 0, "command": " ".join(command),
                              "returncode": done["returncode"], "iterations": settings.nccl_iters,
                              "losses": losses, "gpus": gpus, "snapshot": final[0].name if final else None,
                              "ok": ok}
    if not ok:
        result["error"] = (f"tools.train exited {done['returncode']} {done.get('error', '')}".strip()
                           + f"; output: {done['output'][-1500:]}")
    return result


# ---------------------------------------------------------------------------------------------------------
# Report


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def render(report: dict[str, Any]) -> str:
    """The Markdown snippet for BENCHMARKS.md."""
    device, checks = report.get("device", {}), report["checks"]
    smoke = report["mode"] == "cpu-smoke"
    title = "GPU check" + (": CPU smoke run, NOT a GPU result" if smoke else "")
    where = "" if report["device_id"] < 0 else f" (device {report['device_id']})"
    lines = [f"## {title}", "",
             f"Measured {report['date']} with `{report['command']}` on **{device.get('name', 'unknown')}**"
             f"{where}; Caffe build: "
             f"{device.get('build_mode', 'unknown')} ({device.get('caffe', '?')}); host CPU "
             f"{report['machine']['CPU']}, {report['machine']['cores usable']} cores, Python "
             f"{report['machine']['Python']}. Overall: **{'PASS' if report['ok'] else 'FAIL'}**.", ""]
    if device.get("nvidia_smi"):
        lines += ["```", device["nvidia_smi"], "```", ""]
    lines += ["| check | result | figures |", "|---|---|---|"]
    train = checks.get("train")
    if train is not None:
        if "losses" in train:
            figures = (f"{train['net']}, fixed batch {train['batch']} ({train['layout']}), base_lr "
                       f"{train['base_lr']:g}: test-phase loss {_fmt(train['test_loss_before'])} → "
                       f"{_fmt(train['test_loss_after'])} after {train['iterations']} iterations (training "
                       "losses " + " → ".join(_fmt(v) for v in train["losses"]) + ")")
        else:
            figures = train.get("error", "")
        lines.append(f"| ranking iterations, our data + loss layers | {_pass(train)} | {figures} |")
    compare = checks.get("compare")
    if compare is not None:
        figures = (f"max abs diff {compare['max_abs_diff']:.3g} (tolerance {compare['tolerance']:g}; "
                   f"scores up to {compare['max_abs_score']:.3g}), batch {compare['batch']}"
                   if "max_abs_diff" in compare else compare.get("error", ""))
        against = compare.get("against", "GPU")
        lines.append(f"| Shallow deploy forward, CPU vs {against} | {_pass(compare)} | {figures} |")
    timing = checks.get("time")
    if timing is not None:
        lines.append(f"| forward+backward timing | {_pass(timing)} | {timing.get('error', 'below')} |")
    nccl = checks.get("nccl")
    if nccl is not None:
        what = ("`tools/train.py --gpus` (NCCL, one rank)" if nccl.get("nccl")
                else "`tools/train.py --gpu -1` (CPU smoke: no NCCL)")
        if nccl.get("ok"):
            losses = " → ".join(_fmt(v) for v in nccl["losses"])
            figures = f"{nccl['iterations']} iterations, losses {losses}, snapshot {nccl['snapshot']}"
        else:
            figures = str(nccl.get("error", "")).replace("\n", " ").replace("|", "/")[-600:]
        lines.append(f"| ranking training, {what} | {_pass(nccl)} | {figures} |")
    lines.append("")
    if timing is not None and "caffe_time_s" in timing:
        net, batch = timing["net"], timing["batch"]
        lines += [f"| {net} forward+backward, batch {batch} | time / iteration | vs Caffe layers only |",
                  "|---|---|---|",
                  f"| pycaffe, our Python data + loss layers ({timing['workers']} prefetch workers) | "
                  f"{measure.ms(timing['python_layers_s'])} | {measure.x(timing['python_over_caffe'])} |",
                  "| pycaffe, Caffe layers only (Input + EuclideanLoss) | "
                  f"{measure.ms(timing['caffe_layers_s'])} | 1x |",
                  f"| `caffe time` (Caffe layers only) | {measure.ms(timing['caffe_time_s'])} | "
                  f"{measure.x(timing['caffe_time_s'] / timing['caffe_layers_s'])} |", "",
                  "Inside the Python-layer iteration: data layer forward (load, or wait for a prefetched "
                  f"batch, plus the copy) {measure.ms(timing['data_wait_s'])}, loss layer forward+backward "
                  f"{measure.ms(timing['loss_layer_s'])} (medians).", ""]
    lines += [measure.para(
        "How measured: `tools/gpu_check.py`. Ranking check: `prototxts/<net>/rank_train.prototxt`",
        "configured as `make train_rank` does (random init, solver `rank_tid2013`), its data layer repeating",
        "one batch of a tiny generated TID2013-style set; passes when every loss is finite and the loss of",
        "that batch in the TEST phase (no dropout; a net sharing the weights) is lower after the",
        "iterations than before. Timing: median of synchronised `net.forward()` + `net.backward()` calls",
        "after warm-up; `caffe time` reports its own mean 'Average Forward-Backward'. Multi-GPU path:",
        "`tools/train.py rank --gpus <device>` on the same set, one GPU process (NCCL) of its own."), ""]
    return "\n".join(lines)


def _pass(step: dict[str, Any]) -> str:
    return "pass" if step.get("ok") else "**FAIL**"


# ---------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON to write (Markdown beside it, .md)")
    parser.add_argument("--gpu", type=int, default=0, help="GPU id (default 0); -1: full sizes on the CPU")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="CPU only, tiny sizes (Shallow net; CPU vs CPU): tests the script itself")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/gpu_check"),
                        help="generated ranking set and resolved nets (default /tmp/gpu_check; reused)")
    parser.add_argument("--steps", default=",".join(STEPS),
                        help=f"comma-separated subset of {','.join(STEPS)} (default: all)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="max |CPU - GPU| of the Shallow scores must stay below this (default 1e-4)")
    parser.add_argument("--base-lr", type=float, default=None,
                        help="learning rate of the fixed-batch iterations (default: the check's setting)")
    parser.add_argument("--train-iters", type=int, default=None,
                        help="fixed-batch iterations (default: the check's setting)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def parse_steps(text: str) -> list[str]:
    """The steps named in ``--steps``, in run order."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(STEPS))
    if unknown or not names:
        raise InputError(f"--steps: unknown or no step(s) {unknown or text!r}; choose from {','.join(STEPS)}")
    return [name for name in STEPS if name in names]


def run_step(name: str, func: Callable[[], dict[str, Any]], say: Callable[[str], None]) -> dict[str, Any]:
    """Run one step; an exception becomes a failed step (the others still run)."""
    start = time.perf_counter()
    try:
        result = func()
    except Exception as err:  # noqa: BLE001 - recorded in the report as this step's failure
        result = {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    result["wall_s"] = time.perf_counter() - start
    say(f"{name}: {'ok' if result.get('ok') else 'FAILED ' + str(result.get('error', ''))} "
        f"({result['wall_s']:.1f} s)")
    return result


@cli_main
def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    out: Path = args.out
    if out.is_dir():
        raise InputError("--out is a folder; give the JSON file to write", out)
    if args.work_dir.exists() and not args.work_dir.is_dir():
        raise InputError("--work-dir exists and is not a folder", args.work_dir)
    if not math.isfinite(args.tolerance):
        raise InputError(f"--tolerance must be a finite number, got {args.tolerance}")
    steps = parse_steps(args.steps)
    settings = SMOKE if args.cpu_smoke else GPU
    if args.base_lr is not None:
        if not (math.isfinite(args.base_lr) and args.base_lr > 0):
            raise InputError(f"--base-lr must be a positive number, got {args.base_lr}")
        settings = replace(settings, base_lr=args.base_lr)
    if args.train_iters is not None:
        if args.train_iters < 2:
            raise InputError(f"--train-iters must be at least 2, got {args.train_iters}")
        settings = replace(settings, train_iters=args.train_iters)
    device = -1 if args.cpu_smoke else args.gpu
    from rankiqa import caffe_io

    caffe = caffe_io.import_caffe()

    def say(text: str) -> None:
        print(f"[gpu_check {time.perf_counter() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    mode = "cpu-smoke" if args.cpu_smoke else ("gpu" if device >= 0 else "cpu")
    command = "python -m tools.gpu_check " + " ".join(sys.argv[1:] if argv is None else argv)
    report: dict[str, Any] = {
        "command": command.strip(), "mode": mode, "device_id": device, "steps": steps,
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "settings": asdict(settings), "machine": measure.machine_info(caffe, mode),
        "python": platform.python_version(), "checks": {}, "ok": False,
    }
    md_path = out.with_suffix(".md")

    def save() -> None:
        report["failures"] = [name for name, step in report["checks"].items() if not step.get("ok")]
        if not report["device"].get("ok"):
            report["failures"].insert(0, "device")
        report["ok"] = not report["failures"] and len(report["checks"]) == len(steps)
        report["wall_s"] = time.perf_counter() - started
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")
        atomic_write_text(md_path, render(report))

    report["device"] = run_step("device", lambda: step_device(caffe, device), say)
    say(f"device: {report['device'].get('name')}; nvidia-smi -L: {report['device'].get('nvidia_smi')}")
    save()  # a glog abort (FATAL) later kills the process: keep what is known
    if report["device"].get("ok"):
        run_dir = args.work_dir / f"nets_{mode}"
        run_dir.mkdir(parents=True, exist_ok=True)
        data_dir: Path | None = None
        if {"train", "time", "nccl"} & set(steps):
            say("generating the ranking set")
            data_dir = rankset(args.work_dir, settings, args.seed)
        for name in steps:
            say(f"{name} ...")
            if name == "train":
                func = lambda: step_train(caffe, settings, data_dir, run_dir, device, args.seed, say)  # noqa: E731
            elif name == "compare":
                func = lambda: step_compare(caffe, settings, run_dir, device, args.seed,  # noqa: E731
                                            args.tolerance)
            elif name == "time":
                func = lambda: step_time(caffe, settings, data_dir, run_dir, device, args.seed)  # noqa: E731
            else:
                func = lambda: step_nccl(settings, data_dir, run_dir, device, args.seed)  # noqa: E731
            report["checks"][name] = run_step(name, func, say)
            save()
    save()
    say(f"wrote {out} and {md_path}: {'PASS' if report['ok'] else 'FAIL ' + ','.join(report['failures'])}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
