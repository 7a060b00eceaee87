"""The paper's test protocol, shared by ``tools.evaluate`` and ``tools.predict``.

For every image: ``crops`` random crops of the deploy net's input size (seeded per image), the net's
output for each crop, then the mean (the image's score, as the paper) and the median. Crops of several
images go through the net in one forward pass (``batch`` crops at a time); ``batch=1`` reproduces the
original's one-crop-per-forward loop, crop for crop the same positions.

Crop positions of the image with ordinal ``index`` depend only on ``(seed, index)``, never on the batch
size or on the other images, so that batched and one-crop-at-a-time runs score the same crops.

Caffe is imported lazily, so that the pure helpers here work (and are testable) without it.
"""

from __future__ import annotations

import argparse
import collections
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from rankiqa import caffe_io, netcheck, registry
from rankiqa.errors import InputError

#: Output blobs of the known heads: ``fc8_m`` = ranking model, ``fc8`` = fine-tuned model.
RANKING_HEAD = "fc8_m"
FINETUNED_HEAD = "fc8"
KNOWN_HEADS: tuple[str, ...] = (RANKING_HEAD, FINETUNED_HEAD)

DIRECTIONS: tuple[str, ...] = ("higher_better", "lower_better")

T = TypeVar("T")
K = TypeVar("K")


@dataclass(frozen=True)
class DeployInfo:
    """What the tools need to know about a deploy prototxt."""

    path: str
    input_blob: str
    channels: int
    crop_height: int
    crop_width: int
    output_blob: str

    @property
    def head_kind(self) -> str:
        """``ranking`` (fc8_m), ``finetuned`` (fc8) or ``other``."""
        return {RANKING_HEAD: "ranking", FINETUNED_HEAD: "finetuned"}.get(self.output_blob, "other")

    @property
    def score_scale(self) -> str:
        """``relative`` for a ranking head (only the order of its scores means something), ``absolute`` for
        the others (the scale of the labels the head was trained on)."""
        return "relative" if self.head_kind == "ranking" else "absolute"


def _input_shape(net_param: Any, path: str) -> tuple[str, list[int]]:
    """The (name, shape) of the net input: an ``Input`` layer, or the legacy ``input:`` fields."""
    if len(net_param.input) > 0:
        name = net_param.input[0]
        if len(net_param.input_shape) > 0:
            return name, list(net_param.input_shape[0].dim)
        if len(net_param.input_dim) >= 4:
            return name, list(net_param.input_dim[:4])
        raise InputError(f"input {name!r} has no input_shape / input_dim", path)
    for layer in net_param.layer:
        if layer.type == "Input":
            if not layer.input_param.shape:
                raise InputError(f"Input layer {layer.name!r} has no shape", path)
            return layer.top[0], list(layer.input_param.shape[0].dim)
    raise InputError("no input found (expected an Input layer or input/input_shape fields)", path)


def choose_output_blob(net_param: Any, path: str) -> str:
    """The blob holding the quality score: the net's final output.

    Rule: the tops that no later layer consumes (the net's outputs); when that is one blob, it; when
    several, the one among the known heads (``fc8_m``, then ``fc8``). A net without a unique answer
    is rejected rather than guessed.
    """
    consumed: set[str] = set()
    outputs: list[str] = []
    for layer in reversed(net_param.layer):
        for top in layer.top:
            if top not in consumed and top not in outputs:
                outputs.append(top)
        # a layer's bottoms are consumed even when it writes in place (ReLU: bottom == top)
        consumed.update(b for b in layer.bottom if b not in layer.top)
    outputs = [blob for blob in outputs if blob not in consumed]
    if len(outputs) == 1:
        return outputs[0]
    for head in KNOWN_HEADS:
        if head in outputs:
            return head
    raise InputError(f"cannot tell the score blob among the outputs {sorted(outputs)}; expected one of "
                     f"{list(KNOWN_HEADS)}", path)


