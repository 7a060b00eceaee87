"""Caffe's own benchmark, ``caffe time``, run on our nets and read back: the limit a step is measured against.

``caffe time -model NET -iterations K`` builds NET in the TRAIN phase, runs one untimed forward and
backward, then K timed forward+backward passes, and logs (glog, on stderr) each pass's time, the average
forward and backward time of every layer, and the overall averages (``tools/caffe.cpp`` of BVLC Caffe).
It runs no solver: no weight update, no Python driver. Our Python layers run inside it, imported by the
binary's embedded interpreter from the same ``sys.path`` as this process (``caffe_env``).

On a net without a loss (a deploy net) Caffe skips the backward pass of every layer that needs none, so
its forward-backward is no limit for training; its forward is the limit for scoring.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from rankiqa import caffe_io

#: ``caffe time``'s summary lines, by the key this module reports them under.
CAFFE_TIME_FIELDS = {"forward_ms": "Average Forward pass", "backward_ms": "Average Backward pass",
                     "forward_backward_ms": "Average Forward-Backward"}
_ITERATION = re.compile(r"Iteration: (\d+) forward-backward time: ([0-9.eE+-]+) ms")
_LAYER = re.compile(r"\]\s*(\S+)\s+(forward|backward): ([0-9.eE+-]+) ms")


def caffe_binary(caffe: Any) -> Path:
    """``<prefix>/bin/caffe`` beside the imported pycaffe."""
    return caffe_io.caffe_prefix(caffe) / "bin" / "caffe"


def glog_env() -> dict[str, str]:
    """Environment for Caffe's command-line tool: glog's INFO lines on stderr (where its figures are)."""
    return dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")


def caffe_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """``glog_env`` plus this process's ``sys.path`` as ``PYTHONPATH``, so that the binary's embedded Python
    finds numpy, pycaffe and our ``pylayers`` as this process does (the venv's ``.pth`` file is not read
    there); ``extra`` variables on top (e.g. ``OPENBLAS_NUM_THREADS``)."""
    paths = [path for path in sys.path if path and Path(path).is_dir()]
    env = dict(glog_env(), PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)))
    env.update(extra or {})
    return env


def run_command(command: list[str], timeout: float, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> dict[str, Any]:
    """Run a command; its exit status and output (never raises for a missing program or a timeout).

    The command runs in a process group of its own, killed whole on a timeout: a training driver's GPU
    worker processes (or a data layer's prefetch workers) must not outlive it."""
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=cwd, start_new_session=True)
    except FileNotFoundError:
        return {"command": command, "returncode": None, "output": "", "error": "not found"}
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return {"command": command, "returncode": None, "output": stdout + stderr,
                "error": f"timed out after {timeout} s"}
    return {"command": command, "returncode": proc.returncode, "output": stdout + stderr}


def parse_caffe_time(output: str) -> dict[str, float]:
    """The per-iteration averages that ``caffe time`` logs (``Average Forward-Backward: 12.3 ms.``), in ms."""
    found = {}
    for key, label in CAFFE_TIME_FIELDS.items():
        match = re.search(rf"{re.escape(label)}: ([0-9.eE+-]+) ms", output)
        if match:
            found[key] = float(match.group(1))
    return found


def parse_iterations(output: str) -> list[float]:
    """The forward+backward time of each timed iteration (``Iteration: 3 forward-backward time: 812 ms.``),
    in ms, in iteration order. Caffe logs them rounded to whole milliseconds on the CPU."""
    return [float(ms) for _index, ms in _ITERATION.findall(output)]


def parse_layers(output: str) -> list[dict[str, Any]]:
    """``caffe time``'s per-layer table (``conv1\\tforward: 214 ms.`` / ``backward: ...``), in net order:
    ``{"layer", "forward_ms", "backward_ms"}`` per layer."""
    start = output.find("Average time per layer")
    layers: dict[str, dict[str, Any]] = {}
    if start < 0:
        return []
    for name, direction, ms in _LAYER.findall(output[start:]):
        layers.setdefault(name, {"layer": name, "forward_ms": 0.0, "backward_ms": 0.0})[f"{direction}_ms"] = \
            float(ms)
    return list(layers.values())


def caffe_time(caffe: Any, model: Path, iterations: int, device: int = -1, timeout: float = 1800.0,
               extra_env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
    """Run ``caffe time`` on ``model`` (a net prototxt) for ``iterations`` timed passes on ``device`` (-1:
    CPU); returns the averages (``forward_ms``, ``backward_ms``, ``forward_backward_ms``), the per-pass
    times (``iterations_ms``) and the per-layer table (``layers``), with ``ok`` False and an ``error`` (and
    the output's tail) when Caffe gave no averages."""
    command = [str(caffe_binary(caffe)), "time", "-model", str(model), "-iterations", str(iterations)]
    if device >= 0:
        command += ["-gpu", str(device)]
    run = run_command(command, timeout=timeout, env=caffe_env(extra_env), cwd=cwd)
    output = run["output"]
    result: dict[str, Any] = {"command": " ".join(command), "returncode": run["returncode"],
                              **parse_caffe_time(output), "iterations_ms": parse_iterations(output),
                              "layers": parse_layers(output)}
    result["ok"] = run["returncode"] == 0 and "forward_backward_ms" in result
    if not result["ok"]:
        result["error"] = (f"`caffe time` gave no 'Average Forward-Backward' (exit status {run['returncode']}"
                           f"{', ' + run['error'] if run.get('error') else ''})")
        result["output_tail"] = output[-3000:]
    return result
