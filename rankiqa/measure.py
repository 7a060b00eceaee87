"""Measuring and reporting helpers of the benchmarks (``tools/bench.py``) and the GPU check
(``tools/gpu_check.py``): median timings, the machine's description, durations and ratios as text."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rankiqa import blas, caffe_io


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


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or what ``platform`` knows)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def blas_threads() -> str:
    """How many threads OpenBLAS (Caffe's CPU BLAS here) starts with, and where that comes from."""
    for var in blas.VARIABLES:
        if os.environ.get(var):
            return f"{os.environ[var]} ({var})"
    return f"{blas.usable_cores()} (OpenBLAS default: one per core; OPENBLAS_NUM_THREADS unset)"


def machine_info(caffe: Any, mode: str) -> dict[str, str]:
    """The machine and software the figures come from, for the report."""
    return {
        "CPU": cpu_model(),
        "cores usable": str(blas.usable_cores()),
        "Caffe mode": mode,
        "Caffe build": caffe_io.build_mode(caffe),
        "BLAS threads": blas_threads(),
        "Python": platform.python_version(),
        "NumPy": np.__version__,
        "OS": platform.platform(),
    }


def gpu_name(gpu: int) -> str:
    """The GPU's name from nvidia-smi, for the report."""
    import subprocess

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", str(gpu)],
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        if out:
            return out
    return "unknown (nvidia-smi did not answer)"


def ms(seconds: float) -> str:
    """A duration in s, ms or µs, three significant digits."""
    if seconds >= 1.0:
        return f"{seconds:.3g} s"
    return f"{seconds * 1000:.3g} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.3g} µs"


def x(ratio: float) -> str:
    """A ratio as ``1.23x``."""
    return f"{ratio:.3g}x"


def para(*parts: str) -> str:
    """One Markdown paragraph from pieces (kept short in the source)."""
    return " ".join(part.strip() for part in parts)
