"""Image-quality metrics: rank and linear correlations, raw and after a logistic fit.

All correlations are computed with scipy, so ties are handled exactly as scipy does (SROCC uses
average ranks; KROCC is Kendall's tau-b). The paper reports SROCC and PLCC on the *raw* network outputs
(no fit); the logistic-fitted values follow the VQEG practice and are labelled separately.

Logistic mappings (``x`` = prediction, fitted to the ground truth by least squares):

* 4 parameters (VQEG FR-TV Phase II, 2003)::

      f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2

* 5 parameters (Sheikh, Sabir & Bovik, 2006)::

      f(x) = b1 * (1/2 - 1 / (1 + exp(b2 * (x - b3)))) + b4 * x + b5

The fit runs on standardised predictions ``(x - mean) / std``; both families are closed under an affine
change of ``x``, so this changes neither PLCC nor RMSE after the fit, only the conditioning of the fit.
Starting values follow the data (range and mean of the ground truth, sign of the raw correlation). When
``scipy.optimize.curve_fit`` fails, returns non-finite values, or ends worse than a straight line, the
fallback is the least-squares *linear* fit, and the ``fit_l4`` / ``fit_l5`` entry says so.

Degenerate input gives defined numbers, never NaN and never an exception: a correlation with a constant
vector (constant predictions, or constant ground truth) or with fewer than two samples is reported as
0.0 (no association can be measured); the fitted curve is then the constant mean of the ground truth.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import expit

#: Human-readable labels of the keys of :func:`metrics`, for tables and plots.
LABELS: dict[str, str] = {
    "n": "number of images",
    "srocc": "SROCC (Spearman, raw outputs)",
    "krocc": "KROCC (Kendall tau-b, raw outputs)",
    "plcc": "PLCC (Pearson, raw outputs; as the paper)",
    "rmse": "RMSE (raw outputs vs ground truth; meaningful for fine-tuned models only)",
    "plcc_l4": "PLCC after 4-parameter logistic fit (VQEG)",
    "rmse_l4": "RMSE after 4-parameter logistic fit",
    "plcc_l5": "PLCC after 5-parameter logistic fit (Sheikh 2006)",
    "rmse_l5": "RMSE after 5-parameter logistic fit",
    "fit_l4": "4-parameter fit status (logistic, linear_fallback or constant)",
    "fit_l5": "5-parameter fit status (logistic, linear_fallback or constant)",
}

#: Keys of :func:`metrics` that hold floats (the others are ``n`` and the fit statuses).
FLOAT_KEYS: tuple[str, ...] = ("srocc", "krocc", "plcc", "rmse", "plcc_l4", "rmse_l4", "plcc_l5", "rmse_l5")


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic: ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``."""
    scale = max(abs(b4), 1e-12)  # |b4| -> 0 would divide by zero; the limit is a step function
    return (b1 - b2) * expit((x - b3) / scale) + b2


