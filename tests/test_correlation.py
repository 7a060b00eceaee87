"""SROCC/PLCC layer: values against scipy, degenerate batches, and the layer inside a Caffe net."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pylayers.correlation import correlations
from rankiqa.errors import InputError


def test_correlations_equal_scipy() -> None:
    rng = np.random.default_rng(0)
    score = rng.uniform(0, 9, size=30)
    prediction = score + rng.normal(scale=2.0, size=30)
    srocc, plcc = correlations(prediction, score)
    assert srocc == pytest.approx(stats.spearmanr(prediction, score)[0])
    assert plcc == pytest.approx(stats.pearsonr(prediction, score)[0])
    assert correlations(-score, score) == pytest.approx((-1.0, -1.0))
    # Spearman only sees ranks: a monotone distortion keeps SROCC at 1 but lowers PLCC
    srocc, plcc = correlations(np.exp(score), score)
    assert srocc == pytest.approx(1.0) and plcc < 0.99


def test_degenerate_batches_give_zero_not_nan() -> None:
    assert correlations(np.full(10, 3.0), np.arange(10.0)) == (0.0, 0.0)
    assert correlations(np.arange(10.0), np.ones(10)) == (0.0, 0.0)
    assert correlations([1.0], [2.0]) == (0.0, 0.0)
    with pytest.raises(ValueError):
        correlations([1.0, 2.0], [1.0])


def corr_net(tmp_path: Path, n: int, param_str: str = "") -> Path:
    path = tmp_path / "corr.prototxt"
    path.write_text(f"""
layer {{ name: 'in' type: 'Input' top: 'pred' top: 'score'
  input_param {{ shape {{ dim: {n} dim: 1 }} shape {{ dim: {n} }} }} }}
layer {{ name: 'corr' type: 'Python' bottom: 'pred' bottom: 'score' top: 'srocc' top: 'plcc'
  python_param {{ module: 'pylayers.correlation' layer: 'CorrelationLayer' param_str: "{param_str}" }} }}
""")
    return path


@pytest.mark.caffe
def test_layer_in_caffe(tmp_path: Path) -> None:
    caffe = pytest.importorskip("caffe")
    net = caffe.Net(str(corr_net(tmp_path, 12)), caffe.TEST)
    rng = np.random.default_rng(4)
    net.blobs["score"].data[...] = rng.uniform(size=12)
    net.blobs["pred"].data[...] = (net.blobs["score"].data + rng.normal(scale=0.3, size=12))[:, None]
    out = net.forward()
    expected = correlations(net.blobs["pred"].data, net.blobs["score"].data)
    assert out["srocc"].shape == (1,) and out["plcc"].shape == (1,)
    assert out["srocc"].item() == pytest.approx(expected[0], abs=1e-6)
    assert out["plcc"].item() == pytest.approx(expected[1], abs=1e-6)
    net.blobs["pred"].data[...] = 1.0  # constant predictions: defined value 0
    out = net.forward()
    assert out["srocc"].item() == 0.0 and out["plcc"].item() == 0.0


@pytest.mark.caffe
def test_unexpected_param_str_is_rejected(tmp_path: Path) -> None:
    caffe = pytest.importorskip("caffe")
    with pytest.raises(InputError, match="CorrelationLayer: param_str: unknown key"):
        caffe.Net(str(corr_net(tmp_path, 4, "{verbose: true}")), caffe.TEST)
