"""Ranking hinge losses: the efficient all-pairs Siamese loss and the two-branch baseline.

Score direction. ``direction: quality`` (default): a less distorted image (lower level) should get a
*higher* output, so the net's output reads like MOS. ``direction: dmos``: the original RankIQA LIVE
convention (its LIVE rank lists were written in reverse), the output rises with distortion, like DMOS.

All-pairs loss (RankIQA, "efficient Siamese"): with the batch laid out as groups (one distortion type of
one or more reference images over all levels), every ordered pair (i, j) of the same group with
``level_i < level_j`` (i is the better image) contributes ``max(0, margin - (f_i - f_j))``; the sum is
divided by the batch size N. One forward pass thus yields all within-group pairs (90 for a 45-image
TID-style batch) instead of the N/2 pairs a two-branch net sees. Only the pairs inside each group are
built (``pair_indices``), so the cost grows with the sum of the squared group sizes rather than with N^2,
and the layer builds them once per batch layout (``make bench`` plots both growths).

The numpy functions here need no Caffe, so tests and ``make bench`` call them directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pylayers import Blobs, LayerBase
from pylayers.params import parse_params
from rankiqa.errors import InputError
from rankiqa.netcheck import format_shape, values_per_item

DIRECTIONS = ("quality", "dmos")


def _sign(direction: str) -> float:
    """+1 when the better image should score higher (quality), -1 when lower (dmos)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    return 1.0 if direction == "quality" else -1.0


