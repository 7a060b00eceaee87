"""Test-phase layer that reports SROCC and PLCC between predictions and subjective scores.

As the original, the correlations are taken on the raw outputs (no logistic fit). A batch whose
predictions or scores are constant has no defined correlation; it reports 0 instead of NaN so that the
averaged test output of the solver stays a number.
"""

from __future__ import annotations

import numpy as np

from pylayers import LayerBase
from pylayers.prefetch import parse_params
from rankiqa import metrics
from rankiqa.errors import InputError


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

    def setup(self, bottom, top) -> None:
        name = type(self).__name__
        parse_params(self.param_str, name, {})
        if len(bottom) != 2 or len(top) != 2:
            raise InputError(f"needs 2 bottoms (prediction, score) and 2 tops (srocc, plcc); got "
                             f"{len(bottom)}/{len(top)}", name)

    def reshape(self, bottom, top) -> None:
        if bottom[0].count != bottom[1].count:
            raise InputError(f"prediction has {bottom[0].count} values, score {bottom[1].count}",
                             type(self).__name__)
        top[0].reshape(1)
        top[1].reshape(1)

    def forward(self, bottom, top) -> None:
        top[0].data[0], top[1].data[0] = correlations(bottom[0].data, bottom[1].data)

    def backward(self, top, propagate_down, bottom) -> None:
        """Metrics only: no gradient flows back."""
