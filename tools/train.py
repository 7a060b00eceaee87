"""Train RankIQA nets in Caffe from Python: Siamese ranking (``rank``), regression fine-tuning (``finetune``).

``python -m tools.train rank --rankset tid2013 --net shallow --data data/ranks/tid2013 --out runs/rank_x``
``python -m tools.train finetune --dataset tid2013 --net shallow --lists data/ft/tid2013/split0 --out runs/f``

The driver never edits ``prototxts/``: it copies the chosen train net and solver into the run folder with the
overrides applied through ``caffe_pb2`` (``train.prototxt``, ``solver.prototxt``), then steps the solver from
Python (so the Python layers run), writing ``log.txt``, ``loss.csv``, ``loss.png``, ``run.json`` and
``snapshots/<run>_iter_<N>.caffemodel|.solverstate`` under ``runs/<name>/``.

Faithful choices and the rules this driver adds (also in ``--help``):

* Solvers: ``prototxts/solvers/rank_<rankset>.prototxt`` and ``ft_<style>.prototxt``. The fine-tuning *style*
  of each dataset picks the solver, the net and the ranking set of the default ranking model:
  tid2013 -> tid2013; live -> live; csiq -> live (the paper fine-tunes CSIQ's four LIVE types from the LIVE
  ranking model); kadid -> tid2013 (25 TID-like types, MOS higher = better); synthetic -> tid2013.
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
  ``.caffemodel`` of the original's iteration (``PREFERRED_RANK_ITER``: TID2013 50k, LIVE 20k) when it
  exists, else the one with the highest iteration.
* A run folder belongs to one configuration (``run.json``: rank set or dataset, net, data or lists,
  direction, batch make-up, initialisation): a rerun with another is refused rather than resumed.
* Resume: ``--resume X.solverstate`` restores weights, momentum history and the iteration counter; without it
  a rerun of the same command continues from the highest-iteration valid ``.solverstate`` in
  ``<out>/snapshots/`` (delete the run folder to start over). Ctrl-C finishes the current iteration, writes a
  snapshot and exits with status 130.
* Disk space: Caffe writes each snapshot into ``snapshots/.partial/`` and the driver moves the finished pair
  into ``snapshots/``, logging it as the last good snapshot. The free space for one snapshot (from the net's
  parameter count) is checked before training and before each snapshot; without it the run stops with exit
  status 2, naming the space needed and the snapshot a rerun resumes from.
* Testing: Caffe's own testing is switched off in the written solver (``test_interval`` beyond any run) and
  the driver runs the test net itself every ``--test-interval`` iterations, so that SROCC/PLCC can be pooled
  over the whole test list (not averaged per batch) and written to ``loss.csv``.
* GPU: ``--gpu auto`` (default) uses GPU 0 when the Caffe build and the machine have one, else the CPU;
  ``--gpu -1`` forces the CPU. ``--gpus 0,1`` trains on several GPUs with NCCL (one process per GPU, each data
  layer reading a disjoint share of batches: ``shard_index = rank``, ``shard_count = len(gpus)``); the batch
  flags are per GPU, so the effective batch is ``len(gpus)`` times larger.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from rankiqa import blas, head_init, netcheck, provenance
from rankiqa.caffe_io import (
    caffe_pb2,
    check_weight_shapes,
    import_caffe,
    parse_binary,
    read_caffemodel,
)
from rankiqa.errors import InputError, cli_main
from rankiqa.fsutil import StorageError, atomic_write_text, require_free_space, storage_errors
from rankiqa.lists import TEXT_ENCODING, open_text, read_list
from tools.logparse import LossTable, plot, write_csv
from tools.scoring import run_record

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTOTXT_DIR = REPO_ROOT / "prototxts"

NETS = ("vgg16", "shallow")
RANKSETS = ("tid2013", "live")
DATASETS = ("tid2013", "live", "csiq", "kadid", "synthetic")
#: Fine-tuning style (solver, net variant, ranking set of the default ranking model) per dataset.
FT_STYLE = {"tid2013": "tid2013", "live": "live", "csiq": "live", "kadid": "tid2013", "synthetic": "tid2013"}
#: The original batch make-up per ranking set: (distortion types per batch, images per group).
RANK_BATCH = {"tid2013": (9, 1), "live": (4, 2)}
#: Used only when a solver file does not say (the faithful solvers in prototxts/solvers/ do).
DEFAULT_SNAPSHOT = {"rank": 5000, "finetune": 1000}
#: Base learning rates of the Shallow net (CPU-only extra; its input is scaled to [0, 1]) when --lr is not
#: given. Measured on a small generated set (tests/test_train.py's): ranking at 1e-2 oscillates and at 1e-4
#: barely moves in 60 iterations, 1e-3 learns; fine-tuning from a ranking model at 1e-4 spikes and collapses
#: to a constant, at 1e-5 loses the ranking's order, at 3e-6 falls steadily and keeps it.
SHALLOW_DEFAULT_LR = {"rank": 1e-3, "finetune": 3e-6}

#: Start of the fine-tuning head and scale of its Euclidean loss when not given (``rankiqa.head_init``):
#: the original's (prototxt filler, raw labels) for VGG-16; for the Shallow net (a CPU-only extra) a linear
#: probe and the loss in units of the label spread (measured: README, "Fine-tuning: head start and label
#: scale").
FT_HEAD_DEFAULTS = {"vgg16": ("filler", "none"), "shallow": ("calibrate", "std")}

#: The ranking snapshot the original fine-tunes from, per ranking style (when the run has it).
PREFERRED_RANK_ITER = {"tid2013": 50000, "live": 20000}

#: Caffe's test interval in the written solver: never reached (the driver runs the test net itself).
CAFFE_TEST_NEVER = 2**31 - 1

DEFAULT_TEST_INTERVAL = {"rank": 1000, "finetune": 500}
DEFAULT_RANK_TEST_ITERS = 20
DISPLAY_EVERY = 20
PLOT_EVERY_S = 30.0

_SNAPSHOT_NAME = re.compile(r"_iter_(\d+)\.(caffemodel|solverstate)$")
#: Caffe writes each snapshot into this sub-folder of ``snapshots/``; the driver moves the pair beside the
#: others once both files are complete (:func:`publish_snapshot`). A full disk makes Caffe abort the process
#: inside its writer, so a file cut short stays here, where nothing looks for snapshots, and the next run
#: removes it.
SNAPSHOT_STAGING = ".partial"
#: Solver types whose state holds two history blobs per parameter blob (Caffe's AdaDelta and Adam); the
#: others (SGD, Nesterov, AdaGrad, RMSProp) hold one.
_TWO_HISTORY_SOLVERS = ("AdaDelta", "Adam")


# ---------------------------------------------------------------------------------------------------------
# Caffe imports (lazy: --help, the share-splitting and the log parser work without Caffe)






# ---------------------------------------------------------------------------------------------------------
# Prototxt reading, overriding and writing


def read_net_param(path: Path) -> Any:
    """Parse a net prototxt; a syntax error names the file and line."""
    return _read_text_proto(path, caffe_pb2().NetParameter())


def read_solver_param(path: Path) -> Any:
    """Parse a solver prototxt; a syntax error names the file and line."""
    return _read_text_proto(path, caffe_pb2().SolverParameter())


def _read_text_proto(path: Path, message: Any) -> Any:
    from google.protobuf import text_format

    if not path.is_file():
        raise InputError("prototxt not found", path)
    try:
        text_format.Merge(path.read_text(encoding=TEXT_ENCODING), message)
    except text_format.ParseError as err:
        line = err.GetLine() if hasattr(err, "GetLine") else None
        raise InputError(f"not a valid {message.DESCRIPTOR.name}: {err}", path, line) from None
    return message


def write_text_proto(message: Any, path: Path, header: str) -> None:
    """Write a protobuf message as text, atomically, under a ``#`` comment header."""
    from google.protobuf import text_format

    comment = "".join(f"# {line}\n" for line in header.splitlines())
    atomic_write_text(path, comment + text_format.MessageToString(message))


def python_layers(net_param: Any, module_suffix: str) -> Iterator[Any]:
    """Python layers whose module is ``pylayers.<module_suffix>`` (or ends with it)."""
    for layer in net_param.layer:
        if layer.type == "Python" and layer.python_param.module.split(".")[-1] == module_suffix:
            yield layer