def read_deploy(path: str | os.PathLike) -> DeployInfo:
    """Parse a deploy prototxt: its input blob and crop size, and its output (score) blob."""
    path = str(path)
    net_param = caffe_io.read_net_prototxt(path, "deploy prototxt")
    # What Caffe would abort the process on (an input too small for the net, an unknown layer ...).
    netcheck.check_net(net_param, path, "test")
    name, shape = _input_shape(net_param, path)
    if len(shape) != 4:
        raise InputError(f"input {name!r} must be 4-D (N, C, H, W), got {shape}", path)
    if shape[1] != 3:
        raise InputError(f"input {name!r} must have 3 (BGR) channels, got {shape[1]}", path)
    return DeployInfo(path=path, input_blob=name, channels=int(shape[1]), crop_height=int(shape[2]),
                      crop_width=int(shape[3]), output_blob=choose_output_blob(net_param, path))


def _check_weights(net: Any, model_path: str) -> None:
    """Reject a caffemodel that does not fit the deploy net, before Caffe aborts on it.

    Caffe's ``CopyTrainedLayersFrom`` kills the process on a shape mismatch and silently keeps the
    random initialisation of a layer missing from the file (e.g. ``fc6`` vs ``fc6_m``): both are
    turned into an ``InputError`` naming the model and the layer.
    """
    model = caffe_io.read_caffemodel(Path(model_path))
    shapes = {name: [tuple(blob.data.shape) for blob in params] for name, params in net.params.items()}
    caffe_io.check_deploy_weights(model, shapes, Path(model_path))


def _require_gpu_build(caffe: Any, gpu: int) -> None:
    """Refuse ``--gpu`` on a CPU-only build: Caffe would abort the process (``NO_GPU``) instead.

    dev/build_caffe.sh records the mode in ``<prefix>/BUILD_INFO``; other builds are trusted.
    """
    if caffe_io.build_mode(caffe) == "cpu":
        raise InputError(f"--gpu {gpu}: this Caffe build is CPU-only; use --gpu -1 or build it with "
                         "`make caffe CUDA=1`", caffe_io.caffe_prefix(caffe) / "BUILD_INFO")


def load_net(deploy: str | os.PathLike, model: str | os.PathLike, gpu: int = -1) -> tuple[Any, DeployInfo]:
    """Build the deploy net in TEST phase and load the caffemodel's weights (checked first)."""
    caffe = caffe_io.import_caffe()
    info = read_deploy(deploy)
    model = str(model)
    if not Path(model).is_file():
        raise InputError("caffemodel not found", model)
    if gpu >= 0:
        _require_gpu_build(caffe, gpu)
        caffe.set_mode_gpu()
        caffe.set_device(gpu)
    else:
        caffe.set_mode_cpu()
    net = caffe.Net(info.path, caffe.TEST)
    if info.output_blob not in net.blobs:
        raise InputError(f"output blob {info.output_blob!r} missing from the built net", info.path)
    _check_weights(net, model)
    net.copy_from(model)
    return net, info


