"""A deploy net of this project (prototxt + caffemodel) as an ONNX graph, built with the ``onnx`` package.

The graph computes what Caffe computes in the TEST phase, layer by layer:

* input: the deploy net's input blob, float32 NCHW, BGR, 0-255, no mean subtraction (the project's blob
  layout, docs/DESIGN.md), height and width fixed at the deploy net's crop, the batch size free (``N``);
* Convolution -> ``Conv`` (pad, stride, dilation, group; weights (out, in/group, kh, kw) as Caffe stores
  them); InnerProduct -> ``Flatten`` + ``Gemm`` (Caffe flattens C, H, W in that order, as ONNX does);
* Pooling: Caffe rounds the output size up and drops a last window that would start in the padding
  (``pooling_layer.cpp``; sizes from ``rankiqa.netcheck``). The graph keeps ONNX's rounding down and adds
  the rows and columns Caffe's rounding covers as explicit end padding, which max pooling ignores and
  average pooling without padding leaves out of the divisor, as Caffe: the same windows in every runtime,
  with no reliance on a runtime's ``ceil_mode``. Average pooling with padding counts the padding in
  Caffe's divisor but not a rounded-up part beyond it: ``count_include_pad`` 1 when no window reaches past
  the padding (the Shallow net's 7x7 stride-1 local means), refused otherwise;
* Power ``(shift + scale * x) ^ power`` -> ``Mul``, ``Add``, ``Pow`` in that order (factors of 1 and
  shifts of 0 left out); Scale (one bottom, ``axis`` 1, one axis) -> ``Mul`` (+ ``Add``);
  ReLU -> ``Relu`` (``LeakyRelu`` with a negative slope); Dropout -> nothing (identity in TEST);
  Eltwise -> ``Sum`` (bottoms multiplied by their ``coeff`` first), ``Mul`` (PROD) or ``Max``;
  Sigmoid, TanH, Flatten, Concat as their ONNX namesakes.

Other layer types are refused naming the layer. The weights are read from the caffemodel with the
project's protobuf helpers (``rankiqa.caffe_io``, with ``rankiqa.caffe_proto`` where pycaffe is absent), so
that export needs no Caffe; their shapes are checked as Caffe's ``CopyTrainedLayersFrom`` does. Parameter
tensors are named ``<layer>.weight`` / ``<layer>.bias`` (the Caffe layer names: fc6/fc6_m ... stay visible).

The model's metadata (``metadata_props``, :data:`METADATA_KEYS`) say what a scorer needs: the input blob
and size, the channel order and pixel range, the output blob and the score's direction and scale, and where
the direction comes from (``rankiqa.scoring.model_direction``, as every tool of the project decides it).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankiqa import caffe_io, netcheck
from rankiqa.errors import InputError
from rankiqa.fsutil import atomic_path

#: ONNX operator set of the graph: 13 has every operator used here with the semantics used here, and is read
#: by onnxruntime and by onnx2torch alike.
OPSET = 13
#: The IR version that goes with opset 13 (ONNX's versioning table), so that older readers accept the file.
IR_VERSION = 7
#: Name of the free batch dimension of the input and output.
BATCH_DIM = "N"

#: Metadata keys (all values are strings).
META_INPUT_BLOB = "input_blob"
META_INPUT_SIZE = "input_size"  # "HxW" of the crop, e.g. "224x224"
META_INPUT_LAYOUT = "input_layout"
META_OUTPUT_BLOB = "output_blob"
META_DIRECTION = "score_direction"  # higher_better, lower_better or unknown
META_DIRECTION_SOURCE = "score_direction_source"
META_SCALE = "score_scale"  # relative (ranking head) or absolute (fine-tuned head)
META_SOURCE_DEPLOY = "source_deploy"
META_SOURCE_MODEL = "source_caffemodel"
META_MODEL_SHA256 = "source_caffemodel_sha256"
METADATA_KEYS: tuple[str, ...] = (META_INPUT_BLOB, META_INPUT_SIZE, META_INPUT_LAYOUT, META_OUTPUT_BLOB,
                                  META_DIRECTION, META_DIRECTION_SOURCE, META_SCALE, META_SOURCE_DEPLOY,
                                  META_SOURCE_MODEL, META_MODEL_SHA256)
#: The input layout of every net of the project (docs/DESIGN.md, "Conventions").
INPUT_LAYOUT = "NCHW float32, BGR, 0-255, no mean subtraction"

#: Layers that pass their bottom through unchanged in the TEST phase.
_IDENTITY_TYPES = frozenset({"Dropout"})
#: Caffe types mapped one to one onto an ONNX operator without attributes.
_ELEMENTWISE = {"Sigmoid": "Sigmoid", "TanH": "Tanh"}
#: Every Caffe layer type the converter handles.
SUPPORTED_TYPES: tuple[str, ...] = tuple(sorted({"Input", "Convolution", "Pooling", "InnerProduct", "ReLU",
                                                 "Power", "Scale", "Flatten", "Concat", "Eltwise",
                                                 *_IDENTITY_TYPES,
                                                 *_ELEMENTWISE}))


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote: the file, its metadata, and the Caffe layers it converted (in order)."""

    path: Path
    metadata: dict[str, str]
    layers: tuple[str, ...]


