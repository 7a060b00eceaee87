"""Test-phase layer that reports SROCC and PLCC between predictions and subjective scores.

As the original, the correlations are taken on the raw outputs (no logistic fit). A batch whose
predictions or scores are constant has no defined correlation; it reports 0 instead of NaN so that the
averaged test output of the solver stays a number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pylayers import Blobs, LayerBase
from pylayers.params import parse_params
from rankiqa import metrics
from rankiqa.errors import InputError
from rankiqa.netcheck import format_shape, values_per_item


def correlations(prediction: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """(SROCC, PLCC) of two equally long vectors; 0.0 where undefined (constant input or n < 2)."""
    x = np.asarray(prediction, dtype=np.float64).reshape(-1)
    y = np.asarray(score, dtype=np.float64).reshape(-1)
    if x.size != y.size:
        raise ValueError(f"prediction ({x.size}) and score ({y.size}) differ in size")
    if x.size == 0 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return 0.0, 0.0
    return metrics.srocc(x, y), metrics.plcc(x, y)  # 0.0 for constant input or n < 2


class CorrelationLayer(LayerBase):
    """Caffe layer: bottoms ``prediction`` (N,1)/(N,) and ``score`` (N,); tops ``srocc``, ``plcc`` (1,).

    No param_str keys; no gradient. The solver prints both tops as test outputs.
    """

    @classmethod
    def _check(cls, param_str: str | None, n_bottoms: int, n_tops: int) -> None:
        name = cls.__name__
        parse_params(param_str, name, {})
        if n_bottoms != 2 or n_tops != 2:
            raise InputError(f"needs 2 bottoms (prediction, score) and 2 tops (srocc, plcc); got "
                             f"{n_bottoms}/{n_tops}", name)

    @classmethod
    def static_tops(cls, param_str: str | None, bottoms: list, n_tops: int) -> list[tuple[int, ...]]:
        """The tops' shapes before the net is built (``rankiqa.netcheck``): the checks of ``setup``, and
        as many values per item in the prediction as in the score."""
        cls._check(param_str, len(bottoms), n_tops)
        counts = [values_per_item(shape) for shape in bottoms]
        if None not in counts and counts[0] != counts[1]:
            raise InputError(f"prediction is {format_shape(bottoms[0])}, score {format_shape(bottoms[1])}: "
                             "one prediction per score needed", cls.__name__)
        return [(1,), (1,)]

    def setup(self, bottom: Blobs, top: Blobs) -> None:
        self._check(self.param_str, len(bottom), len(top))

    def reshape(self, bottom: Blobs, top: Blobs) -> None:
        if bottom[0].count != bottom[1].count:
            raise InputError(f"prediction has {bottom[0].count} values, score {bottom[1].count}",
                             type(self).__name__)
        top[0].reshape(1)
        top[1].reshape(1)

    def forward(self, bottom: Blobs, top: Blobs) -> None:
        top[0].data[0], top[1].data[0] = correlations(bottom[0].data, bottom[1].data)

    def backward(self, top: Blobs, propagate_down: Sequence[bool], bottom: Blobs) -> None:
        """Metrics only: no gradient flows back."""