def get_param_str(layer: Any, source: Path) -> dict[str, Any]:
    """A Python layer's ``param_str`` as a dict (YAML/JSON, never eval)."""
    text = layer.python_param.param_str.strip()
    if not text:
        return {}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InputError(f"layer {layer.name!r}: param_str is not YAML/JSON: {err}", source) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"layer {layer.name!r}: param_str must be a mapping, got {value!r}", source)
    return value


def set_param_str(layer: Any, values: dict[str, Any]) -> None:
    """Store ``values`` as a one-line YAML flow mapping ``{key: value, ...}`` (quoted where YAML needs it)."""
    text = yaml.safe_dump(values, default_flow_style=True, sort_keys=False, width=1 << 30).strip()
    assert yaml.safe_load(text) == values  # what the layer will read back
    layer.python_param.param_str = text


def layer_phase(layer: Any) -> str:
    """``train``, ``test`` or ``both``: the phase a layer is included in (by ``include { phase }`` rules)."""
    pb2 = caffe_pb2()
    phases = {rule.phase for rule in layer.include if rule.HasField("phase")}
    if phases == {pb2.TEST}:
        return "test"
    if phases == {pb2.TRAIN}:
        return "train"
    return "both"


def loader_workers(net_param: Any, source: Path) -> int:
    """Prefetch worker processes of the net's training-phase data layers (``workers`` of each one's
    param_str, else the layer class's default)."""
    import importlib

    total = 0
    for module in ("rank_data", "pair_data", "ft_data"):
        for layer in python_layers(net_param, module):
            if layer_phase(layer) == "test":
                continue
            defaults = getattr(importlib.import_module(layer.python_param.module), layer.python_param.layer)
            total += int(get_param_str(layer, source).get("workers", defaults.DEFAULTS["workers"]))
    return total


def has_test_phase(net_param: Any) -> bool:
    """Whether some layer is for the TEST phase only (a test data layer): then a test net makes sense."""
    return any(layer_phase(layer) == "test" for layer in net_param.layer)


@dataclasses.dataclass(frozen=True)
class GpuShare:
    """One process of a multi-GPU run: its solver rank, its GPU and its data share."""

    rank: int
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
    """One share per GPU: rank r runs on ``gpus[r]`` and its data layers read share r of ``len(gpus)``.

    Rank 0 is Caffe's root solver (it snapshots, tests and logs).
    """
    return [GpuShare(rank=r, device=g, shard_index=r, shard_count=len(gpus)) for r, g in enumerate(gpus)]


def shard_of(n_items: int, shard_index: int, shard_count: int) -> range:
    """Indices of a data share: every ``shard_count``-th item starting at ``shard_index``.

    The data layers take the same rule through ``shard_index``/``shard_count``: the shares are disjoint and
    together cover every item, and the shares' sizes differ by at most one.
    """
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(f"bad share {shard_index} of {shard_count}")
    return range(shard_index, n_items, shard_count)


def manifest_levels(manifest: Path) -> tuple[int, dict[str, int]]:
    """(highest level L, references per split) of a ranking ``manifest.csv``; bad rows name file and line."""
    if not manifest.is_file():
        raise InputError("ranking manifest not found (run `make ranks` first)", manifest)
    top = -1
    references: dict[str, set[str]] = {}
    with open_text(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"reference", "type", "level", "path", "split"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"manifest lacks column(s) {sorted(missing)}", manifest, 1)
        for lineno, row in enumerate(reader, start=2):
            try:
                level = int(row["level"])
            except (TypeError, ValueError):
                raise InputError(f"level {row['level']!r} is not an integer", manifest, lineno) from None
            top = max(top, level)
            references.setdefault(row["split"], set()).add(row["reference"])
    if top < 1:
        raise InputError("manifest has no distorted levels", manifest)
    return top, {split: len(refs) for split, refs in references.items()}


def manifest_images(data_dir: Path) -> list[Path]:
    """The image files a ranking run reads: every path of ``manifest.csv`` (or the LMDB holding them)."""
    lmdb_file = data_dir / "images.lmdb" / "data.mdb"
    if lmdb_file.is_file():
        return [lmdb_file]
    with open_text(data_dir / "manifest.csv", newline="") as handle:
        return sorted({data_dir / row["path"] for row in csv.DictReader(handle)})


def count_list_lines(path: Path) -> int:
    """Non-empty, non-comment lines of a ``<path> <value>`` list (0 when the file is absent)."""
    if not path.is_file():
        return 0
    with open_text(path) as handle:
        return sum(1 for line in handle if line.strip() and not line.lstrip().startswith("#"))


def configure_rank_net(net_param: Any, source: Path, data_dir: Path, types_per_batch: int,
                       images_per_group: int, levels: int, seed: int, workers: int | None,
                       direction: str, share: GpuShare | None = None, start_batch: int = 0,
                       test_start_batch: int = 0) -> Any:
    """Point the ranking data layers at ``data_dir`` and set batch make-up, seed, share and score direction.

    Data layers (``rank_data``, ``pair_data``): ``manifest``, ``lmdb`` (when ``images.lmdb`` exists),
    ``types_per_batch``/``images_per_group`` (when the layer uses them), ``seed`` (+1 for the test phase),
    ``workers``, shard keys and ``start_batch`` (batches this shard already consumed: a resumed run
    continues the data stream where it stopped).
    Loss layers (``rank_loss``): ``direction``, and ``group_size`` when the layer splits the batch by size
    rather than by a ``group`` bottom (then it must follow the batch make-up).
    """
    net_param = _copy(net_param)
    data_layers = [*python_layers(net_param, "rank_data"), *python_layers(net_param, "pair_data")]
    if not data_layers:
        raise InputError("no pylayers.rank_data / pair_data layer in the train net", source)
    lmdb_dir = data_dir / "images.lmdb"
    for layer in data_layers:
        params = get_param_str(layer, source)
        params["manifest"] = str((data_dir / "manifest.csv").resolve())
        if lmdb_dir.is_dir():
            params["lmdb"] = str(lmdb_dir.resolve())
        else:
            params.pop("lmdb", None)
        if layer.python_param.module.endswith("rank_data") or "types_per_batch" in params:
            params["types_per_batch"] = types_per_batch
            params["images_per_group"] = images_per_group
        _set_stream_params(params, layer_phase(layer) == "test", seed, workers, share, start_batch,
                           test_start_batch)
        set_param_str(layer, params)
    for layer in python_layers(net_param, "rank_loss"):
        params = get_param_str(layer, source)
        params["direction"] = direction
        if "group_size" in params and len(layer.bottom) < 3:
            params["group_size"] = images_per_group * (levels + 1)
        set_param_str(layer, params)
    return net_param


def configure_ft_net(net_param: Any, source: Path, lists_dir: Path, batch: int | None, seed: int,
                     workers: int | None, share: GpuShare | None = None, start_batch: int = 0,
                     test_start_batch: int = 0) -> Any:
    """Point the fine-tuning data layers at ``lists_dir/{train,test}.txt`` (by phase) and set batch, seed,
    share and ``start_batch`` as :func:`configure_rank_net`. The test-phase layer reads its list in order
    (``shuffle: false``) so that ``ceil(n / batch)`` test batches see each test image once and SROCC/PLCC
    can be pooled over the whole list."""
    net_param = _copy(net_param)
    data_layers = list(python_layers(net_param, "ft_data"))
    if not data_layers:
        raise InputError("no pylayers.ft_data layer in the train net", source)
    for layer in data_layers:
        params = get_param_str(layer, source)
        test = layer_phase(layer) == "test"
        params["list"] = str((lists_dir / ("test.txt" if test else "train.txt")).resolve())
        if batch is not None and not test:
            params["batch_size"] = batch
        if test:
            params["shuffle"] = False
        _set_stream_params(params, test, seed, workers, share, start_batch, test_start_batch)
        set_param_str(layer, params)
    return net_param


def _set_stream_params(params: dict[str, Any], test: bool, seed: int, workers: int | None,
                       share: GpuShare | None, start_batch: int, test_start_batch: int) -> None:
    """The param_str keys that place a data layer in its batch stream: seed (the test net draws its own),
    workers, GPU share (only rank 0 runs the test net, so test data are never split) and the resume point."""
    params["seed"] = seed + 1 if test else seed
    if workers is not None:
        params["workers"] = workers
    _set_share(params, None if test else share)
    params["start_batch"] = test_start_batch if test else start_batch


def _set_share(params: dict[str, Any], share: GpuShare | None) -> None:
    params["shard_index"] = 0 if share is None else share.shard_index
    params["shard_count"] = 1 if share is None else share.shard_count


