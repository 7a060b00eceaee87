"""Prototxt editing: nets and solvers read, configured for a run and written, never in ``prototxts/``.

The run preparation (``rankiqa.runprep``) copies the chosen train net and solver into the run folder with the
overrides applied through ``caffe_pb2``: the data layers pointed at the data, with their seed, GPU share
and resume point; the loss's direction and group size; the solver's paths, schedule, mode and seed, with
Caffe's own testing switched off (the trainer runs the test net itself).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from rankiqa import manifest
from rankiqa.caffe_io import caffe_pb2
from rankiqa.devices import GpuShare
from rankiqa.errors import InputError
from rankiqa.fsutil import atomic_write_text
from rankiqa.lists import TEXT_ENCODING

#: Caffe's test interval in the written solver: never reached (the trainer runs the test net itself).
CAFFE_TEST_NEVER = 2**31 - 1


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
    """A Python layer's ``param_str`` as a dict, read as the layers read it (``pylayers.params``: YAML/JSON,
    never eval); InputError naming ``source`` and the layer when it is not a mapping."""
    from pylayers.params import load_param_str  # here: importing pylayers imports pycaffe

    return load_param_str(layer.python_param.param_str, source, prefix=f"layer {layer.name!r}: ")


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


def configure_rank_net(net_param: Any, source: Path, data_dir: Path | None, types_per_batch: int,
                       images_per_group: int, levels: int, seed: int, workers: int | None,
                       direction: str, share: GpuShare | None = None, start_batch: int = 0,
                       test_start_batch: int = 0, online: dict[str, Any] | None = None) -> Any:
    """Point the ranking data layers at ``data_dir`` and set batch make-up, seed, share and score direction.

    Data layers (``rank_data``, ``pair_data``): ``manifest``, ``lmdb`` (when ``images.lmdb`` exists),
    ``types_per_batch``/``images_per_group`` (when the layer uses them), ``seed`` (+1 for the test phase),
    ``workers``, shard keys and ``start_batch`` (batches this shard already consumed: a resumed run
    continues the data stream where it stopped). With ``online`` (``pylayers.online_source``) the data
    layers get it in place of ``manifest`` and ``lmdb``, and ``data_dir`` is not used.
    Loss layers (``rank_loss``): ``direction``, and ``group_size`` when the layer splits the batch by size
    rather than by a ``group`` bottom (then it must follow the batch make-up).
    """
    net_param = copy_message(net_param)
    data_layers = [*python_layers(net_param, "rank_data"), *python_layers(net_param, "pair_data")]
    if not data_layers:
        raise InputError("no pylayers.rank_data / pair_data layer in the train net", source)
    for layer in data_layers:
        params = get_param_str(layer, source)
        if online is not None:
            params.pop("manifest", None)
            params.pop("lmdb", None)
            params["online"] = online
        elif data_dir is None:
            raise InputError("no rank set folder (and no online batches) for the ranking data layers", source)
        else:
            params["manifest"] = str((data_dir / manifest.MANIFEST_NAME).resolve())
            if (data_dir / manifest.LMDB_NAME).is_dir():
                params["lmdb"] = str((data_dir / manifest.LMDB_NAME).resolve())
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
            params["group_size"] = manifest.group_size(images_per_group, levels)
        set_param_str(layer, params)
    return net_param


def configure_ft_net(net_param: Any, source: Path, lists_dir: Path, batch: int | None, seed: int,
                     workers: int | None, share: GpuShare | None = None, start_batch: int = 0,
                     test_start_batch: int = 0) -> Any:
    """Point the fine-tuning data layers at ``lists_dir/{train,test}.txt`` (by phase) and set batch, seed,
    share and ``start_batch`` as :func:`configure_rank_net`. The test-phase layer reads its list in order
    (``shuffle: false``) so that ``ceil(n / batch)`` test batches see each test image once and SROCC/PLCC
    can be pooled over the whole list."""
    net_param = copy_message(net_param)
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
    workers, GPU share (only the first GPU's process runs the test net, so test data are never split) and the
    resume point."""
    params["seed"] = seed + 1 if test else seed
    if workers is not None:
        params["workers"] = workers
    _set_share(params, None if test else share)
    params["start_batch"] = test_start_batch if test else start_batch


def _set_share(params: dict[str, Any], share: GpuShare | None) -> None:
    """The data share of one GPU's process (``shard_index`` of ``shard_count``); the whole stream without."""
    params["shard_index"] = 0 if share is None else share.shard_index
    params["shard_count"] = 1 if share is None else share.shard_count


def copy_message(message: Any) -> Any:
    """A deep copy of a protobuf message (the configure functions never change their input)."""
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
    solver = copy_message(solver_param)
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

