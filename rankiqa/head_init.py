"""How the new regression head of fine-tuning starts, and the scale of its Euclidean loss.

RankIQA+FT puts a new one-output head (``fc8``) on the ranking net and trains it with a Euclidean loss on
MOS/DMOS. The original starts the head from the prototxt's random filler and uses the raw labels. On a small
training set that start is fragile: the transferred features are on the scale the ranking margin (10) gave
them, a random head's first output is far from the labels (a Euclidean loss in the hundreds), and the first
updates, which mostly fix that offset, can reverse the ranking the features carry. Three starts
(``HEAD_INITS``):

- ``filler``: the prototxt's filler (the original's behaviour, kept for VGG-16 on the real datasets);
- ``mean``: weights 0, bias = the mean training label (the network's first prediction is the mean);
- ``linear``: a linear probe: ridge regression of the training labels on the frozen features that feed
  the head (the head's bottom blob), over a few random crops per training image; then fine-tuning goes on
  from the fitted head ("LP-FT", Kumar et al., *Fine-Tuning can Distort Pretrained Features and
  Underperform Out-of-Distribution*, ICLR 2022). The same start is used for a from-scratch baseline, whose
  features are random.
- ``calibrate``: the head keeps a direction and only its scale and offset are fitted (least squares of the
  training labels on the head's output, two numbers): the ranking head ``fc8_m`` of the initial weights when
  they have one of the head's shape (RankIQA+FT starts as the ranking model mapped onto the label scale),
  else the prototxt's filler (a from-scratch baseline starts as its random head mapped the same way). With
  few training references a full probe over-fits them; two numbers cannot.

``label_spread`` gives the standard deviation of the training labels; a loss weight of ``1 / std**2``
(``LOSS_SCALES``: ``std``) measures the Euclidean loss in units of the label spread, so that one learning
rate serves MOS 0-9, DMOS 0-100 and DMOS 0-1 alike (the gradient reaching the transferred layers no longer
grows with the square of the label scale).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankiqa.errors import InputError

HEAD_INITS: tuple[str, ...] = ("filler", "mean", "linear", "calibrate")
#: The starts after which the base rate is bounded (``stable_lr``): they return a feature energy.
BOUNDED_STARTS: tuple[str, ...] = ("linear", "calibrate")
#: The ranking head whose direction ``calibrate`` keeps when the initial weights have it.
RANKING_HEAD = "fc8_m"
LOSS_SCALES: tuple[str, ...] = ("none", "std")
#: Ridge strength of the linear probe, relative to the mean variance of the (centred) features.
LINEAR_PROBE_RIDGE = 1e-2
#: Random crops per training image for the linear probe.
LINEAR_PROBE_CROPS = 4
#: Largest normalised step of the head after a linear probe: lr x head lr_mult x loss weight x E||f||^2,
#: with f the head's input features. The head is a linear least-squares model on f, for which plain
#: gradient descent diverges once this product passes 2 (normalised LMS); the ranking margin leaves f
#: large (E||f||^2 in the thousands for the Shallow net), so a rate measured on one ranking model can be
#: unstable on the next (seen: a loss of 6e4 after 20 iterations, then a reversed ranking). 0.1 keeps
#: a wide margin.
HEAD_STEP = 0.1


@dataclass(frozen=True)
class Head:
    """The regression head of a fine-tuning net: its layer, the blob it reads, its output blob."""

    layer: str
    bottom: str
    top: str
    loss_layer: str


def find_head(net_param: Any, source: str | os.PathLike) -> Head:
    """The InnerProduct layer whose output the (training) ``EuclideanLoss`` compares with the labels.

    Raises ``InputError`` naming ``source`` when there is no Euclidean loss or no InnerProduct feeds it.
    """
    losses = [layer for layer in net_param.layer if layer.type == "EuclideanLoss"]
    if not losses:
        raise InputError("no EuclideanLoss layer: cannot find the regression head", source)
    loss = losses[0]
    for layer in net_param.layer:
        if layer.type == "InnerProduct" and loss.bottom[0] in layer.top:
            return Head(layer=layer.name, bottom=layer.bottom[0], top=loss.bottom[0], loss_layer=loss.name)
    raise InputError(f"no InnerProduct layer produces {loss.bottom[0]!r}, the input of {loss.name!r}", source)


def label_spread(labels: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation of the training labels; ``InputError`` if they are constant."""
    values = np.asarray(labels, dtype=np.float64)
    std = float(values.std())
    if not std > 0:
        raise InputError(f"all {len(values)} training labels are equal ({values[0]:g}): nothing to regress")
    return float(values.mean()), std