def _copy(message: Any) -> Any:
    clone = type(message)()
    clone.CopyFrom(message)
    return clone


def test_batch_size(net_param: Any, source: Path) -> int | None:
    """Batch size of the test-phase fine-tuning data layer (its ``batch_size``, default 30)."""
    for layer in python_layers(net_param, "ft_data"):
        if layer_phase(layer) == "test":
            return int(get_param_str(layer, source).get("batch_size", 30))
    return None


def configure_solver(solver_param: Any, net_path: Path, snapshot_prefix: Path, max_iter: int | None,
                     base_lr: float | None, snapshot: int | None, seed: int, device: int,
                     test_iter: int | None) -> Any:
    """Resolved solver: absolute net and snapshot paths, overrides, mode, seed; Caffe's own testing off.

    ``test_iter`` set (> 0) makes Caffe build the test net that the driver runs itself; ``None`` builds none.
    """
    pb2 = caffe_pb2()
    solver = _copy(solver_param)
    for field in ("net_param", "train_net", "train_net_param", "test_net", "test_net_param"):
        solver.ClearField(field)
    solver.net = str(net_path.resolve())
    solver.snapshot_prefix = str(snapshot_prefix.resolve())
    if max_iter is not None:
        solver.max_iter = max_iter
    if base_lr is not None:
        solver.base_lr = base_lr
    if snapshot is not None:
        solver.snapshot = snapshot
    solver.snapshot_format = pb2.SolverParameter.BINARYPROTO
    solver.random_seed = seed
    solver.solver_mode = pb2.SolverParameter.GPU if device >= 0 else pb2.SolverParameter.CPU
    if device >= 0:
        solver.device_id = device
    else:
        solver.ClearField("device_id")
    solver.ClearField("test_iter")
    if test_iter:
        solver.test_iter.append(test_iter)
    # The driver tests (pooled SROCC/PLCC); Caffe testing inside step() would run the test net twice.
    # Caffe insists on test_interval > 0 when a test net exists (it aborts the process otherwise), so the
    # interval is one no run reaches.
    solver.test_interval = CAFFE_TEST_NEVER if test_iter else 0
    solver.test_initialization = False
    return solver


# ---------------------------------------------------------------------------------------------------------
# Weights: shape check, then Caffe's copy


def net_param_shapes(net: Any) -> dict[str, list[tuple[int, ...]]]:
    """Layer name -> parameter blob shapes of a live ``caffe.Net`` (layers without parameters -> [])."""
    return {str(name): [tuple(blob.data.shape) for blob in layer.blobs]
            for name, layer in zip(net._layer_names, net.layers, strict=True)}


def load_weights(net: Any, weights_path: Path, skip_layers: Sequence[str] = ()) -> list[str]:
    """Check shapes, then copy the matching layers (by name) into ``net``; returns the copied layer names.

    ``skip_layers`` are left as the net initialised them, e.g. ImageNet VGG-16's 1000-way ``fc8`` when the
    fine-tuning head is also named ``fc8`` (the paper's ImageNet-VGG baseline). Without it Caffe copies
    (``copy_from``); with it the remaining layers are copied here, blob by blob.
    """
    source = read_caffemodel(weights_path)
    skip = set(skip_layers)
    if skip:
        for layers in (source.layer, source.layers):
            for index in reversed(range(len(layers))):
                if layers[index].name in skip:
                    del layers[index]
    target = net_param_shapes(net)
    copied = check_weight_shapes(source, target, weights_path)
    if not copied:
        raise InputError("no layer of this model matches a layer of the net by name", weights_path)
    if not skip:
        del source  # a VGG-16 model is half a gigabyte: let it go before Caffe reads its own copy
        net.copy_from(str(weights_path))
        return copied
    import numpy as np

    params = dict(zip(net._layer_names, net.layers, strict=True))
    for layer in [*source.layer, *source.layers]:
        if layer.name in copied:
            for blob, proto in zip(params[layer.name].blobs, layer.blobs, strict=True):
                blob.data[...] = np.asarray(proto.data, dtype=np.float32).reshape(blob.data.shape)
    return copied


# ---------------------------------------------------------------------------------------------------------
# Snapshots and resume


def snapshot_iteration(path: Path) -> int | None:
    """Iteration of ``<prefix>_iter_<N>.caffemodel|solverstate``; ``None`` for other names."""
    match = _SNAPSHOT_NAME.search(path.name)
    return int(match.group(1)) if match else None


def snapshots(folder: Path, suffix: str) -> list[Path]:
    """Snapshot files with ``suffix`` in ``folder``, highest iteration first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob(f"*_iter_*.{suffix}") if snapshot_iteration(p) is not None]
    return sorted(found, key=lambda p: snapshot_iteration(p) or 0, reverse=True)


def snapshot_bytes(net: Any, solver_param: Any, net_param: Any) -> int:
    """Bytes one snapshot of ``net`` (``.caffemodel`` + ``.solverstate``) takes, as an upper bound.

    Caffe writes (``Net::ToProto``, ``SGDSolver::SnapshotSolverStateToBinaryProto``) every layer's blobs as
    packed float32 (4 bytes per value; twice in the model with ``snapshot_diff``) and, in the state, one
    history blob per parameter blob (two for AdaDelta and Adam). Besides the values: each layer's
    description (at most the serialized train net ``net_param``, plus 256 bytes per layer for the split
    layers Caffe inserts and the blob shapes) and 64 KiB for the state's header and the file-system blocks.
    A layer sharing another's weights is counted with its own blobs, as ``ToProto`` writes them.
    """
    values = sum(int(blob.data.size) for layer in net.layers for blob in layer.blobs)
    model_copies = 2 if solver_param.snapshot_diff else 1
    solver_type = solver_param.type or ""
    histories = 2 if solver_type in _TWO_HISTORY_SOLVERS else 1
    descriptions = len(net_param.SerializeToString()) + 256 * len(net.layers)
    return 4 * values * (model_copies + histories) + descriptions + (64 << 10)


def staged_snapshot(snapshot_dir: Path, run_name: str, iteration: int) -> tuple[Path, Path]:
    """(model, state) as Caffe writes them, under ``snapshots/.partial/`` (see ``SNAPSHOT_STAGING``)."""
    stem = snapshot_dir / SNAPSHOT_STAGING / f"{run_name}_iter_{iteration}"
    return stem.with_name(stem.name + ".caffemodel"), stem.with_name(stem.name + ".solverstate")


def publish_snapshot(snapshot_dir: Path, run_name: str, iteration: int) -> Path:
    """Move a snapshot that Caffe finished writing from ``snapshots/.partial/`` to ``snapshots/``; returns
    the state's final path. The model goes first, so a state in ``snapshots/`` always has its model.

    The state names its model by the path Caffe wrote (``learned_net``, in ``.partial/``): the final path is
    appended as a second ``learned_net``, since a Protocol Buffers parser merges concatenated messages and
    keeps the last value of a singular field (Caffe's C++ parser as well as Python's). That costs a few
    bytes, where rewriting the state would cost a copy of it.
    """
    model, state = staged_snapshot(snapshot_dir, run_name, iteration)
    if not model.is_file() or not state.is_file():
        raise RuntimeError(f"Caffe wrote no snapshot of iteration {iteration} to {model.parent}")
    final_model = snapshot_dir / model.name
    final_state = snapshot_dir / state.name
    pointer = caffe_pb2().SolverState(learned_net=str(final_model.resolve())).SerializeToString()
    with storage_errors(state, len(pointer)), open(state, "ab") as handle:
        handle.write(pointer)
    os.replace(model, final_model)
    os.replace(state, final_state)
    return final_state


def discard_unfinished_snapshots(snapshot_dir: Path) -> list[str]:
    """Empty ``snapshots/.partial/`` (creating it), returning the names of the files removed: what a run
    stopped inside Caffe's writer left there (a full disk, a kill)."""
    staging = snapshot_dir / SNAPSHOT_STAGING
    removed = sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []
    shutil.rmtree(staging, ignore_errors=True)
    with storage_errors(staging):
        staging.mkdir(parents=True, exist_ok=True)
    return removed


def check_solverstate(path: Path) -> tuple[int, Path]:
    """(iteration, model) of a ``.solverstate``; the model is the one the state names or, when that path
    no longer exists (a moved run folder), the ``.caffemodel`` of the same name beside the state."""
    if not path.is_file():
        raise InputError("solver state not found", path)
    state = parse_binary(path, caffe_pb2().SolverState(), "not a Caffe solver state (truncated?)")
    if not state.HasField("iter"):
        raise InputError("not a Caffe solver state (no iteration)", path)
    model = Path(state.learned_net) if state.learned_net else None
    if model is None or not model.is_file():
        model = path.with_suffix(".caffemodel")
    if not model.is_file():
        raise InputError(f"the weights of this solver state are missing ({state.learned_net or model})", path)
    return int(state.iter), model


