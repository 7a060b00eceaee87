"""pycaffe and Caffe's binary files, shared by the training driver and the scoring tools.

Caffe's ``CopyTrainedLayersFrom`` aborts the whole process on a blob whose shape does not fit the net; the
check here turns that into an ``InputError`` naming the weights file and the layer, before Caffe reads it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from rankiqa.errors import InputError

#: The advice of a shape mismatch when weights are transferred into a net for training.
RENAME_HINT = "rename the layer in the net to train it from scratch"
#: The advice when a model's weights do not fit the deploy net it is scored (or exported) with.
DEPLOY_HINT = "wrong deploy prototxt for this model?"


def import_caffe() -> Any:
    """Import pycaffe quietly (glog's INFO lines would drown the progress bar; ``GLOG_minloglevel=0`` shows
    them). The variable must be set before the first import: glog reads it when the library loads."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        import caffe
    except ImportError as err:
        raise InputError(f"cannot import pycaffe ({err}); build it with `make caffe`") from None
    return caffe


def caffe_prefix(caffe: Any) -> Path:
    """The install prefix of the imported pycaffe (``<prefix>/python/caffe/__init__.py``), as laid out by
    dev/build_caffe.sh and the GPU bundle: ``bin/caffe`` and ``BUILD_INFO`` sit there."""
    return Path(caffe.__file__).resolve().parents[2]


def build_mode(caffe: Any) -> str:
    """``cpu`` or ``cuda``: the "mode cpu" / "mode cuda-lean" line that dev/build_caffe.sh writes into
    ``<prefix>/BUILD_INFO`` (its key line repeats it as ``mode=...``); ``unknown`` for other builds."""
    info = caffe_prefix(caffe) / "BUILD_INFO"
    if info.is_file():
        found = re.search(r"^mode[ =](\w+)", info.read_text(encoding="utf-8", errors="replace"), re.MULTILINE)
        if found:
            return found.group(1)
    return "unknown"


def caffe_pb2() -> Any:
    """The ``caffe_pb2`` protobuf module: pycaffe's, or where pycaffe does not import, the same messages
    from ``rankiqa.caffe_proto`` (reading prototxts and caffemodels needs no Caffe: ONNX export)."""
    try:
        import_caffe()
    except InputError:
        from rankiqa import caffe_proto

        return caffe_proto.caffe_pb2()
    from caffe.proto import caffe_pb2 as pb2

    return pb2


def layer_types() -> set[str] | None:
    """The layer types registered in pycaffe; None where pycaffe does not import (then no net is built
    here, and whoever reads the net refuses the types it does not know)."""
    try:
        return set(import_caffe().layer_type_list())
    except InputError:
        return None


def read_net_prototxt(path: str | os.PathLike, what: str = "net prototxt") -> Any:
    """Parse a text ``NetParameter`` (UTF-8, a byte-order mark dropped); ``InputError`` naming the file
    when it is missing or not a valid net (``what`` names the kind of file in the messages)."""
    from google.protobuf import text_format

    from rankiqa.lists import TEXT_ENCODING

    if not Path(path).is_file():
        raise InputError(f"{what} not found", path)
    net_param = caffe_pb2().NetParameter()
    try:
        text_format.Parse(Path(path).read_text(encoding=TEXT_ENCODING), net_param)
    except (text_format.ParseError, UnicodeDecodeError) as err:
        raise InputError(f"not a valid {what}: {err}", path) from None
    return net_param


def parse_binary(path: Path, message: Any, what: str) -> Any:
    """Fill ``message`` from the binary protobuf file ``path``; a decoding error names the file."""
    from google.protobuf.message import DecodeError

    try:
        message.ParseFromString(Path(path).read_bytes())
    except DecodeError as err:
        raise InputError(f"{what}: {err}", path) from None
    return message


def read_caffemodel(path: Path) -> Any:
    """Parse a binary ``.caffemodel`` (``NetParameter``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("weights file not found", path)
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(b"\x89HDF"):
        raise InputError("HDF5 weights are not supported; use a binary .caffemodel", path)
    return parse_binary(path, caffe_pb2().NetParameter(), "not a Caffe model")


def blob_proto_shape(blob: Any) -> tuple[int, ...] | None:
    """Shape of a serialised blob; ``None`` for a legacy 4-D blob (num/channels/height/width)."""
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return None
    return tuple(int(d) for d in blob.shape.dim)


def _legacy_equal(blob: Any, target: tuple[int, ...]) -> bool:
    """Caffe's rule for legacy blobs: the target, padded to 4-D on the left with ones, equals (n, c, h, w)."""
    if len(target) > 4:
        return False
    padded = (1,) * (4 - len(target)) + tuple(target)
    return padded == (blob.num, blob.channels, blob.height, blob.width)


def _describe(blob: Any) -> str:
    shape = blob_proto_shape(blob)
    if shape is None:
        shape = (blob.num, blob.channels, blob.height, blob.width)
    return "x".join(str(d) for d in shape)


def check_weight_shapes(source: Any, target_shapes: dict[str, list[tuple[int, ...]]],
                        weights_path: Path, hint: str = RENAME_HINT) -> list[str]:
    """Layers of ``source`` (a ``NetParameter`` with blobs) that Caffe would copy into a net whose layers and
    parameter shapes are ``target_shapes`` (layer name -> blob shapes; layers without parameters map to []).

    Raises ``InputError`` naming the weights file and the first layer whose blob count or shape differs
    (with ``hint`` as the advice): the check that Caffe's ``CopyTrainedLayersFrom`` makes with a fatal abort.
    """
    copied: list[str] = []
    for layer in [*source.layer, *source.layers]:  # `layers`: the V1 format of e.g. VGG_ILSVRC_16_layers
        if layer.name not in target_shapes or not layer.blobs:
            continue
        shapes = target_shapes[layer.name]
        if len(shapes) != len(layer.blobs):
            raise InputError(f"layer {layer.name!r}: the weights have {len(layer.blobs)} blob(s), the net's "
                             f"layer has {len(shapes)}; {hint}", weights_path)
        for index, (blob, shape) in enumerate(zip(layer.blobs, shapes, strict=True)):
            stored = blob_proto_shape(blob)
            same = _legacy_equal(blob, shape) if stored is None else stored == tuple(shape)
            if not same:
                raise InputError(f"layer {layer.name!r} param {index}: shape mismatch, the weights have "
                                 f"{_describe(blob)}, the net needs {'x'.join(map(str, shape))}; {hint}",
                                 weights_path)
        copied.append(layer.name)
    return copied


def check_deploy_weights(source: Any, target_shapes: dict[str, list[tuple[int, ...]]],
                         weights_path: Path) -> None:
    """Refuse a caffemodel (``source``, a ``NetParameter``) that does not fit a deploy net whose layers have
    the parameter shapes ``target_shapes`` (layer name -> blob shapes, ``[]`` for layers without any).

    Caffe keeps the random start of a layer missing from the file silently (e.g. ``fc6`` vs ``fc6_m``) and
    aborts on a shape mismatch: both are an ``InputError`` naming the weights file and the layer here.
    """
    stored = {layer.name for layer in [*source.layer, *source.layers] if len(layer.blobs) > 0}
    missing = [name for name, shapes in target_shapes.items() if shapes and name not in stored]
    if missing:
        raise InputError(f"no weights for layer(s) {missing} of the deploy net (the model holds "
                         f"{sorted(stored)}): {DEPLOY_HINT}", weights_path)
    check_weight_shapes(source, target_shapes, Path(weights_path), hint=DEPLOY_HINT)
