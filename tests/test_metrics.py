"""rankiqa.metrics against scipy and against hand-computed values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from rankiqa import metrics as m

RNG = np.random.default_rng(1234)
PRED = RNG.normal(size=60)
MOS = 3.0 * np.tanh(PRED) + RNG.normal(scale=0.3, size=60) + 4.5


def test_correlations_match_scipy_on_random_vectors() -> None:
    result = m.metrics(PRED, MOS)
    assert result["n"] == 60
    assert result["srocc"] == pytest.approx(stats.spearmanr(PRED, MOS).statistic, abs=1e-12)
    assert result["krocc"] == pytest.approx(stats.kendalltau(PRED, MOS).statistic, abs=1e-12)
    assert result["plcc"] == pytest.approx(stats.pearsonr(PRED, MOS).statistic, abs=1e-12)
    assert result["rmse"] == pytest.approx(math.sqrt(np.mean((PRED - MOS) ** 2)), abs=1e-12)


def test_hand_computed_values() -> None:
    # perfect reversal: every rank correlation is exactly -1
    assert m.srocc([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    assert m.krocc([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # Spearman = 1 - 6 sum d^2 / (n (n^2 - 1)): ranks (1,2,3,4,5) vs (2,1,4,3,5) -> d^2 sum 4 -> 0.8
    assert m.srocc([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    # Kendall: 10 pairs, 2 discordant -> (8 - 2) / 10
    assert m.krocc([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.6)
    assert m.rmse([0, 0], [3, 4]) == pytest.approx(math.sqrt(12.5))


def test_ties_are_handled_as_scipy() -> None:
    pred = np.array([1.0, 1.0, 2.0, 3.0, 3.0, 3.0, 5.0, 0.5])
    mos = np.array([2.0, 3.0, 3.0, 4.0, 4.0, 1.0, 6.0, 6.0])
    assert m.srocc(pred, mos) == pytest.approx(stats.spearmanr(pred, mos).statistic, abs=1e-12)
    assert m.krocc(pred, mos) == pytest.approx(stats.kendalltau(pred, mos).statistic, abs=1e-12)
    # tau-b differs from tau-a when there are ties: make sure the tie-corrected one is used
    concordant_minus_discordant = sum(np.sign(pred[i] - pred[j]) * np.sign(mos[i] - mos[j])
                                      for i in range(8) for j in range(i + 1, 8))
    assert m.krocc(pred, mos) != pytest.approx(concordant_minus_discordant / 28)


@pytest.mark.parametrize("pred, mos", [
    (np.full(10, 3.0), np.arange(10.0)),   # constant predictions (a dead network)
    (np.arange(10.0), np.full(10, 2.0)),   # constant ground truth
    ([1.0], [2.0]),                        # a single image
])
def test_degenerate_input_gives_defined_numbers(pred, mos) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConstantInputWarning / RuntimeWarning may leak either
        result = m.metrics(pred, mos)
    for key in m.FLOAT_KEYS:
        assert math.isfinite(result[key]), key
    for key in ("srocc", "krocc", "plcc", "plcc_l4", "plcc_l5"):
        assert result[key] == 0.0
    # the "fit" of constant predictions is the mean of the ground truth
    assert result["rmse_l4"] == pytest.approx(float(np.std(mos)))
    assert result["fit_l4"] == result["fit_l5"] == "constant"


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        m.metrics([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="no samples"):
        m.metrics([], [])
    with pytest.raises(ValueError, match="finite"):
        m.metrics([1.0, float("nan"), 2.0], [1, 2, 3])


def test_logistic4_fit_recovers_a_noiseless_logistic() -> None:
    x = np.linspace(-3, 5, 80)
    y = m.logistic4(x, 9.0, 1.0, 1.0, 0.7)
    fitted, status = m.fit_logistic(x, y, 4)
    assert status == "logistic"
    assert np.max(np.abs(fitted - y)) < 1e-4
    result = m.metrics(x, y)
    assert result["plcc_l4"] == pytest.approx(1.0, abs=1e-8)
    assert result["rmse_l4"] == pytest.approx(0.0, abs=1e-4)
    # the raw PLCC of a sigmoid is below 1: the fit is what makes the difference
    assert result["plcc"] < 0.99


def test_logistic5_fit_handles_decreasing_relations() -> None:
    x = np.linspace(0, 10, 50)
    y = m.logistic5(x, -6.0, 1.2, 5.0, -0.05, 50.0)  # decreasing, like a quality model on DMOS
    fitted, status = m.fit_logistic(x, y, 5)
    assert status == "logistic"
    assert np.max(np.abs(fitted - y)) < 1e-3
    result = m.metrics(x, y)
    assert result["srocc"] == pytest.approx(-1.0)
    assert result["plcc_l5"] == pytest.approx(1.0, abs=1e-6)  # fitted values rise with the truth


def test_fit_with_fewer_samples_than_parameters_falls_back_to_a_line() -> None:
    fitted, status = m.fit_logistic([1.0, 2.0, 4.0], [3.0, 5.0, 9.0], 4)
    assert status == "linear_fallback"
    np.testing.assert_allclose(fitted, [3.0, 5.0, 9.0], atol=1e-9)


def test_failed_fit_falls_back_to_a_line(monkeypatch) -> None:
    def failing_fit(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(m, "curve_fit", failing_fit)
    result = m.metrics(PRED, MOS)
    assert result["fit_l4"] == result["fit_l5"] == "linear_fallback"
    slope, intercept = np.polyfit(PRED, MOS, 1)
    line = slope * PRED + intercept
    assert result["plcc_l4"] == pytest.approx(abs(stats.pearsonr(PRED, MOS).statistic), abs=1e-9)
    assert result["rmse_l4"] == pytest.approx(math.sqrt(np.mean((line - MOS) ** 2)), abs=1e-9)


def test_fit_improves_on_the_raw_correlation_for_a_nonlinear_relation() -> None:
    result = m.metrics(PRED, MOS)
    assert result["fit_l4"] == "logistic" and result["fit_l5"] == "logistic"
    assert result["plcc_l4"] > result["plcc"]
    assert result["plcc_l5"] >= result["plcc_l4"] - 1e-6  # one more parameter cannot fit worse
    assert result["rmse_l4"] < float(np.std(MOS))


def test_metrics_by_type_uses_the_type_codes() -> None:
    types = ["01", "10", "2", "01", "10", "2"] * 10
    pred = np.arange(60.0)
    mos = np.where(np.array(types) == "10", -pred, pred)  # type 10 reversed, the others agree
    by_type = m.metrics_by_type(pred, mos, types)
    assert list(by_type) == ["01", "2", "10"]  # numeric codes in natural order
    assert by_type["01"]["srocc"] == pytest.approx(1.0)
    assert by_type["10"]["srocc"] == pytest.approx(-1.0)
    assert [by_type[t]["n"] for t in by_type] == [20, 20, 20]
    mask = np.array(types) == "2"
    assert by_type["2"] == m.metrics(pred[mask], mos[mask])


def test_metrics_by_type_with_names_and_length_check() -> None:
    by_type = m.metrics_by_type([1, 2, 3, 4], [1, 3, 4, 2], ["jpeg", "wn", "jpeg", "wn"])
    assert list(by_type) == ["jpeg", "wn"]
    assert by_type["wn"]["srocc"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="types"):
        m.metrics_by_type([1, 2], [1, 2], ["a"])


def test_within_reference_separates_content_offsets_from_the_order_inside_each_reference() -> None:
    # Two contents, each ordered perfectly inside, but the model scores content "b" 100 higher: the pooled
    # SROCC suffers, the within-reference one does not.
    mos = np.tile(np.arange(10.0), 2)
    refs = ["a"] * 10 + ["b"] * 10
    pred = mos + np.array([0.0] * 10 + [100.0] * 10)
    mos_shifted = mos + np.array([9.0] * 10 + [0.0] * 10)  # and the labels put content "a" higher
    assert m.srocc(pred, mos_shifted) < 0.5
    within = m.within_reference(pred, mos_shifted, refs)
    assert within["mean"] == {"srocc": pytest.approx(1.0), "krocc": pytest.approx(1.0),
                              "plcc": pytest.approx(1.0), "n_references": 2}
    assert within["per_reference"]["a"]["n"] == 10
    # one reference reversed: the mean is the average of the two
    pred[10:] = -pred[10:]
    within = m.within_reference(pred, mos_shifted, refs)
    assert within["per_reference"]["b"]["srocc"] == pytest.approx(-1.0)
    assert within["mean"]["srocc"] == pytest.approx(0.0)


def test_within_reference_leaves_tiny_references_out_of_the_mean() -> None:
    within = m.within_reference([1, 2, 3, 4, 5], [1, 2, 3, 5, 4], ["a", "a", "a", "b", "b"])
    assert within["per_reference"]["b"]["n"] == 2
    assert within["mean"]["n_references"] == 1
    assert within["mean"]["srocc"] == pytest.approx(1.0)
    assert m.within_reference([1, 2], [2, 1], ["a", "b"])["mean"] == {}
    with pytest.raises(ValueError, match="references"):
        m.within_reference([1, 2], [1, 2], ["a"])


def test_every_key_is_labelled() -> None:
    assert set(m.metrics(PRED, MOS)) == set(m.LABELS)


def test_paired_difference_is_the_difference_of_correlations_with_an_interval_around_it() -> None:
    rng = np.random.default_rng(3)
    mos = rng.uniform(0, 9, 120)
    good = mos + rng.normal(0, 1.0, 120)  # a model close to the ground truth
    poor = mos + rng.normal(0, 6.0, 120)  # a noisy one
    result = m.paired_difference(good, poor, mos, "srocc", resamples=500, seed=1)
    assert result["difference"] == pytest.approx(m.srocc(good, mos) - m.srocc(poor, mos))
    assert 0.0 < result["low"] < result["difference"] < result["high"]
    assert (result["level"], result["resamples"]) == (m.BOOTSTRAP_LEVEL, 500)
    again = m.paired_difference(good, poor, mos, "srocc", resamples=500, seed=1)
    assert again == result  # seeded
    flipped = m.paired_difference(poor, good, mos, "plcc", resamples=500)
    assert flipped["high"] < 0.0


def test_paired_difference_of_a_model_with_itself_is_exactly_zero() -> None:
    rng = np.random.default_rng(4)
    mos, pred = rng.normal(size=40), rng.normal(size=40)
    result = m.paired_difference(pred, pred, mos, "plcc", resamples=200)
    assert result["difference"] == result["low"] == result["high"] == 0.0  # the pairing cancels every draw


def test_paired_difference_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        m.paired_difference([1, 2, 3], [1, 2, 3], [1, 2, 3], "rmse")
    with pytest.raises(ValueError, match="at least 3"):
        m.paired_difference([1, 2], [2, 1], [1, 2])
    with pytest.raises(ValueError, match="differ in length"):
        m.paired_difference([1, 2, 3], [1, 2], [1, 2, 3])