def restorable_state(path: Path, model: Path, scratch: Path) -> Path:
    """A state file whose ``learned_net`` is ``model``: ``path`` itself or a corrected copy in ``scratch``."""
    state = caffe_pb2().SolverState()
    state.ParseFromString(path.read_bytes())
    if Path(state.learned_net) == model:
        return path
    state.learned_net = str(model.resolve())
    fixed = scratch / path.name
    data = state.SerializeToString()
    with storage_errors(fixed, len(data)):
        fixed.write_bytes(data)
    return fixed


def find_resume_state(snapshot_dir: Path, note: Callable[[str], None] | None = None) -> Path | None:
    """The highest-iteration ``.solverstate`` in ``snapshot_dir`` that parses and has its model; a state cut
    short by a kill falls back to the previous one (so at most one snapshot interval is lost), and ``note``
    is told of every state passed over (the run writes it into ``log.txt``)."""
    for candidate in snapshots(snapshot_dir, "solverstate"):
        try:
            check_solverstate(candidate)
        except InputError as err:
            if note:
                note(f"skipping unusable snapshot: {err}")
            continue
        return candidate
    return None


def default_rank_model(runs_root: Path, rankset: str, net: str) -> Path:
    """The latest ranking model for ``rankset``/``net`` under ``runs_root`` (rule in the module docstring)."""
    best: tuple[float, Path] | None = None
    for run_json in sorted(runs_root.glob("*/run.json")):
        try:
            info = json.loads(run_json.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if info.get("kind") != "rank" or info.get("rankset") != rankset or info.get("net") != net:
            continue
        models = snapshots(run_json.parent / "snapshots", "caffemodel")
        if not models:
            continue
        newest = max(p.stat().st_mtime for p in models)
        if best is None or newest > best[0]:
            # The original fine-tunes from the ranking model at a set iteration (TID2013 50k, LIVE 20k)
            # when the run has it; otherwise from the run's latest snapshot.
            preferred = [p for p in models if snapshot_iteration(p) == PREFERRED_RANK_ITER.get(rankset)]
            best = (newest, (preferred or models)[0])
    if best is None:
        raise InputError(f"no ranking snapshot for rank set {rankset!r} and net {net!r} under {runs_root}/; "
                         "train one with `make train_rank`, or pass --rank-model / --from-scratch")
    return best[1]


# ---------------------------------------------------------------------------------------------------------
# Devices


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
    """A new NCCL id for the ranks. Unpatched pycaffe returns it cut at its first zero byte
    (BVLC/caffe#6600; tools/build_caffe.sh fixes that): the ranks would then read past it and hang or crash,
    so a short id is refused here with the reason."""
    uid = caffe.NCCL.new_uid()
    if len(uid) != NCCL_UNIQUE_ID_BYTES:
        raise InputError(f"this pycaffe's NCCL.new_uid() returned {len(uid)} bytes, not "
                         f"{NCCL_UNIQUE_ID_BYTES} (BVLC/caffe#6600); rebuild Caffe with `make caffe CUDA=1`, "
                         "which fixes it")
    return uid


# ---------------------------------------------------------------------------------------------------------
# Run folder, log


class RunLog:
    """``log.txt`` (appended, flushed per line) and the loss table behind ``loss.csv``/``loss.png``.

    A line the file system refuses raises ``StorageError`` naming ``log.txt``; a line cut short that way
    is ended before the next run appends to the log, so that no two lines run together.
    """

    def __init__(self, run_dir: Path, echo: bool = True) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "log.txt"
        self.table = LossTable()
        complete = True
        if self.path.is_file():  # a resumed run continues the same table
            with open(self.path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    self.table.feed(line)
                    complete = line.endswith("\n")
        self._broken = False
        with storage_errors(self.path):
            self._handle = open(self.path, "a", encoding="utf-8")
        if not complete:
            self._append("\n")
        self.echo = echo
        self._last_plot = 0.0

    def _append(self, text: str) -> None:
        try:
            with storage_errors(self.path, len(text.encode("utf-8"))):
                self._handle.write(text)
                self._handle.flush()
        except StorageError:
            self._broken = True  # the unwritten rest stays in the buffer: close() must not retry it
            raise

    def _write(self, text: str, show: bool) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}"
        self._append(line + "\n")
        self.table.feed(line)
        if show and self.echo:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)

    def note(self, text: str, show: bool = True) -> None:
        """A free-text line (ignored by the parser)."""
        self._write(text.replace("\n", " "), show)

    def event(self, kind: str, iteration: int, show: bool = False, **values: Any) -> None:
        """A parsed event line: ``<kind> iter=<N> key=value ...``."""
        parts = [f"{kind} iter={iteration}"]
        for key, value in values.items():
            parts.append(f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={value}")
        self._write(" ".join(parts), show)

    def flush_outputs(self, force_plot: bool = False) -> None:
        """Rewrite ``loss.csv`` (atomically) and, at most every 30 s unless forced, ``loss.png``."""
        if not self.table.rows():
            return
        write_csv(self.table, self.run_dir / "loss.csv")
        now = time.monotonic()
        if force_plot or now - self._last_plot >= PLOT_EVERY_S:
            plot(self.table, self.run_dir / "loss.png", title=self.run_dir.name)
            self._last_plot = now

    def close(self) -> None:
        """Close the log file (after a refused write, dropping what could not be written)."""
        if self._broken:
            with contextlib.suppress(OSError):
                self._handle.close()
        else:
            with storage_errors(self.path):
                self._handle.close()


@dataclasses.dataclass
class PreparedRun:
    """Everything a training process needs, picklable for the multi-GPU worker processes."""

    kind: str
    run_dir: Path
    solver_path: Path
    train_net: Path
    snapshot_dir: Path
    max_iter: int
    snapshot_every: int
    display: int
    test_interval: int
    test_iters: int
    test_items: int | None  # test-list length (fine-tuning): pooled metrics over exactly these items
    weights: Path | None
    resume: Path | None
    device: int = -1
    rank_solvers: list[Path] = dataclasses.field(default_factory=list)
    skip_layers: tuple[str, ...] = ()  # layers of the weights file not to copy
    head_init: str = "filler"  # fine-tuning: how the new head starts (rankiqa.head_init.HEAD_INITS)
    train_list: Path | None = None  # fine-tuning: the training list (labels for the head's start)
    crop: int = 0  # fine-tuning: crop size of the data layer
    seed: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)  # for log.txt, found while preparing


#: Identity keys whose values are digests: a mismatch is said in words.
_DIGEST_KEYS = {"net_definition": "the train net (its layers and parameters)",
                "solver_definition": "the solver"}


def check_run_identity(run_dir: Path, identity: dict[str, Any]) -> None:
    """Refuse to continue a run folder that holds a different kind of run (a rerun must match)."""
    run_json = run_dir / "run.json"
    if not run_json.is_file():
        return
    try:
        old = json.loads(run_json.read_text(encoding="utf-8"))
    except ValueError:
        raise InputError("run.json is not JSON", run_json) from None
    for key, value in identity.items():
        if key in old and old[key] != value:
            what = (f"{_DIGEST_KEYS[key]} changed since this run started" if key in _DIGEST_KEYS else
                    f"this run folder holds a run with {key}={old[key]!r}, not {value!r}")
            raise InputError(f"{what}; choose another --out (or delete the folder to start over)", run_json)


def definition_digest(message: Any) -> str:
    """SHA-256 of a parsed prototxt as protobuf text: its content, without comments or layout."""
    from google.protobuf import text_format

    return provenance.sha256_json(text_format.MessageToString(message))


def run_inputs(lists: dict[str, Path], images: Sequence[Path]) -> dict[str, Any]:
    """What a run reads (``inputs.json``): the SHA-256 of each list or manifest, and every image (or LMDB
    file) they name by size and modification time."""
    return {"lists": provenance.content(lists),
            "images": provenance.fingerprint({str(path): path for path in images})}