def logistic5(x: np.ndarray, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
    """Sheikh 5-parameter logistic: ``b1 * (1/2 - 1/(1 + exp(b2 (x - b3)))) + b4 x + b5``."""
    # 1 / (1 + exp(t)) == expit(-t); expit does not overflow for large |t|.
    return b1 * (0.5 - expit(-b2 * (x - b3))) + b4 * x + b5


def _as_vectors(pred: Sequence[float] | np.ndarray, mos: Sequence[float] | np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    pred_arr = np.asarray(pred, dtype=np.float64).ravel()
    mos_arr = np.asarray(mos, dtype=np.float64).ravel()
    if pred_arr.shape != mos_arr.shape:
        raise ValueError(f"predictions ({pred_arr.size}) and ground truth ({mos_arr.size}) differ in length")
    if pred_arr.size == 0:
        raise ValueError("no samples to evaluate")
    if not (np.all(np.isfinite(pred_arr)) and np.all(np.isfinite(mos_arr))):
        raise ValueError("predictions and ground truth must be finite numbers (got NaN or inf)")
    return pred_arr, mos_arr


def _degenerate(a: np.ndarray, b: np.ndarray) -> bool:
    """True when no correlation is defined: fewer than 2 samples or a constant vector."""
    return a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0


def constant_scores(scores: Sequence[float] | np.ndarray) -> str | None:
    """A warning when two or more scores are all the same (a collapsed model), else None."""
    x = np.asarray(scores, dtype=np.float64).ravel()
    if x.size < 2 or np.ptp(x) != 0:
        return None
    return (f"the scores are constant (every one of the {x.size} images scored {x[0]:.6g}): the model's "
            "output does not depend on the image (collapsed?)")


def degenerate_reason(pred: Sequence[float] | np.ndarray, mos: Sequence[float] | np.ndarray) -> str | None:
    """Why every correlation is 0.0 by definition (see the module docstring), to be said aloud; None when
    the correlations are defined. Constant predictions are what a collapsed model gives."""
    x, y = _as_vectors(pred, mos)
    if x.size < 2:
        return f"only {x.size} image: no correlation is defined (reported as 0)"
    if constant_scores(x):
        return f"{constant_scores(x)}; SROCC/PLCC are 0 by definition"
    if np.ptp(y) == 0:
        return "the ground truth is constant: SROCC/PLCC are 0 by definition"
    return None


def srocc(pred: Sequence[float] | np.ndarray, mos: Sequence[float] | np.ndarray) -> float:
    """Spearman rank-order correlation (scipy; ties get average ranks); 0.0 when undefined."""
    x, y = _as_vectors(pred, mos)
    if _degenerate(x, y):
        return 0.0
    return float(stats.spearmanr(x, y).statistic)


def krocc(pred: Sequence[float] | np.ndarray, mos: Sequence[float] | np.ndarray) -> float:
    """Kendall rank-order correlation, tau-b (scipy's default, tie-corrected); 0.0 when undefined."""
    x, y = _as_vectors(pred, mos)
    if _degenerate(x, y):
        return 0.0
    return float(stats.kendalltau(x, y).statistic)


def plcc(pred: Sequence[float] | np.ndarray, mos: Sequence[float] | np.ndarray) -> float:
    """Pearson linear correlation on the raw values (scipy); 0.0 when undefined."""
    x, y = _as_vectors(pred, mos)
    if _degenerate(x, y):
        return 0.0
    return float(stats.pearsonr(x, y).statistic)


def rmse(pred: Sequence[float] | np.ndarray, mos: Sequence[float] | np.ndarray) -> float:
    """Root mean squared difference of the raw values."""
    x, y = _as_vectors(pred, mos)
    return float(np.sqrt(np.mean((x - y) ** 2)))


def fit_logistic(pred: Sequence[float] | np.ndarray, mos: Sequence[float] | np.ndarray,
                 params: int = 4) -> tuple[np.ndarray, str]:
    """Map predictions onto the ground-truth scale with a ``params``-parameter logistic (4 or 5).

    Returns the fitted values and the status: ``logistic`` (the fit worked), ``linear_fallback``
    (least-squares line instead, see the module docstring) or ``constant`` (no fit possible: the
    mean of the ground truth is returned for every sample).
    """
    if params not in (4, 5):
        raise ValueError(f"params must be 4 or 5, not {params}")
    x, y = _as_vectors(pred, mos)
    if _degenerate(x, y):
        return np.full_like(y, y.mean()), "constant"
    z = (x - x.mean()) / x.std()
    slope, intercept = np.polyfit(z, y, 1)
    linear = slope * z + intercept
    if x.size <= params:  # as many unknowns as samples: the fit is meaningless
        return linear, "linear_fallback"
    sign = 1.0 if slope >= 0 else -1.0
    if params == 4:
        func = logistic4
        # b1/b2 are the upper/lower asymptotes; swapping them makes the curve decreasing.
        high, low = (y.max(), y.min()) if sign > 0 else (y.min(), y.max())
        start = [high, low, 0.0, 1.0]
    else:
        func = logistic5
        start = [np.ptp(y), sign, 0.0, 0.0, y.mean()]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            coeffs, _ = curve_fit(func, z, y, p0=start, maxfev=20000)
        fitted = func(z, *coeffs)
    except (RuntimeError, ValueError, FloatingPointError):
        return linear, "linear_fallback"
    if not np.all(np.isfinite(fitted)):
        return linear, "linear_fallback"
    # A converged but poor local optimum: a logistic with free slope can always get close to a line,
    # so ending worse than the line means the optimiser went astray.
    if np.sum((fitted - y) ** 2) > np.sum((linear - y) ** 2) * (1 + 1e-9):
        return linear, "linear_fallback"
    return fitted, "logistic"


def metrics(pred: Sequence[float] | np.ndarray, mos: Sequence[float] | np.ndarray) -> dict:
    """All metrics of ``pred`` against the ground truth ``mos``; keys and meanings in :data:`LABELS`."""
    x, y = _as_vectors(pred, mos)
    result: dict = {
        "n": int(x.size),
        "srocc": srocc(x, y),
        "krocc": krocc(x, y),
        "plcc": plcc(x, y),
        "rmse": rmse(x, y),
    }
    for params in (4, 5):
        fitted, status = fit_logistic(x, y, params)
        result[f"plcc_l{params}"] = plcc(fitted, y)
        result[f"rmse_l{params}"] = rmse(fitted, y)
        result[f"fit_l{params}"] = status
    return result


#: Resamples and confidence level of :func:`paired_difference`.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_LEVEL = 0.95
#: The correlations :func:`paired_difference` compares, by key.
CORRELATIONS = {"srocc": srocc, "plcc": plcc, "krocc": krocc}


def paired_difference(pred_a: Sequence[float] | np.ndarray, pred_b: Sequence[float] | np.ndarray,
                      mos: Sequence[float] | np.ndarray, metric: str = "srocc",
                      resamples: int = BOOTSTRAP_RESAMPLES, level: float = BOOTSTRAP_LEVEL,
                      seed: int = 0) -> dict[str, float]:
    """How much model A's correlation with the ground truth exceeds model B's, with a bootstrap interval.

    ``pred_a``, ``pred_b``, ``mos``: one value per image, the same images in the same order. Returns
    ``{"difference", "low", "high", "level", "resamples"}``: ``metric(pred_a, mos) - metric(pred_b, mos)``
    (``metric``: a key of ``CORRELATIONS``) and its percentile bootstrap interval at ``level`` (0-1): the
    images are drawn with replacement, the same draw for both models (a paired bootstrap,
    ``scipy.stats.bootstrap(paired=True, method="percentile")``, seeded). It treats the images as
    independent: images of one reference are not, so with few references the interval leaves out how much
    the difference varies from one content to another. ``ValueError`` for unequal lengths, non-finite
    values, fewer than 3 images or an unknown metric.
    """
    if metric not in CORRELATIONS:
        raise ValueError(f"unknown metric {metric!r} (known: {', '.join(CORRELATIONS)})")
    a, y = _as_vectors(pred_a, mos)
    b, _ = _as_vectors(pred_b, mos)
    if len(y) < 3:
        raise ValueError(f"{len(y)} images: a bootstrap interval needs at least 3")
    func = CORRELATIONS[metric]

    def statistic(x1: np.ndarray, x2: np.ndarray, truth: np.ndarray) -> float:
        return func(x1, truth) - func(x2, truth)

    result = stats.bootstrap((a, b, y), statistic, n_resamples=resamples, vectorized=False, paired=True,
                             confidence_level=level, method="percentile", rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    return {"difference": statistic(a, b, y), "low": float(interval.low), "high": float(interval.high),
            "level": level, "resamples": resamples}


def _type_sort_key(value: str) -> tuple:
    """Natural order: numeric codes by value ('2' before '10'), then names alphabetically."""
    text = str(value)
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def metrics_by_type(pred: Sequence[float] | np.ndarray, mos: Sequence[float] | np.ndarray,
                    types: Sequence[str]) -> dict[str, dict]:
    """:func:`metrics` per distortion type code (the dataset's own codes, in natural order)."""
    x, y = _as_vectors(pred, mos)
    return {code: metrics(x[mask], y[mask]) for code, mask in _groups(types, x.size, "types", _type_sort_key)}


def _groups(labels: Sequence[str], size: int, what: str, key: Any = None) -> list[tuple[str, np.ndarray]]:
    """``(label, boolean mask)`` per distinct label of ``labels`` (as text, sorted by ``key``); raises
    ``ValueError`` naming ``what`` when there are not ``size`` labels."""
    names = np.asarray([str(label) for label in labels], dtype=object)
    if names.size != size:
        raise ValueError(f"{what} ({names.size}) and predictions ({size}) differ in length")
    return [(name, names == name) for name in sorted(set(names.tolist()), key=key)]


#: Correlations averaged by :func:`within_reference` (the others depend on the label scale or on a fit).
WITHIN_KEYS: tuple[str, ...] = ("srocc", "krocc", "plcc")
#: Fewest images of one reference that :func:`within_reference` averages: two images always correlate +-1.
MIN_REFERENCE_IMAGES = 3


def within_reference(pred: Sequence[float] | np.ndarray, mos: Sequence[float] | np.ndarray,
                     references: Sequence[str]) -> dict:
    """SROCC/KROCC/PLCC inside each reference image's distorted versions, and their mean over references.

    The overall correlation of a test set pools several references, so it mixes two things: the order of
    the distortions *inside* one image content and the offsets a model puts *between* contents (a
    no-reference model scores some photographs higher than others at equal distortion; a MOS from a
    full-reference stand-in is not content-free either). Within-reference correlations measure the first
    alone; their mean is the usual per-content summary.

    ``pred``, ``mos``: 1-D, finite, of equal length N (any scale; correlations only); ``references``: N
    reference names. Returns ``{"per_reference": {ref: {"n", "srocc", "krocc", "plcc"}}, "mean": {"srocc",
    "krocc", "plcc", "n_references"}}`` (correlations in [-1, 1]); references with fewer than
    ``MIN_REFERENCE_IMAGES`` images are listed but left out of the mean (two images always correlate +-1).
    ``mean`` is empty when no reference has that many. A reference whose predictions or labels are constant
    counts 0.0, as :func:`metrics` reports any degenerate correlation. Raises ``ValueError`` on a length
    mismatch, empty or non-finite input.
    """
    x, y = _as_vectors(pred, mos)
    per: dict[str, dict] = {}
    for name, mask in _groups(references, x.size, "references"):
        correlations = {key: CORRELATIONS[key](x[mask], y[mask]) for key in WITHIN_KEYS}
        per[name] = {"n": int(mask.sum()), **correlations}
    counted = [values for values in per.values() if values["n"] >= MIN_REFERENCE_IMAGES]
    mean: dict = {}
    if counted:
        mean = {key: float(np.mean([values[key] for values in counted])) for key in WITHIN_KEYS}
        mean["n_references"] = len(counted)
    return {"per_reference": per, "mean": mean}
