"""Weights and snapshots: loading weights by layer name, snapshot files, their publication, resume.

Caffe writes each snapshot into ``snapshots/.partial/`` (the written solver's ``snapshot_prefix``); the
trainer moves each finished pair into ``snapshots/`` (:func:`publish_snapshot`). A rerun continues from the
highest-iteration valid ``.solverstate`` (:func:`find_resume_state`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rankiqa.caffe_io import caffe_pb2, check_weight_shapes, parse_binary, read_caffemodel
from rankiqa.errors import InputError
from rankiqa.fsutil import storage_errors
from rankiqa.registry import RANK_STYLES

_SNAPSHOT_NAME = re.compile(r"_iter_(\d+)\.(caffemodel|solverstate)$")
#: Caffe writes each snapshot into this sub-folder of ``snapshots/``; the driver moves the pair beside the
#: others once both files are complete (:func:`publish_snapshot`). A full disk makes Caffe abort the process
#: inside its writer, so a file cut short stays here, where nothing looks for snapshots, and the next run
#: removes it.
SNAPSHOT_STAGING = ".partial"
#: Solver types whose state holds two history blobs per parameter blob (Caffe's AdaDelta and Adam); the
#: others (SGD, Nesterov, AdaGrad, RMSProp) hold one.
_TWO_HISTORY_SOLVERS = ("AdaDelta", "Adam")


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
    """The latest ranking model for ``rankset``/``net`` under ``runs_root``: among the folders whose
    ``run.json`` says ``kind: rank`` with this rank set and net, the run whose newest snapshot is the most
    recent file; from it, the ``.caffemodel`` of the ranking style's ``preferred_snapshot`` (the original's
    iteration: TID2013 50k, LIVE 20k) when it exists, else the one with the highest iteration."""
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
            style = RANK_STYLES.get(rankset)
            preferred = [p for p in models if style and snapshot_iteration(p) == style.preferred_snapshot]
            best = (newest, (preferred or models)[0])
    if best is None:
        raise InputError(f"no ranking snapshot for rank set {rankset!r} and net {net!r} under {runs_root}/; "
                         "train one with `make train_rank`, or pass --rank-model / --from-scratch "
                         "(with make: RANK_MODEL=... / FROM_SCRATCH=1)")
    return best[1]