def check_run_inputs(run_dir: Path, inputs: dict[str, Any]) -> None:
    """Refuse to continue a run on data other than those it started on (its ``inputs.json``), naming what
    changed; a run folder without the file (an earlier version) is not checked."""
    path = run_dir / "inputs.json"
    old = provenance.read_json(path)
    if old is None:
        return
    old_lists = old.get("lists", {})
    problems = [f"{name} changed (content)" for name in sorted(set(old_lists) | set(inputs["lists"]))
                if old_lists.get(name) != inputs["lists"].get(name)]
    images = provenance.diff_records(old.get("images", {}), inputs["images"])
    if images:
        problems.append(f"images (size or modification time): {images.describe()}")
    if problems:
        raise InputError(f"this run was trained on other data: {'; '.join(problems)}; resuming would mix the "
                         "two: choose another --out (or delete the folder to start over)", path)


# ---------------------------------------------------------------------------------------------------------
# The training loop


class StopRequest:
    """First Ctrl-C (or SIGTERM): stop after the current iteration; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Install the handlers in the main thread (a no-op elsewhere), restoring the old ones afterwards."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum: int, frame: Any) -> None:
            if self.requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.requested = True

        old_int = signal.signal(signal.SIGINT, handler)
        old_term = signal.signal(signal.SIGTERM, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)


def learning_rate(solver_param: Any, iteration: int) -> float:
    """The learning rate Caffe's SGD uses at ``iteration`` (policies fixed, step, multistep, exp, inv, poly,
    sigmoid), for the log: pycaffe exposes it only on SGD solver objects."""
    p = solver_param
    policy = p.lr_policy or "fixed"
    base = p.base_lr
    if policy == "fixed":
        return base
    if policy == "step":
        return base * p.gamma ** (iteration // max(p.stepsize, 1))
    if policy == "multistep":
        return base * p.gamma ** sum(1 for value in p.stepvalue if iteration >= value)
    if policy == "exp":
        return base * p.gamma ** iteration
    if policy == "inv":
        return base * (1 + p.gamma * iteration) ** (-p.power)
    if policy == "poly":
        return base * (1 - iteration / max(p.max_iter, 1)) ** p.power
    if policy == "sigmoid":
        return base / (1 + math.exp(-p.gamma * (iteration - p.stepsize)))
    return float("nan")


def net_loss(net: Any) -> float:
    """The weighted sum of a net's loss outputs (what Caffe reports as the iteration loss)."""
    weights = net.blob_loss_weights
    total = 0.0
    for name in net.outputs:
        weight = float(weights.get(name, 0.0))
        if weight:
            total += weight * float(net.blobs[name].data.sum())
    return total


def _correlation_layer(net_param: Any) -> tuple[str, str, list[str]] | None:
    """(prediction blob, score blob, top names) of the test net's correlation layer, if any."""
    for layer in python_layers(net_param, "corr_layer"):
        if layer_phase(layer) in ("test", "both") and len(layer.bottom) >= 2:
            return layer.bottom[0], layer.bottom[1], list(layer.top)
    return None


def run_test(solver: Any, run: PreparedRun, corr: tuple[str, str, list[str]] | None,
             note: Callable[[str], None] | None = None) -> dict[str, float]:
    """One pass of the test net: mean of each output over ``test_iters`` batches; with a correlation layer,
    SROCC and PLCC over all the pass's predictions (the first ``test_items`` of them), and ``note`` told
    when they are 0 by definition (constant predictions: a collapsed net)."""
    import numpy as np

    from rankiqa import metrics

    net = solver.test_nets[0]
    net.share_with(solver.net)
    sums: dict[str, float] = {}
    predictions: list[Any] = []
    scores: list[Any] = []
    for _ in range(run.test_iters):
        outputs = net.forward()
        for name, value in outputs.items():
            sums[name] = sums.get(name, 0.0) + float(np.mean(value))
        if corr:
            predictions.append(net.blobs[corr[0]].data.ravel().copy())
            scores.append(net.blobs[corr[1]].data.ravel().copy())
    results = {name: total / run.test_iters for name, total in sums.items()}
    if corr and predictions:
        pred = np.concatenate(predictions)
        score = np.concatenate(scores)
        if run.test_items:
            pred, score = pred[: run.test_items], score[: run.test_items]
        if np.isfinite(pred).all() and np.isfinite(score).all():
            # rankiqa.metrics: 0.0 where undefined (a constant output, e.g. a collapsed net), as in eval.
            srocc, plcc = metrics.srocc(pred, score), metrics.plcc(pred, score)
            reason = metrics.degenerate_reason(pred, score)
            if reason and note:
                note(f"warning: test pass: {reason}")
        else:  # a diverged net: no correlation to report
            srocc = plcc = float("nan")
        names = corr[2] if len(corr[2]) >= 2 else ["srocc", "plcc"]
        results[names[0]] = srocc
        results[names[1]] = plcc
        # The fine-tuning nets keep EuclideanLoss in the TRAIN phase: report the same loss on the test pass.
        results.setdefault("loss", float(np.sum((pred - score) ** 2) / (2 * len(pred))))
    return results


def train_process(run: PreparedRun, share: GpuShare | None = None, nccl_uid: bytes | None = None) -> int:
    """Build the solver in this process and train to ``max_iter``; returns the final iteration.

    With ``share`` (multi-GPU) this is one of ``share.shard_count`` NCCL ranks; rank 0 alone logs, tests and
    snapshots (Caffe's root solver). Raises ``KeyboardInterrupt`` after snapshotting when stopped.
    """
    caffe = import_caffe()
    device = run.device if share is None else share.device
    if share is not None:
        caffe.set_device(device)
        caffe.set_mode_gpu()
        caffe.set_solver_count(share.shard_count)
        caffe.set_solver_rank(share.rank)
        caffe.set_multiprocess(True)
    else:
        set_device(caffe, device)
    root = share is None or share.rank == 0
    solver_path = run.solver_path if share is None else run.rank_solvers[share.rank]
    net_param = read_net_param(run.train_net)
    corr = _correlation_layer(net_param)
    log = RunLog(run.run_dir, echo=True) if root else None
    for text in run.notes if log else ():
        log.note(text)
    blas_before = blas.get_threads() if device < 0 else None
    if blas_before is not None:
        # A core for each prefetch worker, the rest for Caffe's OpenBLAS (rankiqa/blas.py, BENCHMARKS.md).
        threads = blas.training_threads(loader_workers(net_param, run.train_net))
        blas.set_threads(threads)
        if log:
            log.note(f"OpenBLAS threads: {threads} (OPENBLAS_NUM_THREADS sets another count)", show=False)
    try:
        if log:
            removed = discard_unfinished_snapshots(run.snapshot_dir)
            if removed:
                log.note(f"removed unfinished snapshot file(s) of an interrupted run: {', '.join(removed)}")
        solver = caffe.get_solver(str(solver_path))
        if run.resume is not None:
            _, model = check_solverstate(run.resume)
            with _scratch_dir(run.run_dir) as scratch:
                solver.restore(str(restorable_state(run.resume, model, scratch)))
            if log:
                log.note(f"resumed from {run.resume} at iteration {solver.iter}")
        elif run.weights is not None:
            copied = load_weights(solver.net, run.weights, run.skip_layers)
            if log:
                log.note(f"initialised {len(copied)} layer(s) from {run.weights}: {' '.join(copied)}")
        if run.resume is None and run.kind == "finetune" and root and run.train_list is not None:
            head = head_init.find_head(net_param, run.train_net)
            note, energy = head_init.init_head(solver.net, head, run.head_init, run.train_list, run.crop,
                                               run.seed, run.weights)
            if log:
                log.note(note)
            if energy is not None and share is None:
                solver = _bound_head_step(caffe, solver, solver_path, net_param, head, energy, log)
        if share is not None:
            nccl = caffe.NCCL(solver, nccl_uid)
            nccl.bcast()  # rank 0's weights (initialised or restored) to every GPU
            solver.add_callback(nccl)
            if solver.param.layer_wise_reduce:
                solver.net.after_backward(nccl)
        return _loop(caffe, solver, run, log, corr)
    except StorageError as err:
        if log is None:
            raise
        raise _stopped_for_space(err, run, log) from None
    finally:
        if log:
            log.close()
        if blas_before is not None:
            blas.set_threads(blas_before)


def _stopped_for_space(err: StorageError, run: PreparedRun, log: RunLog) -> StorageError:
    """``err`` with where the run stopped and its last good snapshot (the one a rerun resumes from), also
    noted in the log when the log can still be written."""
    last = find_resume_state(run.snapshot_dir)
    where = (f"training stopped; the last good snapshot is {last} (iteration {snapshot_iteration(last)}), "
             "where a rerun resumes" if last else "training stopped before its first snapshot")
    stopped = err.with_note(where)
    with contextlib.suppress(StorageError):
        log.note(f"error: {stopped}", show=False)  # cli_main prints it
    return stopped


