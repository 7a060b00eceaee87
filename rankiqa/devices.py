"""Devices: GPU probing and selection, the data share of each GPU, NCCL, one process per GPU.

Words: a multi-GPU run has one *process* per GPU, numbered by its ``GpuShare.index`` (0 is Caffe's root
solver, which alone logs, tests and snapshots); Caffe and NCCL call that number the solver's rank
(``caffe.set_solver_rank``), a word this project keeps for the ranking of images.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rankiqa.caffe_io import import_caffe
from rankiqa.errors import InputError, TrainingError


@dataclasses.dataclass(frozen=True)
class GpuShare:
    """One process of a multi-GPU run: its index (Caffe's solver rank), its GPU and its data share."""

    index: int
    device: int
    shard_index: int
    shard_count: int


def parse_gpus(text: str) -> list[int]:
    """``"0,1,3"`` -> ``[0, 1, 3]``; duplicates, negatives and junk are input errors."""
    try:
        gpus = [int(part) for part in text.split(",") if part.strip() != ""]
    except ValueError:
        raise InputError(f"--gpus must be comma-separated GPU ids, got {text!r}") from None
    if not gpus:
        raise InputError("--gpus is empty")
    if any(g < 0 for g in gpus):
        raise InputError(f"--gpus ids must be >= 0, got {text!r}")
    if len(set(gpus)) != len(gpus):
        raise InputError(f"--gpus names a GPU twice: {text!r}")
    return gpus


def gpu_shares(gpus: list[int]) -> list[GpuShare]:
    """One share per GPU: process i runs on ``gpus[i]`` and its data layers read share i of ``len(gpus)``.

    Process 0 is Caffe's root solver (it snapshots, tests and logs).
    """
    return [GpuShare(index=i, device=g, shard_index=i, shard_count=len(gpus)) for i, g in enumerate(gpus)]


def shard_of(n_items: int, shard_index: int, shard_count: int) -> range:
    """Indices of a data share: every ``shard_count``-th item starting at ``shard_index``.

    The data layers take the same rule through ``shard_index``/``shard_count``: the shares are disjoint and
    together cover every item, and the shares' sizes differ by at most one.
    """
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(f"bad share {shard_index} of {shard_count}")
    return range(shard_index, n_items, shard_count)


def gpu_usable(device: int, timeout: float = 120.0) -> bool:
    """Whether pycaffe can use GPU ``device``; probed in a child process because a CPU-only Caffe build, or
    a missing device, aborts the process (glog FATAL) instead of raising."""
    code = f"import caffe; caffe.set_device({int(device)}); caffe.set_mode_gpu()"
    env = dict(os.environ, GLOG_minloglevel="3")
    try:
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def any_gpu_present() -> bool:
    """A cheap look for an NVIDIA device before paying for a probe."""
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir()


def resolve_device(gpu: str) -> int:
    """``auto`` -> GPU 0 if usable else CPU (-1); ``-1`` -> CPU; ``n`` -> GPU n (an error if not usable)."""
    if gpu == "auto":
        return 0 if any_gpu_present() and gpu_usable(0) else -1
    try:
        device = int(gpu)
    except ValueError:
        raise InputError(f"--gpu must be auto, -1 or a GPU id, got {gpu!r}") from None
    if device < 0:
        return -1
    if not gpu_usable(device):
        raise InputError(f"GPU {device} is not usable: this Caffe build is CPU-only or there is no such "
                         "device (use --gpu -1 for the CPU)")
    return device


def set_device(caffe: Any, device: int) -> None:
    """Select CPU (-1) or GPU ``device`` for this process."""
    if device < 0:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(device)
        caffe.set_mode_gpu()


def require_nccl(caffe: Any) -> None:
    """Multi-GPU needs a CUDA Caffe built with NCCL (``USE_NCCL``); say so clearly instead of crashing."""
    has = getattr(caffe, "has_nccl", None)
    ok = has() if callable(has) else hasattr(getattr(caffe, "NCCL", None), "new_uid")
    if not ok or not hasattr(caffe, "set_multiprocess"):
        raise InputError("--gpus needs a CUDA Caffe built with NCCL (USE_NCCL=ON); this pycaffe has no NCCL. "
                         "Train on one GPU with --gpu N, or rebuild Caffe with NCCL")


#: Size of NCCL's ncclUniqueId (NCCL_UNIQUE_ID_BYTES in nccl.h).
NCCL_UNIQUE_ID_BYTES = 128


def nccl_uid(caffe: Any) -> bytes:
    """A new NCCL id shared by the GPU processes. Unpatched pycaffe returns it cut at its first zero byte
    (BVLC/caffe#6600; the Caffe build script fixes that): the processes would then read past it and hang or
    crash, so a short id is refused here with the reason."""
    uid = caffe.NCCL.new_uid()
    if len(uid) != NCCL_UNIQUE_ID_BYTES:
        raise InputError(f"this pycaffe's NCCL.new_uid() returned {len(uid)} bytes, not "
                         f"{NCCL_UNIQUE_ID_BYTES} (BVLC/caffe#6600); rebuild Caffe with `make caffe CUDA=1`, "
                         "which fixes it")
    return uid


def run_gpu_processes(worker: Callable[[Any, GpuShare, bytes], None], payload: Any, shares: list[GpuShare],
                      log_path: Path) -> None:
    """One process per GPU, each calling ``worker(payload, share, nccl_uid)`` (spawned, so a module-level
    function with a picklable payload); the workers all-reduce their gradients with NCCL.

    A process that fails leaves the others waiting for it inside NCCL: they are stopped, and a
    ``TrainingError`` names the process(es) that failed (their error is in ``log_path`` and on stderr).
    Exit status 130 of every process (Ctrl-C) becomes ``KeyboardInterrupt``.
    """
    import multiprocessing
    from multiprocessing.connection import wait

    caffe = import_caffe()
    require_nccl(caffe)
    uid = nccl_uid(caffe)
    # spawn, not fork: a forked child would inherit this process's Caffe/CUDA state.
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=worker, args=(payload, share, uid),
                                 name=f"process {share.index} (GPU {share.device})") for share in shares]
    for process in processes:
        process.start()
    failed: list[str] = []
    try:
        pending = list(processes)
        while pending and not failed:
            wait([p.sentinel for p in pending])
            pending = [p for p in pending if p.exitcode is None]
            # 130: stopped by Ctrl-C, as the others will be after the same iteration.
            failed = [p.name for p in processes if p.exitcode not in (None, 0, 130)]
    except KeyboardInterrupt:
        # The children got the same SIGINT and stop after the current (synchronised) iteration.
        for process in processes:
            process.join(timeout=600)
        raise
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
    if failed:
        raise TrainingError(f"multi-GPU training failed in {', '.join(failed)} (see {log_path})")
    if any(p.exitcode == 130 for p in processes):
        raise KeyboardInterrupt
