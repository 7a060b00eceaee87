"""Checks of a net and a solver before Caffe builds them.

Caffe meets most mistakes in a prototxt with a glog ``CHECK`` or ``LOG(FATAL)``: the whole process aborts
(SIGABRT, exit 134) with a line of C++ and nothing to say which file the user should fix. A misspelt
``python_param`` module is worse: Caffe prints the Python error, clears it and rethrows, and pycaffe ends in
``SystemError: ... returned NULL without setting an exception``. The functions here walk the net as Caffe
will build it (one phase, layer by layer) and raise ``InputError`` naming the prototxt and the layer first:

* every layer type is one Caffe knows, every bottom is produced by an earlier layer, no top is written by
  two layers (other than in place);
* every Python layer's module imports and holds its class, a ``caffe.Layer``; a class that describes itself
  (``static_tops(param_str, bottom_shapes, n_tops)``, as every layer of ``pylayers`` does) checks its
  param_str, its bottom and top counts and the bottom shapes it needs, and says its top shapes;
* blob shapes through the layers Caffe's shape checks abort on (Input, Convolution, Pooling,
  InnerProduct, Flatten, Concat, Eltwise, EuclideanLoss and the element-wise layers): a spatial size
  that the convolution and pooling chain shrinks below one pixel is named with the smallest input the net
  takes (Caffe: ``Check failed: shape[i] >= 0``);
* solver fields Caffe aborts on (solver type, learning-rate policy and its step size, regularisation,
  ``average_loss``, ``iter_size``, momentum with AdaGrad/RMSProp) and values that cannot train.

Shapes are tuples; ``None`` stands for a size that cannot be known before the data are read (a batch size
that depends on a manifest) and for the blobs of layers this module does not model (their consumers are
then not checked). Output sizes follow Caffe 1.0 (``conv_layer.cpp``, ``pooling_layer.cpp``: pooling rounds
up, and a padded window that would start in the padding is dropped).
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
from collections.abc import Sequence
from typing import Any

from rankiqa.caffe_io import import_caffe, layer_types
from rankiqa.errors import InputError

Shape = tuple[int | None, ...]
#: ``(h, w)`` of a kernel, stride or pad.
Pair = tuple[int, int]

#: Learning-rate policies of Caffe's SGD solvers (``sgd_solver.cpp``); others abort the process.
LR_POLICIES: tuple[str, ...] = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
#: Solver types registered in Caffe 1.0.
SOLVER_TYPES: tuple[str, ...] = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
#: The largest input side tried when looking for the smallest input a net takes.
MAX_SEARCHED_SIDE = 4096

#: Layers whose single top has the shape of their first bottom.
_SAME_SHAPE = frozenset({"ReLU", "Sigmoid", "TanH", "Dropout", "Power", "AbsVal", "BNLL", "ELU", "Exp",
                         "Log", "PReLU", "BatchNorm", "Scale", "Bias", "LRN", "MVN", "Softmax",
                         "Threshold", "Clip", "Swish"})
#: Loss layers whose top is a scalar.
_SCALAR_LOSSES = frozenset({"SoftmaxWithLoss", "SigmoidCrossEntropyLoss", "HingeLoss", "InfogainLoss",
                            "MultinomialLogisticLoss", "ContrastiveLoss", "Accuracy"})


def _suggest(word: str, options: list[str]) -> str:
    """`` (did you mean X?)`` for the closest option (case first), or nothing."""
    same_case = [option for option in options if option.lower() == word.lower()]
    close = same_case or difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


class _TooSmall(Exception):
    """The spatial size collapsed at a layer (carried up to the minimum-size search)."""

    def __init__(self, layer: str, message: str):
        super().__init__(message)
        self.layer = layer
        self.message = message


def layer_in_phase(layer: Any, phase: str) -> bool:
    """Whether Caffe puts ``layer`` into a net of ``phase`` (``train`` or ``test``), by its include/exclude
    rules on the phase (Caffe's ``StateMeetsRule``; stage and level rules are not used by this project)."""
    wanted = 0 if phase == "train" else 1  # caffe.TRAIN = 0, caffe.TEST = 1
    if len(layer.include) > 0:
        return any(not rule.HasField("phase") or rule.phase == wanted for rule in layer.include)
    return not any(rule.HasField("phase") and rule.phase == wanted for rule in layer.exclude)


def _where(layer: Any) -> str:
    return f"layer {layer.name!r} ({layer.type})"


def format_shape(shape: Shape | None) -> str:
    """``NxCxHxW`` with ``?`` for unknown sizes (and for an unknown shape)."""
    if shape is None:
        return "?"
    return "x".join("?" if d is None else str(d) for d in shape)


_fmt = format_shape


def _count(shape: Shape | None, start: int = 0) -> int | None:
    """Product of ``shape[start:]``; None when a size in it is unknown."""
    if shape is None or any(d is None for d in shape[start:]):
        return None
    return math.prod(int(d) for d in shape[start:])  # type: ignore[arg-type]


def values_per_item(shape: Shape | None) -> int | None:
    """Values per item (the product of all sizes but the first); None when unknown."""
    return _count(shape, 1)


def _pair(values: Sequence[int], h_field: int, w_field: int, has_hw: bool, default: int | None,
          what: str, layer: Any, source: str) -> tuple[int, int]:
    """(h, w) of a convolution/pooling geometry field given as a repeated value or as ``_h``/``_w``."""
    if has_hw:
        return int(h_field), int(w_field)
    if len(values) == 0:
        if default is None:
            raise InputError(f"{_where(layer)}: {what} is not set", source)
        return default, default
    if len(values) > 2:
        raise InputError(f"{_where(layer)}: {what} has {len(values)} values; 2-D nets need 1 or 2", source)
    return (int(values[0]), int(values[-1]))


def conv_geometry(layer: Any, source: str) -> tuple[Pair, Pair, Pair, int, int]:
    """``(kernel, stride, pad, dilation, group)`` of a Convolution layer, the first three as ``(h, w)``, as
    Caffe reads them (a repeated field or its ``_h``/``_w`` pair); ``InputError`` for values Caffe aborts
    on."""
    p = layer.convolution_param
    kh, kw = _pair(p.kernel_size, p.kernel_h, p.kernel_w, p.HasField("kernel_h"), None, "kernel_size", layer,
                   source)
    sh, sw = _pair(p.stride, p.stride_h, p.stride_w, p.HasField("stride_h"), 1, "stride", layer, source)
    ph, pw = _pair(p.pad, p.pad_h, p.pad_w, p.HasField("pad_h"), 0, "pad", layer, source)
    dilation = int(p.dilation[0]) if len(p.dilation) else 1
    if min(kh, kw) < 1 or min(sh, sw) < 1 or min(ph, pw) < 0 or dilation < 1:
        raise InputError(f"{_where(layer)}: kernel {kh}x{kw}, stride {sh}x{sw}, pad {ph}x{pw} and dilation "
                         f"{dilation} must be positive (pad >= 0)", source)
    return (kh, kw), (sh, sw), (ph, pw), dilation, p.group or 1


def _conv_top(layer: Any, bottom: Shape | None, source: str) -> Shape | None:
    p = layer.convolution_param
    (kh, kw), (sh, sw), (ph, pw), dilation, group = conv_geometry(layer, source)
    if p.num_output < 1:
        raise InputError(f"{_where(layer)}: num_output must be >= 1", source)
    if bottom is None:
        return None
    if len(bottom) != 4:
        raise InputError(f"{_where(layer)}: needs a 4-D bottom (N, C, H, W), got {_fmt(bottom)}", source)
    channels = bottom[1]
    if channels is not None and (channels % group or p.num_output % group):
        raise InputError(f"{_where(layer)}: group {group} must divide the {channels} input channels and "
                         f"num_output {p.num_output}", source)
    out = []
    for size, k, s, pad in ((bottom[2], kh, sh, ph), (bottom[3], kw, sw, pw)):
        if size is None:
            out.append(None)
            continue
        extent = dilation * (k - 1) + 1
        out.append((size + 2 * pad - extent) // s + 1)
    if any(o is not None and o < 1 for o in out):
        raise _TooSmall(layer.name, f"{_where(layer)} gets {_fmt(bottom[2:])} and would give "
                                    f"{_fmt(tuple(out))} (kernel {kh}x{kw}, stride {sh}x{sw}, pad {ph}x{pw})")
    return (bottom[0], int(p.num_output), out[0], out[1])


def pool_geometry(layer: Any, source: str) -> tuple[Pair, Pair, Pair] | None:
    """``(kernel, stride, pad)`` of a Pooling layer, each ``(h, w)``; None for global pooling. ``InputError``
    for values Caffe aborts on."""
    p = layer.pooling_param
    if p.global_pooling:
        if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
            raise InputError(f"{_where(layer)}: global_pooling takes no kernel size", source)
        if (p.pad or p.pad_h or p.pad_w) or (p.stride != 1 or p.stride_h not in (0, 1)):
            raise InputError(f"{_where(layer)}: global_pooling needs pad 0 and stride 1", source)
        return None
    has_kernel = p.HasField("kernel_size") or (p.HasField("kernel_h") and p.HasField("kernel_w"))
    if not has_kernel:
        raise InputError(f"{_where(layer)}: kernel_size (or kernel_h and kernel_w) is not set", source)
    kh, kw = (p.kernel_h, p.kernel_w) if p.HasField("kernel_h") else (p.kernel_size, p.kernel_size)
    sh, sw = (p.stride_h, p.stride_w) if p.HasField("stride_h") else (p.stride, p.stride)
    ph, pw = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad, p.pad)
    if min(kh, kw) < 1 or min(sh, sw) < 1:
        raise InputError(f"{_where(layer)}: kernel {kh}x{kw} and stride {sh}x{sw} must be positive", source)
    if ph >= kh or pw >= kw:
        raise InputError(f"{_where(layer)}: pad {ph}x{pw} must be smaller than the kernel {kh}x{kw}", source)
    return (kh, kw), (sh, sw), (ph, pw)


def _pool_top(layer: Any, bottom: Shape | None, source: str) -> Shape | None:
    if bottom is not None and len(bottom) != 4:
        raise InputError(f"{_where(layer)}: needs a 4-D bottom (N, C, H, W), got {_fmt(bottom)}", source)
    geometry = pool_geometry(layer, source)
    if geometry is None:
        return None if bottom is None else (bottom[0], bottom[1], 1, 1)
    (kh, kw), (sh, sw), (ph, pw) = geometry
    if bottom is None:
        return None
    out = []
    for size, k, s, pad in ((bottom[2], kh, sh, ph), (bottom[3], kw, sw, pw)):
        if size is None:
            out.append(None)
            continue
        pooled = int(math.ceil((size + 2 * pad - k) / s)) + 1
        if pad and (pooled - 1) * s >= size + pad:  # the last window would start inside the padding
            pooled -= 1
        out.append(pooled)
    if any(o is not None and o < 1 for o in out):
        raise _TooSmall(layer.name, f"{_where(layer)} gets {_fmt(bottom[2:])} and would give "
                                    f"{_fmt(tuple(out))} (kernel {kh}x{kw}, stride {sh}x{sw}, pad {ph}x{pw})")
    return (bottom[0], bottom[1], out[0], out[1])


def _axis(axis: int, ndim: int, layer: Any, source: str) -> int:
    if not -ndim <= axis < ndim:
        raise InputError(f"{_where(layer)}: axis {axis} is out of range for a {ndim}-D bottom", source)
    return axis % ndim


def _inner_product_top(layer: Any, bottom: Shape | None, source: str) -> Shape | None:
    p = layer.inner_product_param
    if p.num_output < 1:
        raise InputError(f"{_where(layer)}: num_output must be >= 1", source)
    if bottom is None:
        return None
    axis = _axis(p.axis, len(bottom), layer, source)
    return (*bottom[:axis], int(p.num_output))


def _concat_top(layer: Any, bottoms: list[Shape | None], source: str) -> Shape | None:
    if any(b is None for b in bottoms):
        return None
    first = bottoms[0]
    assert first is not None
    axis = _axis(layer.concat_param.axis, len(first), layer, source)
    total: int | None = 0
    for index, shape in enumerate(bottoms):
        assert shape is not None
        others_differ = len(shape) != len(first) or any(
            a is not None and b is not None and a != b
            for i, (a, b) in enumerate(zip(shape, first, strict=True)) if i != axis)
        if others_differ:
            raise InputError(f"{_where(layer)}: bottom {index} is {_fmt(shape)}, bottom 0 {_fmt(first)}; all "
                             f"sizes but axis {axis} must agree", source)
        total = None if total is None or shape[axis] is None else total + int(shape[axis])  # type: ignore
    return (*first[:axis], total, *first[axis + 1:])


def _same_bottoms(layer: Any, bottoms: list[Shape | None], source: str, counts_only: bool) -> None:
    """Caffe's Eltwise (same shapes) and EuclideanLoss (same count per item) checks."""
    known = [(i, b) for i, b in enumerate(bottoms) if b is not None]
    if len(known) < 2:
        return
    (i0, b0), rest = known[0], known[1:]
    for index, shape in rest:
        if counts_only:
            mine, theirs = _count(shape, 1), _count(b0, 1)
            if mine is not None and theirs is not None and mine != theirs:
                raise InputError(f"{_where(layer)}: bottom {i0} has {theirs} value(s) per item ({_fmt(b0)}), "
                                 f"bottom {index} has {mine} ({_fmt(shape)}); they must be equal", source)
        elif len(shape) != len(b0) or any(a is not None and b is not None and a != b
                                          for a, b in zip(shape, b0, strict=True)):
            raise InputError(f"{_where(layer)}: bottom {index} is {_fmt(shape)}, bottom {i0} is {_fmt(b0)}; "
                             "they must have the same shape", source)


def _input_tops(layer: Any, source: str) -> list[Shape | None]:
    shapes = list(layer.input_param.shape)
    if not shapes:
        raise InputError(f"{_where(layer)}: input_param has no shape", source)
    if len(shapes) not in (1, len(layer.top)):
        raise InputError(f"{_where(layer)}: {len(shapes)} shapes for {len(layer.top)} tops", source)
    out = []
    for index in range(len(layer.top)):
        dims = tuple(int(d) for d in shapes[0 if len(shapes) == 1 else index].dim)
        if any(d < 1 for d in dims):
            raise InputError(f"{_where(layer)}: input shape {_fmt(dims)} has a size below 1", source)
        out.append(dims)
    return out


def _python_class(layer: Any, source: str) -> type:
    """The class a Python layer names, imported as Caffe will import it (InputError naming the layer)."""
    module_name = layer.python_param.module
    class_name = layer.python_param.layer
    if not module_name or not class_name:
        raise InputError(f"{_where(layer)}: python_param needs both module and layer", source)
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # any failure here would reach Caffe as a SystemError
        package = module_name.rpartition(".")[0]
        try:
            siblings = _package_modules(package) if package else []
        except Exception:  # the package itself does not import: nothing to suggest
            siblings = []
        hint = _suggest(module_name, siblings)
        raise InputError(f"{_where(layer)}: python_param module {module_name!r} cannot be imported: "
                         f"{type(err).__name__}: {err}{hint}", source) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        hint = _suggest(class_name, [n for n in dir(module) if not n.startswith("_")])
        raise InputError(f"{_where(layer)}: module {module_name!r} has no class {class_name!r}{hint}", source)
    caffe = import_caffe()
    if not (isinstance(cls, type) and issubclass(cls, caffe.Layer)):
        raise InputError(f"{_where(layer)}: {module_name}.{class_name} is not a caffe.Layer class", source)
    return cls


def _package_modules(package: str) -> list[str]:
    import pkgutil

    found = importlib.import_module(package)
    return [info.name for info in pkgutil.iter_modules(getattr(found, "__path__", []), package + ".")]


def _python_tops(layer: Any, bottoms: list[Shape | None], source: str) -> list[Shape | None]:
    cls = _python_class(layer, source)
    static = getattr(cls, "static_tops", None)
    if static is None:  # a layer that does not describe itself: its blobs are not checked
        return [None] * len(layer.top)
    try:
        tops = static(layer.python_param.param_str, bottoms, len(layer.top))
    except InputError as err:
        raise InputError(f"{_where(layer)}: {err.message}", source) from None
    if len(tops) != len(layer.top):
        raise InputError(f"{_where(layer)}: {cls.__name__} has {len(tops)} top(s), the prototxt gives it "
                         f"{len(layer.top)}", source)
    return list(tops)


def _layer_tops(layer: Any, bottoms: list[Shape | None], source: str) -> list[Shape | None]:
    kind = layer.type
    first = bottoms[0] if bottoms else None
    if kind == "Input":
        return _input_tops(layer, source)
    if kind == "Python":
        return _python_tops(layer, bottoms, source)
    if kind == "Convolution":
        return [_conv_top(layer, first, source)]
    if kind == "Pooling":
        return [_pool_top(layer, first, source)]
    if kind == "InnerProduct":
        return [_inner_product_top(layer, first, source)]
    if kind in _SAME_SHAPE:
        return [first] * max(1, len(layer.top))
    if kind == "Split":
        return [first] * len(layer.top)
    if kind == "Flatten":
        return [None if first is None else (first[0], _count(first, 1))]
    if kind == "Concat":
        return [_concat_top(layer, bottoms, source)]
    if kind == "Eltwise":
        _same_bottoms(layer, bottoms, source, counts_only=False)
        return [first]
    if kind == "EuclideanLoss":
        _same_bottoms(layer, bottoms, source, counts_only=True)
        return [()] * len(layer.top)
    if kind in _SCALAR_LOSSES:
        return [()] * len(layer.top)
    return [None] * len(layer.top)


def _legacy_inputs(net_param: Any, source: str) -> dict[str, Shape]:
    """The net-level ``input:`` blobs (deploy nets of the older format)."""
    blobs: dict[str, Shape] = {}
    for index, name in enumerate(net_param.input):
        if len(net_param.input_shape) > index:
            dims = tuple(int(d) for d in net_param.input_shape[index].dim)
        elif len(net_param.input_dim) >= 4 * (index + 1):
            dims = tuple(int(d) for d in net_param.input_dim[4 * index:4 * index + 4])
        else:
            raise InputError(f"input {name!r} has no input_shape / input_dim", source)
        if any(d < 1 for d in dims):
            raise InputError(f"input {name!r}: shape {_fmt(dims)} has a size below 1", source)
        blobs[name] = dims
    return blobs


def infer_shapes(net_param: Any, source: str | os.PathLike, phase: str,
                 input_side: int | None = None) -> dict[str, Shape | None]:
    """Blob name -> shape of the net Caffe builds from ``net_param`` in ``phase`` (``train``/``test``).

    ``input_side``, when given, replaces the height and width of every 4-D input blob (the minimum-size
    search). Raises ``InputError`` naming ``source`` and the layer for what Caffe would abort on.
    """
    source = str(source)
    known = layer_types()
    blobs: dict[str, Shape | None] = {}
    inputs: set[str] = set()

    def store(name: str, shape: Shape | None, is_input: bool) -> None:
        if is_input:
            inputs.add(name)
        if input_side is not None and name in inputs and shape is not None and len(shape) == 4:
            shape = (shape[0], shape[1], input_side, input_side)
        blobs[name] = shape

    for name, shape in _legacy_inputs(net_param, source).items():
        store(name, shape, True)
    for layer in net_param.layer:
        if not layer_in_phase(layer, phase):
            continue
        if known is not None and layer.type not in known:
            raise InputError(f"layer {layer.name!r}: unknown layer type {layer.type!r}"
                             f"{_suggest(layer.type, sorted(known))}", source)
        bottoms = []
        for index, name in enumerate(layer.bottom):
            if name not in blobs:
                raise InputError(f"{_where(layer)}: bottom {index} {name!r} is not produced by an earlier "
                                 f"layer of the {phase} net", source)
            bottoms.append(blobs[name])
        tops = _layer_tops(layer, bottoms, source)
        is_input = layer.type == "Input" or (layer.type == "Python" and not layer.bottom)
        for index, name in enumerate(layer.top):
            if name in blobs and name not in layer.bottom:
                raise InputError(f"{_where(layer)}: top {name!r} is already produced by an earlier layer",
                                 source)
            store(name, tops[index] if index < len(tops) else None, is_input)
    return blobs


def _input_description(net_param: Any, phase: str) -> str:
    """Where the net's images come from, for messages: the data layer's crop or the Input shape."""
    for layer in net_param.layer:
        if not layer_in_phase(layer, phase):
            continue
        if layer.type == "Python" and not layer.bottom and "crop" in layer.python_param.param_str:
            return f"the crop of layer {layer.name!r}"
        if layer.type == "Input":
            return f"the input shape of layer {layer.name!r}"
    return "the net's input"


def minimum_input_side(net_param: Any, source: str | os.PathLike, phase: str) -> int | None:
    """The smallest square input side (height = width) the net's layers accept; None if none up to
    :data:`MAX_SEARCHED_SIDE` does. The sizes shrink monotonically with the input, so a bisection finds it."""

    def fits(side: int) -> bool:
        try:
            infer_shapes(net_param, source, phase, input_side=side)
        except (_TooSmall, InputError):
            return False
        return True

    if not fits(MAX_SEARCHED_SIDE):
        return None
    low, high = 1, MAX_SEARCHED_SIDE
    while low < high:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle + 1
    return low


def check_net(net_param: Any, source: str | os.PathLike, phase: str) -> dict[str, Shape | None]:
    """Check the ``phase`` net of ``net_param`` as Caffe will build it; return its blob shapes.

    Raises ``InputError`` naming ``source`` and the layer (see the module docstring); an input too small
    for the convolution and pooling chain names the smallest input side that fits.
    """
    try:
        return infer_shapes(net_param, source, phase)
    except _TooSmall as err:
        side = minimum_input_side(net_param, source, phase)
        need = (f"the net needs an input of at least {side}x{side}" if side else
                f"no input up to {MAX_SEARCHED_SIDE}x{MAX_SEARCHED_SIDE} fits")
        raise InputError(f"{err.message}: the input is too small ({_input_description(net_param, phase)}); "
                         f"{need}", str(source)) from None


def check_solver(solver: Any, source: str | os.PathLike) -> None:
    """Refuse solver fields that Caffe aborts on, or that cannot train; ``InputError`` naming ``source``."""
    source = str(source)
    kind = solver.type or "SGD"
    if kind not in SOLVER_TYPES:
        raise InputError(f"solver type {kind!r} is unknown (Caffe has {', '.join(SOLVER_TYPES)})", source)
    policy = solver.lr_policy or "fixed"
    if policy not in LR_POLICIES:
        raise InputError(f"lr_policy {policy!r} is unknown (Caffe has {', '.join(LR_POLICIES)})", source)
    problems: list[tuple[bool, str]] = [
        (policy in ("step", "sigmoid") and solver.stepsize < 1, f"lr_policy {policy!r} needs stepsize >= 1"),
        (policy == "multistep" and len(solver.stepvalue) == 0, "lr_policy 'multistep' needs stepvalue"),
        (policy == "multistep" and list(solver.stepvalue) != sorted(solver.stepvalue),
         "stepvalue must be increasing"),
        (policy in ("step", "exp", "inv", "multistep", "sigmoid") and not solver.gamma > 0,
         f"lr_policy {policy!r} needs gamma > 0"),
        (solver.regularization_type not in ("L1", "L2"),
         f"regularization_type {solver.regularization_type!r} must be L1 or L2"),
        (solver.average_loss < 1, "average_loss must be >= 1"),
        (solver.iter_size < 1, "iter_size must be >= 1"),
        (not solver.base_lr > 0, f"base_lr must be > 0, got {solver.base_lr}"),
        (not 0 <= solver.momentum < 1, f"momentum must be in [0, 1), got {solver.momentum}"),
        (solver.weight_decay < 0, f"weight_decay must be >= 0, got {solver.weight_decay}"),
        (kind in ("AdaGrad", "RMSProp") and solver.momentum != 0, f"momentum cannot be used with {kind}"),
        (kind == "RMSProp" and not 0 <= solver.rms_decay < 1, "rms_decay must be in [0, 1)"),
        (solver.max_iter < 1, "max_iter must be >= 1"),
        (solver.snapshot < 0 or solver.display < 0, "snapshot and display must be >= 0"),
    ]
    for failed, message in problems:
        if failed:
            raise InputError(message, source)