def _snapshot_taken(run: PreparedRun, iteration: int, log: RunLog, show: bool = False) -> None:
    """Publish the snapshot Caffe just wrote and say in the log that it is the last good one."""
    state = publish_snapshot(run.snapshot_dir, run.run_dir.name, iteration)
    log.note(f"snapshot at iteration {iteration}: {state} (last good snapshot)", show=show)


def _bound_head_step(caffe: Any, solver: Any, solver_path: Path, net_param: Any, head: Any, energy: float,
                     log: RunLog | None) -> Any:
    """Lower ``base_lr`` to ``head_init.stable_lr`` when it is above it, before the first iteration.

    The lowered rate is written into the run's ``solver.prototxt`` (a resumed run reads it from there) and
    the solver is built again from it, with the weights as they are now (transferred layers, fitted head).
    """
    param = read_solver_param(solver_path)
    bound = head_init.stable_lr(net_param, head, energy)
    if param.base_lr <= bound:
        return solver
    old_lr = param.base_lr
    param.base_lr = float(f"{bound:.3g}")
    write_text_proto(param, solver_path, f"written by tools/train.py; base_lr lowered from {old_lr:g} to "
                                         f"{param.base_lr:g} by the fine-tuning head's step bound "
                                         "(rankiqa/head_init.py, HEAD_STEP)")
    fresh = caffe.get_solver(str(solver_path))
    for name, blobs in solver.net.params.items():
        for index, blob in enumerate(blobs):
            fresh.net.params[name][index].data[...] = blob.data
    if log:
        log.note(f"base_lr lowered from {old_lr:g} to {param.base_lr:g}: lr x {head.layer} lr_mult x loss "
                 f"weight x E||f||^2 must stay <= {head_init.HEAD_STEP:g} for a stable head")
    return fresh


@contextlib.contextmanager
def _scratch_dir(run_dir: Path) -> Iterator[Path]:
    scratch = run_dir / ".scratch"
    scratch.mkdir(exist_ok=True)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _loop(caffe: Any, solver: Any, run: PreparedRun, log: RunLog | None, corr: Any) -> int:
    from tqdm import tqdm

    start = solver.iter
    has_test = bool(run.test_iters and run.test_interval and len(solver.test_nets))
    snapshot_every = run.snapshot_every
    solver_param = read_solver_param(run.solver_path)
    last_snapshot = start if run.resume is not None else -1
    if log:
        log.event("start", start, show=False, max_iter=run.max_iter)
        if has_test and start == 0:
            log.event("test", 0, show=True, **run_test(solver, run, corr, log.note))
        log.flush_outputs(force_plot=True)
    if start >= run.max_iter:
        if log:
            log.note(f"already at iteration {start} of {run.max_iter}: nothing to train")
        return start
    snapshot_size = 0
    if log is not None:
        # Caffe aborts the process when a snapshot does not fit: check before each one, and now, so that a
        # run that could never save its work stops before it starts.
        snapshot_size = snapshot_bytes(solver.net, solver_param, read_net_param(run.train_net))
        require_free_space(run.snapshot_dir, snapshot_size, "a snapshot of this net")
    window: list[float] = []
    stop = StopRequest()
    interrupted = False
    diverged = ""
    bar = tqdm(total=run.max_iter, initial=start, disable=None if log else True, dynamic_ncols=True,
               desc=run.run_dir.name, unit="it", file=sys.stderr)
    try:
        with stop.installed():
            while solver.iter < run.max_iter:
                if stop.requested:
                    interrupted = True
                    break
                # Caffe's root solver snapshots inside step() when the new iteration is a multiple.
                due = bool(snapshot_every) and (solver.iter + 1) % snapshot_every == 0
                if due and log is not None:
                    require_free_space(run.snapshot_dir, snapshot_size,
                                       f"the snapshot of iteration {solver.iter + 1}")
                solver.step(1)
                iteration = solver.iter
                if due:
                    last_snapshot = iteration
                if log is None:
                    continue
                loss = net_loss(solver.net)
                if not math.isfinite(loss):
                    # Diverged weights only get worse (and a snapshot of them would be resumed from): stop.
                    diverged = f"the loss is {loss} at iteration {iteration}: training diverged; lower --lr"
                    break
                if due:
                    _snapshot_taken(run, iteration, log)
                window.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                if iteration % run.display == 0 or iteration == run.max_iter:
                    lr = learning_rate(solver_param, iteration - 1)
                    log.event("train", iteration, loss=sum(window) / len(window), lr=lr)
                    window = []
                    log.flush_outputs()
                if has_test and iteration % run.test_interval == 0:
                    log.event("test", iteration, show=True, **run_test(solver, run, corr, log.note))
                    log.flush_outputs(force_plot=True)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if diverged:
        if log is not None:
            discard_unfinished_snapshots(run.snapshot_dir)  # a snapshot of the diverged weights, if any
            log.note(f"error: {diverged}")
            log.flush_outputs(force_plot=True)
        raise InputError(diverged, run.solver_path)
    if log is not None:
        if last_snapshot != solver.iter:
            require_free_space(run.snapshot_dir, snapshot_size, f"the snapshot of iteration {solver.iter}")
            solver.snapshot()
            _snapshot_taken(run, solver.iter, log, show=interrupted)
        if window:
            log.event("train", solver.iter, loss=sum(window) / len(window),
                      lr=learning_rate(solver_param, solver.iter - 1))
        log.flush_outputs(force_plot=True)
        if interrupted:
            log.note(f"stopped at iteration {solver.iter}; rerun the same command to continue")
    if interrupted:
        raise KeyboardInterrupt
    return solver.iter


def _gpu_worker(run: PreparedRun, share: GpuShare, nccl_uid: bytes) -> None:
    """Entry point of one multi-GPU process (spawned)."""
    try:
        train_process(run, share, nccl_uid)
    except KeyboardInterrupt:
        sys.exit(130)
    except InputError as err:  # e.g. no room for rank 0's snapshot: one line, as cli_main would print it
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def train_multi_gpu(run: PreparedRun, shares: list[GpuShare], worker: Any = _gpu_worker) -> None:
    """One process per GPU, NCCL all-reduce of the gradients after each backward (Caffe's multi-GPU path).

    ``worker`` is the entry point of each process (:func:`_gpu_worker`; a module-level stand-in in tests).
    A process that fails leaves the others waiting for it inside NCCL: they are stopped, and the error
    names the process(es) that failed.
    """
    import multiprocessing
    from multiprocessing.connection import wait

    caffe = import_caffe()
    require_nccl(caffe)
    uid = nccl_uid(caffe)
    # spawn, not fork: a forked child would inherit this process's Caffe/CUDA state.
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=worker, args=(run, share, uid), name=f"rank{share.rank}")
                 for share in shares]
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
        raise InputError(f"multi-GPU training failed in {', '.join(failed)} (see {run.run_dir / 'log.txt'})")
    if any(p.exitcode == 130 for p in processes):
        raise KeyboardInterrupt


# ---------------------------------------------------------------------------------------------------------
# Preparing a run folder