def pair_indices(levels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair that the all-pairs loss sees: ``(better, worse)`` index arrays, each (P,) intp.

    Pair k is (``better[k]``, ``worse[k]``): two images of the same group with
    ``levels[better[k]] < levels[worse[k]]``. Only the pairs inside each group are ever built, so time and
    memory grow with the sum of the squared group sizes, not with N squared (a 720-image batch of 9 groups
    of 80 has 57,600 candidate pairs instead of 518,400). Groups may be any values in any order; the pairs
    come out group by group (groups in sorted order), and within a group by ``better`` then ``worse`` in
    batch order, which for a batch laid out group after group (as ``RankDataLayer`` does) is the row-major
    order of the N x N pair matrix.
    """
    levels = np.asarray(levels).reshape(-1)
    groups = np.asarray(groups).reshape(-1)
    n = levels.size
    if groups.size != n:
        raise ValueError(f"levels ({n}) and groups ({groups.size}) differ in size")
    # Positions sorted by group (stable: batch order inside a group); edge marks where a group starts.
    order = groups.argsort(kind="stable")
    sorted_groups = groups[order]
    edge = np.empty(n + 1, dtype=bool)
    edge[0] = edge[n] = True
    np.not_equal(sorted_groups[1:], sorted_groups[:-1], out=edge[1:n])
    bounds = edge.nonzero()[0]
    sizes = bounds[1:] - bounds[:-1]
    # Sorted position p pairs with every position q of its group: p repeated size(p) times, and q running
    # over [start(p), start(p) + size(p)). With block(p) = the index of p's first candidate pair,
    # q = k - block(p) + start(p) for candidate pair k; ``shift`` is start(p) - block(p).
    size_p = sizes.repeat(sizes)
    shift = bounds[:-1].repeat(sizes)
    shift += size_p
    shift -= size_p.cumsum()
    first = np.arange(n).repeat(size_p)
    second = shift.repeat(size_p)
    second += np.arange(second.size)
    better = order[first]
    worse = order[second]
    keep = levels[better] < levels[worse]
    return better[keep], worse[keep]


def pair_count(levels: np.ndarray, groups: np.ndarray) -> int:
    """Number of ordered pairs the all-pairs loss sees in one batch."""
    return int(pair_indices(levels, groups)[0].size)


def hinge_on_pairs(scores: np.ndarray, better: np.ndarray, worse: np.ndarray, margin: float = 10.0,
                   direction: str = "quality") -> tuple[float, np.ndarray]:
    """The all-pairs hinge loss and its gradient over given pairs (``pair_indices``'s output).

    ``scores`` (N,) or (N, 1); returns ``(loss, grad)``, ``grad`` (N,) float64. Loss = sum over pairs k of
    max(0, margin - sign * (f[better_k] - f[worse_k])) / N, sign +1 for ``quality``, -1 for ``dmos``. A
    non-finite score makes the loss and every gradient entry NaN.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = scores.size
    sign = _sign(direction)
    if n == 0:
        return 0.0, np.zeros(0)
    if not np.isfinite(scores).all():
        # A NaN score compares False with everything: without this the loss would read 0 ("perfect") on a
        # diverged net. NaN makes the divergence visible to the solver's log and the driver.
        return float("nan"), np.full(n, np.nan)
    # The image that should score higher: the better one (quality), the worse one (dmos). Negating the
    # difference is exact, so both directions give the values of margin - sign * (f_better - f_worse).
    high, low = (better, worse) if sign > 0 else (worse, better)
    hinge = margin - (scores[high] - scores[low])
    active = hinge > 0
    loss = float(hinge[active].sum()) / n
    # d loss / d f: -1/N for the higher-scoring side of every active pair, +1/N for the lower.
    grad = (np.bincount(low[active], None, n) - np.bincount(high[active], None, n)) / n
    return loss, grad


def all_pairs_hinge(scores: np.ndarray, levels: np.ndarray, groups: np.ndarray, margin: float = 10.0,
                    direction: str = "quality") -> tuple[float, np.ndarray]:
    """All-pairs hinge loss and its exact gradient with respect to ``scores`` (forward + backward).

    ``scores``, ``levels``, ``groups``: N values each. Pairs from ``pair_indices`` (cost: the sum of the
    squared group sizes), then ``hinge_on_pairs``. Returns ``(loss, grad)`` with ``grad`` (N,) float64;
    raises ValueError when the sizes differ or ``direction`` is unknown.
    """
    scores = np.asarray(scores).reshape(-1)
    levels = np.asarray(levels).reshape(-1)
    groups = np.asarray(groups).reshape(-1)
    if not scores.size == levels.size == groups.size:
        raise ValueError(f"scores ({scores.size}), levels ({levels.size}) and groups ({groups.size}) differ "
                         "in size")
    better, worse = pair_indices(levels, groups)
    return hinge_on_pairs(scores, better, worse, margin, direction)


def all_pairs_hinge_loop(scores: np.ndarray, levels: np.ndarray, groups: np.ndarray, margin: float = 10.0,
                         direction: str = "quality") -> tuple[float, np.ndarray]:
    """Reference implementation with an explicit Python loop over pairs (tests and the benchmark)."""
    scores = [float(s) for s in np.asarray(scores).reshape(-1)]
    levels = list(np.asarray(levels).reshape(-1))
    groups = list(np.asarray(groups).reshape(-1))
    sign = _sign(direction)
    n = len(scores)
    total = 0.0
    grad = [0.0] * n
    for i in range(n):
        for j in range(n):
            if groups[i] != groups[j] or not levels[i] < levels[j]:
                continue
            violation = margin - sign * (scores[i] - scores[j])
            if violation > 0:
                total += violation
                grad[i] -= sign
                grad[j] += sign
    if n == 0:
        return 0.0, np.zeros(0)
    return total / n, np.asarray(grad, dtype=np.float64) / n


def pair_hinge(scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray, margin: float = 10.0,
               direction: str = "quality") -> tuple[float, np.ndarray, np.ndarray]:
    """Two-branch hinge: pair k has ``label_k = +1`` when image a is the better one, -1 when b is.

    Loss = sum_k max(0, margin - label_k * sign * (a_k - b_k)) / P for P pairs (P is each branch's
    batch size, as Caffe normalises). Returns ``(loss, grad_a, grad_b)``.
    """
    a = np.asarray(scores_a, dtype=np.float64).reshape(-1)
    b = np.asarray(scores_b, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if not (a.size == b.size == y.size):
        raise ValueError(f"pair sizes differ: {a.size}, {b.size}, {y.size}")
    if a.size == 0:
        return 0.0, np.zeros(0), np.zeros(0)
    if not np.all(np.abs(y) == 1):
        raise ValueError("pair labels must be +1 or -1")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        nan = np.full(a.size, np.nan)
        return float("nan"), nan, nan.copy()  # as in all_pairs_hinge: divergence must not read as 0
    sign = _sign(direction)
    p = a.size
    violation = margin - y * sign * (a - b)
    active = violation > 0
    loss = float(violation[active].sum()) / p
    grad_a = np.where(active, -y * sign, 0.0) / p
    return loss, grad_a, -grad_a


def _check_direction(value: object, layer: str) -> str:
    if value not in DIRECTIONS:
        raise InputError(f"param_str: direction must be one of {list(DIRECTIONS)}, got {value!r}", layer)
    return str(value)


def _margin_and_direction(params: dict, name: str) -> tuple[float, str]:
    """The hinge parameters every ranking loss layer takes from its param_str, checked."""
    try:
        margin = float(params["margin"])
    except (TypeError, ValueError):
        raise InputError(f"param_str: margin must be a number, got {params['margin']!r}", name) from None
    if not np.isfinite(margin) or margin < 0:
        raise InputError(f"param_str: margin must be finite and >= 0, got {margin}", name)
    return margin, _check_direction(params["direction"], name)


def _one_value_per_image(bottoms: list, name: str) -> None:
    """Every bottom of a ranking loss holds one value per image (score (N,1) or (N,), label, group)."""
    for index, shape in enumerate(bottoms):
        count = values_per_item(shape)
        if count is not None and count != 1:
            raise InputError(f"bottom {index} must hold one value per image, got shape {format_shape(shape)}",
                             name)


class AllPairsHingeLossLayer(LayerBase):
    """Caffe loss layer: bottoms ``score`` (N,1)/(N,), ``label`` (N,) levels, optional ``group`` (N,).

    param_str (YAML): ``margin`` (10), ``group_size`` (consecutive groups when there is no ``group``
    bottom), ``direction`` (``quality`` or ``dmos``). Needs ``loss_weight: 1`` in the prototxt.
    """

    @classmethod
    def _checked_params(cls, param_str: str | None, n_bottoms: int) -> tuple[float, str, int | None]:
        """(margin, direction, group_size) from param_str, with the bottom count checked."""
        name = cls.__name__
        params = parse_params(param_str, name, {"margin": 10.0, "group_size": None, "direction": "quality"})
        margin, direction = _margin_and_direction(params, name)
        group_size = params["group_size"]
        if n_bottoms not in (2, 3):
            raise InputError(f"needs bottoms score, label and optionally group; got {n_bottoms}", name)
        if n_bottoms == 2:
            if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
                raise InputError("without a group bottom, param_str needs group_size (a positive integer), "
                                 f"got {group_size!r}", name)
        return margin, direction, group_size

    @classmethod
    def static_tops(cls, param_str: str | None, bottoms: list, n_tops: int) -> list[tuple[int, ...]]:
        """The loss top's shape before the net is built (``rankiqa.netcheck``): param_str, bottom count
        and one value per image in every bottom, as ``setup`` and ``reshape`` check them."""
        cls._checked_params(param_str, len(bottoms))
        _one_value_per_image(bottoms, cls.__name__)
        return [(1,)]

    def setup(self, bottom: Blobs, top: Blobs) -> None:
        self.margin, self.direction, self.group_size = self._checked_params(self.param_str, len(bottom))
        self._grad = np.zeros(0)
        # The pairs of the last batch layout: every batch of a training run has the same levels and groups
        # (only the images change), so the pairs are built once, not at every forward.
        self._layout: tuple[bytes, bytes] | None = None
        self._pairs = (np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp))

    def reshape(self, bottom: Blobs, top: Blobs) -> None:
        name = type(self).__name__
        n = bottom[0].num
        if bottom[0].count != n:
            raise InputError(f"score must hold one value per image, got shape {tuple(bottom[0].shape)}", name)
        for index in range(1, len(bottom)):
            if bottom[index].count != n:
                raise InputError(f"bottom {index} has {bottom[index].count} values for a batch of {n}", name)
        if len(bottom) == 2 and n % self.group_size != 0:
            raise InputError(f"group_size {self.group_size} does not divide the batch size {n}", name)
        top[0].reshape(1)

    def _groups(self, bottom) -> np.ndarray:
        n = bottom[0].num
        if len(bottom) == 3:
            return bottom[2].data.reshape(-1)
        return np.arange(n) // self.group_size

    def pairs(self, bottom) -> tuple[np.ndarray, np.ndarray]:
        """``pair_indices`` of the batch's levels and groups, rebuilt only when they differ from the last
        batch's (compared byte for byte)."""
        levels = bottom[1].data.reshape(-1)
        groups = self._groups(bottom)
        layout = (levels.tobytes(), np.asarray(groups).tobytes())
        if layout != self._layout:
            self._pairs = pair_indices(levels, groups)
            self._layout = layout
        return self._pairs

    def forward(self, bottom: Blobs, top: Blobs) -> None:
        better, worse = self.pairs(bottom)
        loss, self._grad = hinge_on_pairs(bottom[0].data, better, worse, self.margin, self.direction)
        top[0].data[0] = loss

    def backward(self, top: Blobs, propagate_down: Sequence[bool], bottom: Blobs) -> None:
        if propagate_down[0]:
            # top diff carries the loss_weight that Caffe set up for this loss.
            scale = float(top[0].diff.reshape(-1)[0])
            bottom[0].diff[...] = (self._grad * scale).reshape(bottom[0].diff.shape)


class PairHingeLossLayer(LayerBase):
    """Caffe loss layer for the two-branch baseline: bottoms ``score`` (P,), ``score_p`` (P,), ``label``.

    ``label`` is +1 when the first branch's image is the better one, -1 otherwise. param_str:
    ``margin`` (10), ``direction`` (``quality``/``dmos``).
    """

    @classmethod
    def _checked_params(cls, param_str: str | None, n_bottoms: int) -> tuple[float, str]:
        """(margin, direction) from param_str, with the bottom count checked."""
        name = cls.__name__
        params = parse_params(param_str, name, {"margin": 10.0, "direction": "quality"})
        margin_direction = _margin_and_direction(params, name)
        if n_bottoms != 3:
            raise InputError(f"needs bottoms score, score_p and label; got {n_bottoms}", name)
        return margin_direction

    @classmethod
    def static_tops(cls, param_str: str | None, bottoms: list, n_tops: int) -> list[tuple[int, ...]]:
        """The loss top's shape before the net is built (``rankiqa.netcheck``), as the all-pairs loss."""
        cls._checked_params(param_str, len(bottoms))
        _one_value_per_image(bottoms, cls.__name__)
        return [(1,)]

    def setup(self, bottom: Blobs, top: Blobs) -> None:
        self.margin, self.direction = self._checked_params(self.param_str, len(bottom))
        self._grads = (np.zeros(0), np.zeros(0))

    def reshape(self, bottom: Blobs, top: Blobs) -> None:
        name = type(self).__name__
        p = bottom[0].num
        for index in range(3):
            if bottom[index].count != p:
                raise InputError(f"bottom {index} has {bottom[index].count} values for {p} pairs", name)
        top[0].reshape(1)

    def forward(self, bottom: Blobs, top: Blobs) -> None:
        loss, grad_a, grad_b = pair_hinge(bottom[0].data, bottom[1].data, bottom[2].data,
                                          self.margin, self.direction)
        self._grads = (grad_a, grad_b)
        top[0].data[0] = loss

    def backward(self, top: Blobs, propagate_down: Sequence[bool], bottom: Blobs) -> None:
        scale = float(top[0].diff.reshape(-1)[0])
        for index in range(2):
            if propagate_down[index]:
                bottom[index].diff[...] = (self._grads[index] * scale).reshape(bottom[index].diff.shape)