def run_record(model_path: str | os.PathLike) -> dict:
    """``run.json`` of the training run (``tools/train.py``) that wrote ``<run>/snapshots/X``: its settings
    (kind, data, direction, ``initialisation``...); ``{}`` for a model that is not in such a folder, or
    whose ``run.json`` is missing or unreadable."""
    import json

    model_path = Path(model_path)
    run_json = model_path.parent.parent / "run.json"
    if model_path.parent.name != "snapshots" or not run_json.is_file():
        return {}
    try:
        record = json.loads(run_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def trained_direction(model_path: str | os.PathLike) -> tuple[str, str] | None:
    """``(direction, source)`` from the record of the training run that wrote the model (``run.json``
    beside ``snapshots/``, written by ``tools/train.py``); None when there is no usable record.

    A ranking run scores ``higher_better`` unless its rank loss ran with ``direction: dmos``; a fine-tuning
    run scores in the direction of its dataset's labels (``rankiqa.registry``).
    """
    from rankiqa.registry import DATASETS, HIGHER_BETTER, LOWER_BETTER

    path = Path(model_path)
    record = run_record(path)
    where = f"its training run {path.parent.parent / 'run.json'}"
    if record.get("kind") == "rank":
        loss = record.get("direction", "quality")
        if loss in ("quality", "dmos"):
            direction = LOWER_BETTER if loss == "dmos" else HIGHER_BETTER
            return direction, f"{where}: ranking, direction {loss!r}"
    if record.get("kind") == "finetune":
        entry = DATASETS.get(str(record.get("dataset", "")))
        labels = entry.direction if entry else None
        if labels:
            return labels, f"{where}: fine-tuned on {record['dataset']} labels"
    return None


def model_direction(info: DeployInfo, model_path: str | os.PathLike, flag: str | None) -> tuple[str, str]:
    """The score direction of a model's output and where it comes from: ``(direction, source)``.

    The one place that decides it, for every tool (evaluate, predict, rank accuracy). ``direction`` is
    ``higher_better``, ``lower_better`` or ``unknown``. In order: the ``flag``; the record of the run that
    trained the model (:func:`trained_direction`); the released models by file name
    (``rankiqa.registry.released_directions``); the head: a ranking head (``fc8_m``) is ``higher_better``
    (the rank loss's default ``quality`` direction), a fine-tuned head without a record is ``unknown`` (it
    follows the labels it was trained on, MOS or DMOS, which nothing else tells).
    """
    if flag:
        return flag, "given on the command line"
    trained = trained_direction(model_path)
    if trained:
        return trained
    stem = Path(model_path).stem.lower()
    released = registry.released_directions()
    if stem in released:
        return released[stem], f"released model {Path(model_path).stem}"
    if info.head_kind == "ranking":
        return "higher_better", "ranking head fc8_m: relative scores, rank loss direction 'quality'"
    return "unknown", ("fine-tuned head without a training record: it follows the labels it was trained on "
                       "(MOS or DMOS); give the direction on the command line (--direction; "
                       "--model-direction in tools.cross_dataset; with make: PRED_DIRECTION for predict "
                       "and export, CROSS_DIRECTIONS for cross)")


def crop_positions(height: int, width: int, crop_height: int, crop_width: int, count: int, seed: int,
                   index: int) -> np.ndarray:
    """``count`` random top-left corners ``(y, x)`` for the image with ordinal ``index``.

    Corners are uniform over every position that keeps the crop inside the image (both ends
    inclusive). The generator is seeded with ``(seed, index)`` only.
    """
    if height < crop_height or width < crop_width:
        raise ValueError(f"image {height}x{width} is smaller than the {crop_height}x{crop_width} crop")
    rng = np.random.default_rng([seed, index])
    ys = rng.integers(0, height - crop_height + 1, size=count)
    xs = rng.integers(0, width - crop_width + 1, size=count)
    return np.stack([ys, xs], axis=1)


def prefetch(func: Callable[[T], Any], items: Iterable[T], depth: int = 4) -> Iterator[tuple[T, Future]]:
    """Yield ``(item, future of func(item))`` in order, with up to ``depth`` calls running ahead.

    Image decoding (OpenCV releases the GIL) then overlaps with the forward passes.
    """
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: collections.deque[tuple[T, Future]] = collections.deque()
        for item in items:
            pending.append((item, pool.submit(func, item)))
            if len(pending) > depth:
                yield pending.popleft()
        while pending:
            yield pending.popleft()


class CropScorer:
    """Scores images by the net's outputs on random crops, ``batch`` crops per forward pass."""

    def __init__(self, net: Any, info: DeployInfo, crops: int = 30, batch: int = 60, seed: int = 0):
        if crops < 1:
            raise ValueError("crops must be at least 1")
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.net = net
        self.info = info
        self.crops = crops
        self.batch = batch
        self.seed = seed
        self._buffer = np.empty((batch, 3, info.crop_height, info.crop_width), dtype=np.float32)

    def _outputs(self, count: int) -> np.ndarray:
        """The output blob of the net (a Caffe net) for the first ``count`` crops of the buffer; a backend
        (``rankiqa.onnx_scoring``) overrides this and nothing else."""
        blob = self.net.blobs[self.info.input_blob]
        if blob.data.shape[0] != count:  # reshape only when the batch size changes (the last batch)
            blob.reshape(count, 3, self.info.crop_height, self.info.crop_width)
            self.net.reshape()
        blob.data[...] = self._buffer[:count]
        self.net.forward()
        return self.net.blobs[self.info.output_blob].data.copy()

    def _forward(self, count: int) -> np.ndarray:
        """Run the net on the first ``count`` crops of the buffer; one score per crop."""
        out = np.asarray(self._outputs(count)).reshape(count, -1)
        if out.shape[1] != 1:
            raise InputError(f"output blob {self.info.output_blob!r} has {out.shape[1]} values per "
                             "crop; a quality score needs exactly 1", self.info.path)
        return out[:, 0].astype(np.float64)

    def score(self, items: Iterable[tuple[K, int, np.ndarray]]) -> Iterator[tuple[K, np.ndarray]]:
        """Yield ``(key, per-crop outputs)`` for each ``(key, index, HxWx3 BGR uint8 image)``, in order.

        ``index`` seeds the crop positions (see :func:`crop_positions`); images must be at least the
        crop size (check with :meth:`fits` first).
        """
        ch, cw = self.info.crop_height, self.info.crop_width
        owners: list[int] = []  # for each filled buffer row: which pending image it belongs to
        pending: list[tuple[K, list[float]]] = []  # images whose crops are (partly) in flight
        done = 0  # number of images of `pending` already yielded

        def flush() -> Iterator[tuple[K, np.ndarray]]:
            nonlocal done
            scores = self._forward(len(owners))
            for owner, value in zip(owners, scores, strict=True):
                pending[owner][1].append(float(value))
            owners.clear()
            while done < len(pending) and len(pending[done][1]) == self.crops:
                key, values = pending[done]
                yield key, np.asarray(values)
                pending[done] = (key, [])  # free the memory; the slot index must stay valid
                done += 1

        for key, index, image in items:
            height, width = image.shape[:2]
            pending.append((key, []))
            owner = len(pending) - 1
            # (H, W, C) -> (C, H, W) float32, once per image, then slice the crops out of it
            chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
            for y, x in crop_positions(height, width, ch, cw, self.crops, self.seed, index):
                self._buffer[len(owners)] = chw[:, y:y + ch, x:x + cw]
                owners.append(owner)
                if len(owners) == self.batch:
                    yield from flush()
        if owners:
            yield from flush()

    def fits(self, image: np.ndarray) -> bool:
        """True when the image is at least as large as the crop."""
        return image.shape[0] >= self.info.crop_height and image.shape[1] >= self.info.crop_width


def summarize(values: np.ndarray) -> tuple[float, float]:
    """The image's score (mean of its crop outputs, as the paper) and the median beside it."""
    return float(np.mean(values)), float(np.median(values))


def add_crop_arguments(parser: argparse.ArgumentParser) -> None:
    """The crop-protocol flags shared by ``tools.evaluate`` and ``tools.predict``."""
    parser.add_argument("--crops", type=int, default=30, help="random crops per image (default 30)")
    parser.add_argument("--batch", type=int, default=60, help="crops per forward pass (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the crop positions (default 0)")
    parser.add_argument("--gpu", type=int, default=-1, help="GPU id; -1 = CPU (default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def check_crop_arguments(args: argparse.Namespace) -> None:
    """Reject crop-protocol flags that cannot work."""
    if args.crops < 1 or args.batch < 1:
        raise InputError("--crops and --batch must be at least 1")
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