def _prepare(args: argparse.Namespace, kind: str, identity: dict[str, Any], net_src: Path, solver_src: Path,
             configure: Any, test_iters_default: int | None, test_items: int | None, weights: Path | None,
             header: str, inputs: dict[str, Any]) -> tuple[PreparedRun, list[GpuShare] | None]:
    """Write ``train.prototxt``/``solver.prototxt`` (+ per-rank copies for --gpus); pick the resume state.

    Everything that can be refused is checked before the run folder is created or touched: the flags, the
    run's identity, the resume state, and the resolved nets and solver (``rankiqa.netcheck``: what Caffe
    would otherwise abort the process on).
    """
    run_dir: Path = args.out
    net_param = read_net_param(net_src)
    solver_param = read_solver_param(solver_src)
    identity = {**identity, "net_definition": definition_digest(net_param),
                "solver_definition": definition_digest(solver_param)}
    check_run_identity(run_dir, identity)
    check_run_inputs(run_dir, inputs)
    snapshot_dir = run_dir / "snapshots"
    if args.iters is not None and args.iters < 1:
        raise InputError(f"--iters must be >= 1, got {args.iters}")
    if args.snapshot is not None and args.snapshot < 1:
        raise InputError(f"--snapshot must be >= 1, got {args.snapshot}")
    if args.display < 1:
        raise InputError(f"--display must be >= 1, got {args.display}")
    if args.lr is not None and not args.lr > 0:
        raise InputError(f"--lr must be > 0, got {args.lr}")
    for flag in ("test_interval", "test_iters", "seed"):
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            raise InputError(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(args, flag)}")
    if args.lr is None and args.net == "shallow":
        # The faithful solvers' rates are VGG-16's; the Shallow net (a CPU-only extra) has its own.
        args.lr = SHALLOW_DEFAULT_LR[kind]

    shares = gpu_shares(parse_gpus(args.gpus)) if args.gpus else None
    if shares is not None:
        require_nccl(import_caffe())
        device = shares[0].device
    else:
        device = resolve_device(args.gpu)

    testable = has_test_phase(net_param) and (args.test_interval is None or args.test_interval > 0)
    if args.test_iters is not None:
        test_iters = args.test_iters
    elif kind == "finetune":  # one pass over the whole test list (pooled SROCC/PLCC)
        test_iters = test_iters_default or 0
    else:
        test_iters = (solver_param.test_iter[0] if solver_param.test_iter else 0) or test_iters_default or 0
    if not testable or test_iters < 1:
        test_iters = 0
    if args.test_interval is not None:
        test_interval = args.test_interval
    else:
        test_interval = solver_param.test_interval or DEFAULT_TEST_INTERVAL[kind]
    snapshot = args.snapshot or (None if solver_param.snapshot else DEFAULT_SNAPSHOT[kind])
    prefix = snapshot_dir / SNAPSHOT_STAGING / run_dir.name  # published to snapshot_dir when complete
    header_lines = (f"{header}\nwritten by tools/train.py from {_rel(net_src)} / {_rel(solver_src)}\n"
                    f"test net run by the driver every {test_interval} iterations ({test_iters} batch(es))")

    notes: list[str] = []
    resume = args.resume
    if resume is not None:
        start_iter, _ = check_solverstate(resume)
    else:
        resume = find_resume_state(snapshot_dir, notes.append)
        start_iter = check_solverstate(resume)[0] if resume is not None else 0
    # The data streams continue where the interrupted run left them: one batch per iteration (x iter_size)
    # per training data layer, test_iters batches per test pass (one at iteration 0, then every interval).
    start_batch = start_iter * max(1, solver_param.iter_size)
    tests_done = (1 + start_iter // test_interval) if (test_iters and test_interval and start_iter) else 0
    test_start_batch = tests_done * test_iters

    train_net = configure(net_param, None, start_batch, test_start_batch)
    netcheck.check_net(train_net, net_src, "train")
    if test_iters:
        netcheck.check_net(train_net, net_src, "test")
    train_path = run_dir / "train.prototxt"
    solver_path = run_dir / "solver.prototxt"
    solver = configure_solver(solver_param, train_path, prefix, args.iters, args.lr, snapshot, args.seed,
                              device, test_iters or None)
    netcheck.check_solver(solver, solver_src)

    with storage_errors(snapshot_dir):
        snapshot_dir.mkdir(parents=True, exist_ok=True)
    write_text_proto(train_net, train_path, header_lines)
    write_text_proto(solver, solver_path, header_lines)
    rank_solvers: list[Path] = []
    for share in shares or []:
        rank_header = header_lines + f"\nGPU rank {share.rank} of {share.shard_count}"
        rank_net = run_dir / f"train.rank{share.rank}.prototxt"
        write_text_proto(configure(net_param, share, start_batch, test_start_batch), rank_net, rank_header)
        rank_solver = run_dir / f"solver.rank{share.rank}.prototxt"
        # Only the root solver (rank 0) tests.
        solver_r = configure_solver(solver_param, rank_net, prefix, args.iters, args.lr, snapshot, args.seed,
                                    share.device, (test_iters or None) if share.rank == 0 else None)
        write_text_proto(solver_r, rank_solver, rank_header)
        rank_solvers.append(rank_solver)

    record = {**identity, "initialisation": getattr(args, "initialisation", None),
              "argv": getattr(args, "argv", None), "train_net_source": _rel(net_src),
              "solver_source": _rel(solver_src), "device": device,
              "gpus": [s.device for s in shares] if shares else None}
    atomic_write_text(run_dir / "inputs.json", json.dumps(inputs, indent=1) + "\n")
    atomic_write_text(run_dir / "run.json", json.dumps(record, indent=2) + "\n")
    run = PreparedRun(kind=kind, run_dir=run_dir, solver_path=solver_path, train_net=train_path,
                      snapshot_dir=snapshot_dir, max_iter=int(solver.max_iter),
                      snapshot_every=int(solver.snapshot), display=args.display,
                      test_interval=test_interval, test_iters=test_iters, test_items=test_items,
                      weights=None if resume is not None else weights, resume=resume, device=device,
                      rank_solvers=rank_solvers,
                      skip_layers=tuple(n for n in (args.skip_layers or "").split(",") if n.strip()),
                      notes=notes)
    return run, shares


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _net_dir(args: argparse.Namespace) -> Path:
    return Path(args.prototxts) / args.net


# ---------------------------------------------------------------------------------------------------------
# Initialisation: what the weights start from, refused where it would silently differ from the paper, and
# recorded in run.json (``initialisation``: ``weights`` path or None, a readable ``description``; for
# fine-tuning from a ranking run also that run's ``rank_initialisation``), which the evaluation reports.

#: ``--weights none`` (``WEIGHTS=none``): a deliberate start from random initialisation.
NO_WEIGHTS = "none"
#: Why VGG-16 ranking wants ImageNet weights, and how to give them.
VGG16_NEEDS_WEIGHTS = (
    "VGG-16 ranking starts from ImageNet VGG-16 weights in the paper (the original trains with --weights "
    "VGG_ILSVRC_16_layers.caffemodel); give them with WEIGHTS=/path/VGG_ILSVRC_16_layers.caffemodel "
    "(make) or --weights, or WEIGHTS=none / --weights none to train from random initialisation on purpose")


def _resuming(args: argparse.Namespace) -> bool:
    return args.resume is not None or find_resume_state(args.out / "snapshots") is not None


def _recorded_initialisation(run_dir: Path) -> dict[str, Any]:
    """The ``initialisation`` an earlier run of this folder recorded (a resumed run keeps its start)."""
    try:
        recorded = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("initialisation")
    except (OSError, ValueError, AttributeError):
        recorded = None
    return recorded or {"weights": None, "description": "unknown (resumed; run.json did not record it)"}


def rank_initialisation(args: argparse.Namespace) -> tuple[Path | None, dict[str, Any]]:
    """(weights to load or None, the run.json ``initialisation``) of a ranking run.

    ``--weights X`` loads X; ``--weights none`` starts from random initialisation on purpose; without
    ``--weights`` a resumed run keeps what it recorded, a new Shallow run starts from random initialisation
    and a new VGG-16 run is refused (``InputError``: the paper starts from ImageNet weights).
    """
    if args.weights is not None and str(args.weights) == NO_WEIGHTS:
        return None, {"weights": None,
                      "description": "random initialisation, chosen with --weights none (the paper starts "
                                     "VGG-16 ranking from ImageNet weights)"}
    if args.weights is not None:
        path = Path(args.weights).resolve()
        return Path(args.weights), {"weights": str(path), "description": f"weights {path}"}
    if _resuming(args):
        return None, _recorded_initialisation(args.out)
    if args.net == "vgg16":
        raise InputError(VGG16_NEEDS_WEIGHTS)
    return None, {"weights": None, "description": f"random initialisation ({args.net} net, no --weights)"}


def finetune_initialisation(args: argparse.Namespace, weights: Path | None) -> dict[str, Any]:
    """The run.json ``initialisation`` of a fine-tuning run starting from ``weights`` (None: resumed or
    ``--from-scratch``); a ranking model's own run.json adds how its ranking started."""
    if args.from_scratch:
        return {"weights": None,
                "description": "random initialisation (--from-scratch: the baseline without ranking)"}
    if weights is None:
        return _recorded_initialisation(args.out)
    path = Path(weights).resolve()
    record = run_record(path)
    if record.get("kind") != "rank":
        return {"weights": str(path), "description": f"weights {path}"}
    ranked_from = record.get("initialisation") or {"description": "unknown (its run.json did not record it)"}
    return {"weights": str(path), "rank_initialisation": ranked_from,
            "description": f"ranking model {path}, whose ranking started from {ranked_from['description']}"}


def prepare_rank(args: argparse.Namespace) -> tuple[PreparedRun, list[GpuShare] | None]:
    """Resolve the ``rank`` subcommand into a prepared run folder."""
    data_dir: Path = args.data
    levels, splits = manifest_levels(data_dir / "manifest.csv")
    if not splits.get("train"):
        raise InputError("manifest has no rows with split=train", data_dir / "manifest.csv")
    default_types, default_images = RANK_BATCH[args.rankset]
    types_per_batch = args.types_per_batch or default_types
    images_per_group = args.images_per_group or default_images
    if types_per_batch < 1 or images_per_group < 1:
        raise InputError("--types-per-batch and --images-per-group must be >= 1")
    net_src = args.train_prototxt or _net_dir(args) / "rank_train.prototxt"
    solver_src = args.solver_prototxt or Path(args.prototxts) / "solvers" / f"rank_{args.rankset}.prototxt"

    def configure(net_param: Any, share: GpuShare | None, start: int, test_start: int) -> Any:
        net_param = configure_rank_net(net_param, net_src, data_dir, types_per_batch, images_per_group,
                                       levels, args.seed, args.workers, args.direction, share, start,
                                       test_start)
        for layer in python_layers(net_param, "rank_data"):
            params = get_param_str(layer, net_src)
            params["aligned_crops"] = bool(args.aligned_crops)
            set_param_str(layer, params)
        return net_param

    # Without test references there is no test net (its data layer would have nothing to read); with fewer
    # test references than images per group (LIVE style: 2) the test batches cannot be formed either.
    test_refs = splits.get("test", 0)
    if test_refs < images_per_group:
        if test_refs:
            print(f"note: {test_refs} test reference(s) < {images_per_group} images per group: no test net",
                  file=sys.stderr)
        test_refs = 0
    test_default = DEFAULT_RANK_TEST_ITERS if test_refs else None
    if not test_refs:
        args.test_iters = 0
    # Everything that decides what the weights learn: a rerun with other values is refused, not resumed.
    identity = {"kind": "rank", "rankset": args.rankset, "net": args.net, "data": str(data_dir.resolve()),
                "direction": args.direction, "types_per_batch": types_per_batch,
                "images_per_group": images_per_group, "aligned_crops": bool(args.aligned_crops)}
    check_run_identity(args.out, identity)  # another run's folder is the first thing to say
    weights, args.initialisation = rank_initialisation(args)
    if args.weights is not None:  # a rerun that resumes may leave it out; one that names another differs
        identity["weights"] = args.initialisation["weights"] or NO_WEIGHTS
    header = (f"rank training: rank set {args.rankset}, net {args.net}, {types_per_batch} types x "
              f"{images_per_group} image(s) x {levels + 1} levels per batch, direction {args.direction}")
    images = manifest_images(data_dir)
    return _prepare(args, "rank", identity, net_src, solver_src, configure, test_default, None, weights,
                    header, run_inputs({"manifest.csv": data_dir / "manifest.csv"}, images))


def prepare_finetune(args: argparse.Namespace) -> tuple[PreparedRun, list[GpuShare] | None]:
    """Resolve the ``finetune`` subcommand into a prepared run folder."""
    lists_dir: Path = args.lists
    if count_list_lines(lists_dir / "train.txt") == 0:
        raise InputError("fine-tuning list missing or empty (run `make ft_lists`?)", lists_dir / "train.txt")
    if args.batch is not None and args.batch < 1:
        raise InputError(f"--batch must be >= 1, got {args.batch}")
    style = FT_STYLE[args.dataset]
    rankset = args.rankset or style
    net_dir = _net_dir(args)
    if args.train_prototxt:
        net_src = args.train_prototxt
    elif style == "tid2013" and (net_dir / "ft_tid2013_train.prototxt").is_file():
        net_src = net_dir / "ft_tid2013_train.prototxt"
    else:
        net_src = net_dir / "ft_train.prototxt"
    solver_src = args.solver_prototxt or Path(args.prototxts) / "solvers" / f"ft_{style}.prototxt"
    if args.from_scratch:
        weights = None
    elif args.rank_model is not None:
        weights = args.rank_model
    elif (args.out / "snapshots").is_dir() and find_resume_state(args.out / "snapshots"):
        weights = None  # resuming: the solver state carries the weights
    else:
        weights = default_rank_model(args.out.resolve().parent, rankset, args.net)
    n_test = count_list_lines(lists_dir / "test.txt")
    net_param = read_net_param(net_src)
    test_batch = test_batch_size(net_param, net_src) or 30
    test_default = math.ceil(n_test / test_batch) if n_test else None
    if not n_test:
        args.test_iters = 0

    default_init, default_scale = FT_HEAD_DEFAULTS[args.net]
    head_start = args.head_init or default_init
    loss_scale = args.loss_scale or default_scale
    loss_weight = 1.0
    if loss_scale == "std":
        _, spread = head_init.label_spread(head_init.list_labels(lists_dir / "train.txt"))
        loss_weight = 1.0 / spread**2
    head = head_init.find_head(net_param, net_src)

    def configure(net_param: Any, share: GpuShare | None, start: int, test_start: int) -> Any:
        net_param = configure_ft_net(net_param, net_src, lists_dir, args.batch, args.seed, args.workers,
                                     share, start, test_start)
        for layer in net_param.layer:
            if layer.name == head.loss_layer:
                layer.loss_weight[:] = [loss_weight]
        return net_param

    identity: dict[str, Any] = {"kind": "finetune", "dataset": args.dataset, "net": args.net,
                                "lists": str(lists_dir.resolve()), "from_scratch": bool(args.from_scratch),
                                "head_init": head_start, "loss_scale": loss_scale}
    if args.rank_model is not None:  # a rerun that resumes may leave it out; one that names another differs
        identity["rank_model"] = str(Path(args.rank_model).resolve())
    header = (f"fine-tuning: dataset {args.dataset} ({style} style), net {args.net}, "
              f"init {'scratch' if args.from_scratch else weights}")
    lists = {name: lists_dir / name for name in ("train.txt", "test.txt") if (lists_dir / name).is_file()}
    images = [Path(path) for listed in lists.values() for path, _ in read_list(listed, check_files=False)]
    args.initialisation = finetune_initialisation(args, weights)
    run, shares = _prepare(args, "finetune", identity, net_src, solver_src, configure, test_default,
                           n_test or None, weights, header, run_inputs(lists, sorted(set(images))))
    crop = int(get_param_str(next(python_layers(net_param, "ft_data")), net_src).get("crop", 224))
    run = dataclasses.replace(run, head_init=head_start, train_list=lists_dir / "train.txt", crop=crop,
                              seed=args.seed)
    return run, shares


# ---------------------------------------------------------------------------------------------------------
# Command line


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
    parser.add_argument("--prototxts", default=str(PROTOTXT_DIR), help=argparse.SUPPRESS)
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
    rank.add_argument("--data", type=Path, required=True, help="data/ranks/<set> (manifest.csv)")
    _common_flags(rank)
    rank.add_argument("--types-per-batch", type=int, help="distortion types per batch (tid2013: 9, live: 4)")
    rank.add_argument("--images-per-group", type=int, help="images per group (tid2013: 1, live: 2)")
    rank.add_argument("--weights", type=Path,
                      help="initial weights by layer name: ImageNet VGG-16 (VGG_ILSVRC_16_layers.caffemodel, "
                           "as the paper; required for a new vgg16 run), or 'none' for random initialisation")
    rank.add_argument("--aligned-crops", action="store_true",
                      help="one crop window for all levels of a reference in a group (default: one per "
                           "image, as the original)")
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
                    help="start of the new head: filler (the prototxt's, the original), mean (weights 0, "
                         "bias = mean label) or linear (a linear probe on the transferred features); "
                         "default per net: " + ", ".join(f"{n} {d[0]}" for n, d in FT_HEAD_DEFAULTS.items()))
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
    print(f"note: removed {created} (the run failed before its first snapshot)", file=sys.stderr)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in run.json
    if args.gpus and args.gpu not in ("auto", None):
        raise InputError("give --gpu or --gpus, not both")
    created = _first_missing(args.out)
    try:
        run, shares = prepare_rank(args) if args.command == "rank" else prepare_finetune(args)
        if shares is not None:
            train_multi_gpu(run, shares)
        else:
            train_process(run)
    except BaseException:
        _remove_if_untrained(created, args.out / "snapshots")
        raise
    final = snapshots(run.snapshot_dir, "caffemodel")
    if final:
        print(f"done: {final[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