def _where(layer: Any) -> str:
    return f"layer {layer.name!r} ({layer.type})"


def _blob_array(blob: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A serialised blob as float32 of ``shape`` (its stored shape was checked against ``shape`` first; a
    legacy 4-D blob such as (1, 1, N, K) of an old fc layer holds the same values in the same order)."""
    values = blob.data if len(blob.data) else blob.double_data
    return np.asarray(values, dtype=np.float32).reshape(shape)


def param_shapes(net_param: Any, shapes: dict[str, netcheck.Shape | None], source: str
                 ) -> dict[str, list[tuple[int, ...]]]:
    """Layer name -> the shapes of its parameter blobs, as Caffe builds them (``[]`` for layers without any):
    Convolution (out, in/group, kh, kw) and (out,); InnerProduct (out, K) ((K, out) with ``transpose``) and
    (out,); Scale (C,) and (C,). ``shapes``: the blob shapes of the net (``netcheck.check_net``)."""
    result: dict[str, list[tuple[int, ...]]] = {}
    for layer in net_param.layer:
        if not netcheck.layer_in_phase(layer, "test"):
            continue
        bottom = shapes.get(layer.bottom[0]) if layer.bottom else None
        blobs: list[tuple[int, ...]] = []
        if layer.type == "Convolution":
            p = layer.convolution_param
            (kh, kw), _, _, _, group = netcheck.conv_geometry(layer, source)
            blobs = [(int(p.num_output), int(bottom[1]) // group, kh, kw)]  # type: ignore[index]
            blobs += [(int(p.num_output),)] if p.bias_term else []
        elif layer.type == "InnerProduct":
            p = layer.inner_product_param
            inputs = netcheck.values_per_item(bottom)
            blobs = [(inputs, int(p.num_output)) if p.transpose else (int(p.num_output), inputs)]  # type: ignore
            blobs += [(int(p.num_output),)] if p.bias_term else []
        elif layer.type == "Scale" and len(layer.bottom) == 1:
            channels = (int(bottom[1]),)  # type: ignore[index]
            blobs = [channels] + ([channels] if layer.scale_param.bias_term else [])
        result[layer.name] = blobs
    return result


def read_weights(model_path: str | os.PathLike, expected: dict[str, list[tuple[int, ...]]]
                 ) -> dict[str, list[np.ndarray]]:
    """The parameter blobs of the layers in ``expected`` (:func:`param_shapes`) from a binary caffemodel.

    Raises ``InputError`` naming the model and the layer for a layer with parameters that the model lacks
    (Caffe would keep its random start silently) and for a blob count or shape that differs (Caffe aborts).
    """
    model = caffe_io.read_caffemodel(Path(model_path))
    caffe_io.check_deploy_weights(model, expected, Path(model_path))
    stored = {layer.name: layer for layer in [*model.layer, *model.layers] if len(layer.blobs) > 0}
    return {name: [_blob_array(blob, shape) for blob, shape in zip(stored[name].blobs, shapes, strict=True)]
            for name, shapes in expected.items() if shapes}


def _unique(name: str, taken: set[str], reserved: set[str] | frozenset[str] = frozenset()) -> str:
    """``name``, or ``name_1``, ``name_2`` ... : the first in neither set; it is added to ``taken``."""
    unique, count = name, 1
    while unique in taken or unique in reserved:
        unique, count = f"{name}_{count}", count + 1
    taken.add(unique)
    return unique


class _GraphBuilder:
    """Nodes, initialisers and the Caffe blob -> ONNX tensor map of one conversion.

    Caffe rewrites blobs in place (ReLU: bottom == top); ONNX tensors are written once. Each write of a blob
    gets a fresh tensor: the blob's own name for the first write (the net's output blob: for its last write,
    so that the graph's output keeps the Caffe name), ``<layer>/<blob>`` for the others.
    """

    def __init__(self, reserved: set[str]) -> None:
        from onnx import helper

        self.helper = helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.tensor: dict[str, str] = {}  # Caffe blob -> the ONNX tensor holding its current value
        self.used: set[str] = set()
        self.reserved = set(reserved)
        self.node_names: set[str] = set()  # nodes have names of their own, apart from the tensors'

    def fresh(self, wanted: str, fallback: str) -> str:
        """A new tensor name: ``wanted`` when free, else ``fallback`` (numbered when taken too)."""
        name = wanted if wanted not in self.used | self.reserved else fallback
        return _unique(name, self.used, self.reserved)

    def constant(self, name: str, value: np.ndarray) -> str:
        """Add an initialiser (float32) and return its name."""
        from onnx import numpy_helper

        name = self.fresh(name, name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, name: str, **attrs: Any) -> str:
        """Add a node writing the tensor ``output``; return ``output``."""
        unique = _unique(name, self.node_names)
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=unique, **attrs))
        return output


def _pool_node(graph: _GraphBuilder, layer: Any, x: str, out: str, bottom: netcheck.Shape,
               top: netcheck.Shape, source: str) -> None:
    """Caffe's pooling as an ONNX pooling node of the same windows (see the module docstring)."""
    p = layer.pooling_param
    kind = {p.MAX: "Max", p.AVE: "Average"}.get(p.pool)
    if kind is None:
        raise InputError(f"{_where(layer)}: pooling method {p.pool} (STOCHASTIC) has no ONNX equivalent",
                         source)
    geometry = netcheck.pool_geometry(layer, source)
    if geometry is None:
        graph.node(f"Global{kind}Pool", [x], out, layer.name)
        return
    (kh, kw), (sh, sw), (ph, pw) = geometry
    ends = []
    for size, out_size, k, s, pad in ((bottom[2], top[2], kh, sh, ph), (bottom[3], top[3], kw, sw, pw)):
        end = (int(out_size) - 1) * s + k - int(size) - pad  # type: ignore[arg-type]
        if end < 0:  # a stride larger than the kernel, and Caffe's dropped last window
            raise InputError(f"{_where(layer)}: Caffe's output size {out_size} needs a negative end padding "
                             f"({end}); not expressible in ONNX", source)
        ends.append(end)
    attrs: dict[str, Any] = {"kernel_shape": [kh, kw], "strides": [sh, sw], "pads": [ph, pw, *ends]}
    if kind == "Average":
        # Caffe divides by the window clipped to the padded image (padding counted, the part beyond it
        # not): ONNX's count_include_pad=1 when no window reaches past the padding at the end, 0 when
        # there is no padding; anything else has no ONNX form.
        if (ph or pw) and (ends[0] > ph or ends[1] > pw):
            raise InputError(f"{_where(layer)}: a padded average pooling whose last window reaches past the "
                             "padding divides by a clipped window in Caffe; no single ONNX pooling operator "
                             "does", source)
        attrs["count_include_pad"] = 1 if (ph or pw) else 0
    graph.node(f"{kind}Pool", [x], out, layer.name, **attrs)


def _eltwise_nodes(graph: _GraphBuilder, layer: Any, inputs: list[str], out: str, source: str) -> None:
    """Caffe's Eltwise: PROD -> Mul, MAX -> Max, SUM -> Sum of the bottoms, each first multiplied by its
    ``coeff`` where one is given and not 1."""
    p, name = layer.eltwise_param, layer.name
    coeffs = list(p.coeff)
    if coeffs and (p.operation != p.SUM or len(coeffs) != len(inputs)):
        raise InputError(f"{_where(layer)}: coeff is supported for SUM only, one per bottom", source)
    if p.operation == p.PROD:
        x = inputs[0]
        for index, other in enumerate(inputs[1:], start=1):
            last = index == len(inputs) - 1
            target = out if last else graph.fresh(f"{name}/mul{index}", f"{name}/mul")
            x = graph.node("Mul", [x, other], target, name if len(inputs) == 2 else f"{name}/mul{index}")
        return
    if p.operation == p.MAX:
        graph.node("Max", inputs, out, name)
        return
    terms = []
    for index, (x, c) in enumerate(zip(inputs, coeffs or [1.0] * len(inputs), strict=True)):
        if c != 1.0:
            x = graph.node("Mul", [x, graph.constant(f"{name}.coeff{index}", np.float32(c))],
                           graph.fresh(f"{name}/coeff{index}", f"{name}/coeff"), f"{name}/coeff{index}")
        terms.append(x)
    graph.node("Sum", terms, out, name)


def _convert_layer(graph: _GraphBuilder, layer: Any, inputs: list[str], out: str,
                   shapes: dict[str, netcheck.Shape | None], weights: dict[str, list[np.ndarray]],
                   source: str) -> None:
    """Add the nodes of one Caffe layer, reading ``inputs`` and writing the tensor ``out``."""
    name, kind = layer.name, layer.type
    bottom = shapes.get(layer.bottom[0]) if layer.bottom else None
    params = weights.get(name, [])
    if kind == "Convolution":
        _, (sh, sw), (ph, pw), dilation, group = netcheck.conv_geometry(layer, source)
        args = [graph.constant(f"{name}.weight", params[0])]
        args += [graph.constant(f"{name}.bias", params[1])] if len(params) > 1 else []
        kh, kw = params[0].shape[2:]
        graph.node("Conv", [inputs[0], *args], out, name, kernel_shape=[kh, kw], strides=[sh, sw],
                   pads=[ph, pw, ph, pw], dilations=[dilation, dilation], group=group)
    elif kind == "Pooling":
        _pool_node(graph, layer, inputs[0], out, bottom, shapes[layer.top[0]], source)  # type: ignore[arg-type]
    elif kind == "InnerProduct":
        p = layer.inner_product_param
        if p.axis != 1:
            raise InputError(f"{_where(layer)}: inner_product_param axis {p.axis}; only axis 1 is "
                             "supported", source)
        flat = graph.node("Flatten", inputs, graph.fresh(f"{name}/flatten", f"{name}/flatten"),
                          f"{name}/flatten", axis=1)
        args = [flat, graph.constant(f"{name}.weight", params[0])]
        args += [graph.constant(f"{name}.bias", params[1])] if len(params) > 1 else []
        graph.node("Gemm", args, out, name, transB=0 if p.transpose else 1)
    elif kind == "ReLU":
        slope = layer.relu_param.negative_slope
        if slope:
            graph.node("LeakyRelu", inputs, out, name, alpha=float(slope))
        else:
            graph.node("Relu", inputs, out, name)
    elif kind in _ELEMENTWISE:
        graph.node(_ELEMENTWISE[kind], inputs, out, name)
    elif kind == "Power":
        p = layer.power_param
        steps = [("Mul", p.scale, 1.0, "scale"), ("Add", p.shift, 0.0, "shift"),
                 ("Pow", p.power, 1.0, "power")]
        steps = [step for step in steps if step[1] != step[2]]  # (op, value, neutral value, name)
        x = inputs[0]
        if not steps:
            graph.node("Identity", [x], out, name)
        for index, (op, value, _, what) in enumerate(steps):
            target = out if index == len(steps) - 1 else graph.fresh(f"{name}/{what}", f"{name}/{what}")
            x = graph.node(op, [x, graph.constant(f"{name}.{what}", np.float32(value))], target,
                           name if len(steps) == 1 else f"{name}/{what}")
    elif kind == "Eltwise":
        _eltwise_nodes(graph, layer, inputs, out, source)
    elif kind == "Scale":
        p = layer.scale_param
        if len(layer.bottom) != 1 or p.axis not in (1, -3) or p.num_axes != 1 or bottom is None:
            raise InputError(f"{_where(layer)}: only a Scale layer with one bottom and its own weights over "
                             "axis 1 (one axis) is supported", source)
        trailing = (1,) * (len(bottom) - 2)  # (C,) -> (C, 1, 1): broadcast over H and W
        factor = graph.constant(f"{name}.weight", params[0].reshape(-1, *trailing))
        scaled = graph.node("Mul", [inputs[0], factor],
                            out if len(params) == 1 else graph.fresh(f"{name}/mul", f"{name}/mul"), name)
        if len(params) > 1:
            graph.node("Add", [scaled, graph.constant(f"{name}.bias", params[1].reshape(-1, *trailing))], out,
                       f"{name}/bias")
    elif kind == "Flatten":
        p = layer.flatten_param
        if p.end_axis not in (-1, len(bottom or ()) - 1):
            raise InputError(f"{_where(layer)}: flatten_param end_axis {p.end_axis}; only the last axis is "
                             "supported", source)
        graph.node("Flatten", inputs, out, name, axis=int(p.axis) % len(bottom or (0, 0)))
    elif kind == "Concat":
        p = layer.concat_param
        axis = p.concat_dim if p.HasField("concat_dim") else p.axis
        graph.node("Concat", inputs, out, name, axis=int(axis))
    else:  # pragma: no cover - the caller refuses other types first
        raise AssertionError(kind)


def convert(net_param: Any, source: str | os.PathLike, weights: dict[str, list[np.ndarray]],
            input_blob: str, output_blob: str, metadata: dict[str, str]) -> Any:
    """The ONNX ``ModelProto`` of the TEST-phase net ``net_param`` with ``weights`` (:func:`read_weights`).

    ``input_blob``: the net's single image input (N, 3, H, W); ``output_blob``: the score blob, the graph's
    only output; ``metadata``: the model's ``metadata_props``. Raises ``InputError`` naming ``source`` and the
    layer for a layer type or setting with no exact ONNX form. The result passes ``onnx.checker``.
    """
    import onnx
    from onnx import TensorProto, helper

    source = str(source)
    shapes = netcheck.check_net(net_param, source, "test")
    layers = [layer for layer in net_param.layer if netcheck.layer_in_phase(layer, "test")]
    inputs = [name for name in net_param.input] + [top for layer in layers if layer.type == "Input"
                                                   for top in layer.top]
    if inputs != [input_blob]:
        raise InputError(f"the net must have exactly one input, the image blob {input_blob!r}; it has "
                         f"{inputs}", source)
    writers = [index for index, layer in enumerate(layers) if output_blob in layer.top]
    last_writer = writers[-1] if writers else -1
    graph = _GraphBuilder(reserved={output_blob})
    graph.used.add(input_blob)
    graph.tensor[input_blob] = input_blob
    for index, layer in enumerate(layers):
        if layer.type == "Input":
            continue
        if layer.type not in SUPPORTED_TYPES:
            raise InputError(f"{_where(layer)}: layer type {layer.type!r} cannot be exported to ONNX "
                             f"(supported: {', '.join(SUPPORTED_TYPES)})", source)
        if len(layer.top) != 1:
            raise InputError(f"{_where(layer)}: {len(layer.top)} tops; the converter handles one", source)
        bottoms = [graph.tensor[name] for name in layer.bottom]
        top = layer.top[0]
        if layer.type in _IDENTITY_TYPES and index != last_writer:
            graph.tensor[top] = bottoms[0]
            continue
        if index == last_writer:
            out = top
            graph.used.add(top)
        else:
            out = graph.fresh(top, f"{layer.name}/{top}")
        if layer.type in _IDENTITY_TYPES:
            graph.node("Identity", bottoms, out, layer.name)
        else:
            _convert_layer(graph, layer, bottoms, out, shapes, weights, source)
        graph.tensor[top] = out
    if last_writer < 0:
        raise InputError(f"no layer writes the output blob {output_blob!r}", source)
    in_shape = shapes[input_blob]
    out_shape = shapes[output_blob]
    assert in_shape is not None and out_shape is not None
    onnx_graph = helper.make_graph(
        graph.nodes, net_param.name or "rankiqa",
        [helper.make_tensor_value_info(input_blob, TensorProto.FLOAT, [BATCH_DIM, *in_shape[1:]])],
        [helper.make_tensor_value_info(output_blob, TensorProto.FLOAT, [BATCH_DIM, *out_shape[1:]])],
        graph.initializers)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="rankiqa", doc_string=f"converted from {Path(source).name}")
    model.ir_version = IR_VERSION
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    return model


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export(deploy: str | os.PathLike, model: str | os.PathLike, out: str | os.PathLike,
           direction: str | None = None) -> ExportResult:
    """Convert the deploy net ``deploy`` with the weights of the caffemodel ``model`` into the ONNX file
    ``out`` (written atomically: complete or absent).

    ``direction`` (``higher_better``/``lower_better``) overrides the score direction; by default it is
    decided as every tool decides it (``rankiqa.scoring.model_direction``: the training run's record, the
    released models' names, the head). Raises ``InputError`` naming the file (and layer) at fault.
    """
    from rankiqa import scoring

    info = scoring.read_deploy(deploy)
    net_param = caffe_io.read_net_prototxt(deploy, "deploy prototxt")
    shapes = netcheck.check_net(net_param, str(deploy), "test")
    weights = read_weights(model, param_shapes(net_param, shapes, str(deploy)))
    score_direction, direction_source = scoring.model_direction(info, model, direction)
    metadata = {
        META_INPUT_BLOB: info.input_blob,
        META_INPUT_SIZE: f"{info.crop_height}x{info.crop_width}",
        META_INPUT_LAYOUT: INPUT_LAYOUT,
        META_OUTPUT_BLOB: info.output_blob,
        META_DIRECTION: score_direction,
        META_DIRECTION_SOURCE: direction_source,
        META_SCALE: info.score_scale,
        META_SOURCE_DEPLOY: Path(deploy).name,
        META_SOURCE_MODEL: Path(model).name,
        META_MODEL_SHA256: _sha256(Path(model)),
    }
    onnx_model = convert(net_param, deploy, weights, info.input_blob, info.output_blob, metadata)
    data = onnx_model.SerializeToString()
    with atomic_path(out, len(data)) as tmp:
        tmp.write_bytes(data)
    layers = tuple(layer.name for layer in net_param.layer
                   if netcheck.layer_in_phase(layer, "test") and layer.type != "Input")
    return ExportResult(Path(out), metadata, layers)