def linear_probe(features: np.ndarray, labels: np.ndarray, ridge: float = LINEAR_PROBE_RIDGE,
                 prior: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Ridge regression ``labels ~ features @ w + b``; returns ``(w, b)``, ``w`` of shape ``(d,)``.

    ``features``: ``(n, d)``; ``labels``: ``(n,)``. The ridge penalty is ``ridge`` times the mean variance
    of the centred features (scale-free), and the bias is not penalised. Constant feature columns (dead
    ReLUs) get weight 0 (with ``prior``: their prior weight). ``prior``: ``(d,)`` weights to shrink towards
    instead of 0 (the "L2-SP" penalty ||w - prior||^2 of Li, Grandvalet and Davoine, *Explicit Inductive
    Bias for Transfer Learning with Convolutional Networks*, ICML 2018): a large ``ridge`` returns ``prior``.
    """
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} feature rows but {y.shape[0]} labels")
    x_mean, y_mean = x.mean(axis=0), y.mean()
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc / len(x)
    penalty = ridge * max(float(np.trace(gram)) / gram.shape[0], 1e-12)
    target = xc.T @ yc / len(x)
    if prior is not None:
        prior = np.asarray(prior, dtype=np.float64).reshape(-1)
        if prior.shape != (x.shape[1],):
            raise ValueError(f"prior has {prior.size} weights for {x.shape[1]} features")
        target = target + penalty * prior
    w = np.linalg.solve(gram + penalty * np.eye(gram.shape[0]), target)
    return w, float(y_mean - x_mean @ w)


def head_features(net: Any, head: Head, images: Sequence[np.ndarray], crop: int, seed: int,
                  crops_per_image: int = LINEAR_PROBE_CROPS) -> np.ndarray:
    """The head's input for ``crops_per_image`` random crops of each image: ``(n_images * crops, d)``.

    The crops are written into the net's first blob (the data layer's ``data`` top) and the net runs from
    the layer after the data layer, so the data layer's own batch stream is not touched (a resumed run
    reads the same batches). Crop positions: ``rankiqa.scoring.crop_positions`` with ``(seed, image index)``.
    """
    from rankiqa.scoring import crop_positions

    data_blob = net.blobs["data"]
    batch = data_blob.data.shape[0]
    first = _first_layer_after_data(net)
    crops: list[np.ndarray] = []
    for index, image in enumerate(images):
        chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
        for y, x in crop_positions(image.shape[0], image.shape[1], crop, crop, crops_per_image, seed, index):
            crops.append(chw[:, y:y + crop, x:x + crop])
    out = []
    for start in range(0, len(crops), batch):
        chunk = crops[start:start + batch]
        data_blob.data[:len(chunk)] = np.stack(chunk)
        data_blob.data[len(chunk):] = 0.0
        net.forward(start=first)
        out.append(net.blobs[head.bottom].data[:len(chunk)].reshape(len(chunk), -1).copy())
    return np.concatenate(out)


def _first_layer_after_data(net: Any) -> str:
    names = list(net._layer_names)
    for index, name in enumerate(names):
        if "data" in net.top_names.get(name, []):
            return names[index + 1]
    raise InputError("the train net has no layer with a 'data' top")


def stable_lr(net_param: Any, head: Head, feature_energy: float) -> float:
    """The largest base learning rate whose normalised head step stays at ``HEAD_STEP`` (see there).

    ``feature_energy``: the mean of ||f||^2 over the probe's crops. The head's weight ``lr_mult`` and the
    Euclidean loss's ``loss_weight`` are read from the net (Caffe's defaults 1 when absent).
    """
    lr_mult, loss_weight = 1.0, 1.0
    for layer in net_param.layer:
        if layer.name == head.layer and layer.param:
            lr_mult = layer.param[0].lr_mult
        if layer.name == head.loss_layer and layer.loss_weight:
            loss_weight = layer.loss_weight[0]
    return HEAD_STEP / max(lr_mult * loss_weight * feature_energy, 1e-30)


def init_head(net: Any, head: Head, mode: str, list_path: str | os.PathLike, crop: int, seed: int,
              init_weights: str | os.PathLike | None = None) -> tuple[str, float | None]:
    """Set the head of ``net`` (weights and bias, in place) by ``mode``.

    Returns a line for the run log and, for ``linear`` and ``calibrate``, the mean squared norm of the
    head's input features over the probe's crops (for :func:`stable_lr`), else None. ``filler`` leaves the
    head as built; the others read the training list (``<path> <score>``); ``calibrate`` reads the ranking
    head from ``init_weights`` (a ``.caffemodel``) when given.
    """
    from rankiqa.image_io import read_bgr
    from rankiqa.lists import read_list

    if mode not in HEAD_INITS:
        raise InputError(f"unknown head initialisation {mode!r} (known: {', '.join(HEAD_INITS)})")
    if mode == "filler":
        return f"head {head.layer}: the prototxt's filler", None
    rows = read_list(list_path)
    labels = np.array([score for _, score in rows], dtype=np.float64)
    mean, std = label_spread(labels)
    weights, bias = net.params[head.layer][0].data, net.params[head.layer][1].data
    if mode == "mean":
        weights[...] = 0.0
        bias[...] = mean
        return f"head {head.layer}: weights 0, bias = mean training label {mean:.4g}", None
    images = [read_bgr(path) for path, _ in rows]
    small = [path for (path, _), image in zip(rows, images, strict=True) if min(image.shape[:2]) < crop]
    if small:
        raise InputError(f"image smaller than the {crop}x{crop} crop: {small[0]}", list_path)
    features = head_features(net, head, images, crop, seed)
    targets = np.repeat(labels, len(features) // len(labels))
    energy = float(np.mean(np.sum(features.astype(np.float64) ** 2, axis=1)))
    if mode == "calibrate":
        source = "the prototxt's filler"
        ranking = _ranking_head(init_weights, weights.shape, bias.shape)
        if ranking is not None:
            weights[...], bias[...] = ranking
            source = f"the ranking head {RANKING_HEAD}"
        direction = features.reshape(len(features), -1) @ weights.reshape(-1) + float(bias.reshape(-1)[0])
        if not np.std(direction) > 0:
            raise InputError(f"the head's output is the same for every training crop ({source}): nothing to "
                             "calibrate; use --head-init mean or linear", list_path)
        slope, offset = linear_probe(direction.reshape(-1, 1), targets, ridge=0.0)
        weights[...] *= slope[0]
        bias[...] = bias * slope[0] + offset
        corr = float(np.corrcoef(direction, targets)[0, 1]) if np.std(direction) > 0 else float("nan")
        return (f"head {head.layer}: {source}, scale {slope[0]:.4g} and offset {offset:.4g} fitted on "
                f"{len(labels)} training images x {len(features) // len(labels)} crops (training PLCC "
                f"{corr:+.3f}); labels mean {mean:.4g}, std {std:.4g}; E||f||^2 {energy:.4g}"), energy
    w, b = linear_probe(features, targets)
    weights[...] = w.reshape(weights.shape)
    bias[...] = b
    fitted = features @ w + b
    corr = float(np.corrcoef(fitted, targets)[0, 1]) if np.std(fitted) > 0 else float("nan")
    return (f"head {head.layer}: linear probe on {features.shape[1]} features of {head.bottom} "
            f"({len(labels)} training images x {len(features) // len(labels)} crops, ridge "
            f"{LINEAR_PROBE_RIDGE:g}); training PLCC of the fit {corr:.3f}; labels mean {mean:.4g}, std "
            f"{std:.4g}; E||f||^2 {energy:.4g}"), energy


def _ranking_head(init_weights: str | os.PathLike | None, weight_shape: tuple[int, ...],
                  bias_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """Weights and bias (float32, reshaped to ``weight_shape`` and ``bias_shape``) of ``RANKING_HEAD`` in
    ``init_weights`` (a ``.caffemodel``) when they fit the shapes, else None (also when ``init_weights`` is
    None)."""
    if init_weights is None:
        return None
    from rankiqa.caffe_io import read_caffemodel

    for layer in read_caffemodel(Path(init_weights)).layer:
        if layer.name == RANKING_HEAD and len(layer.blobs) == 2:
            w = np.asarray(layer.blobs[0].data, dtype=np.float32)
            b = np.asarray(layer.blobs[1].data, dtype=np.float32)
            if w.size == int(np.prod(weight_shape)) and b.size == int(np.prod(bias_shape)):
                return w.reshape(weight_shape), b.reshape(bias_shape)
    return None


def list_labels(list_path: str | os.PathLike) -> list[float]:
    """The scores of a ``<path> <score>`` list (files not checked)."""
    from rankiqa.lists import read_list

    return [score for _, score in read_list(Path(list_path), check_files=False)]
