"""The head-refit measurement: its closed-form heads and its choice of strength (no Caffe needed)."""

from __future__ import annotations

import numpy as np

from experiments import ft_head_ridge


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(80, 5)) * 20.0 + 10.0  # ranking features: large and off-centre
    types = [f"T{i % 4}" for i in range(80)]
    return x, x @ np.array([0.01, 0.0, -0.02, 0.0, 0.005]) + 0.5, types


def test_a_strong_penalty_gives_the_ranking_head_mapped_onto_the_labels():
    x, y, _ = _data()
    prior, prior_bias = np.array([3.0, 1.0, -2.0, 0.5, 0.0]), 7.0
    (w, b), = ft_head_ridge.ridge_heads(x, y, prior, prior_bias, [1e9])
    output = x @ prior + prior_bias
    slope, offset = np.polyfit(output, y, 1)
    assert np.allclose(w, slope * prior, rtol=1e-5)
    assert np.allclose(x @ w + b, slope * output + offset, atol=1e-6)  # the ranking model, calibrated


def test_a_weak_penalty_gives_the_least_squares_fit():
    x, y, _ = _data()
    (w, b), = ft_head_ridge.ridge_heads(x, y, np.ones(5), 0.0, [1e-12])
    assert np.allclose(x @ w + b, y, atol=1e-6)


def test_cross_validation_keeps_the_prior_when_the_labels_follow_it_and_frees_the_fit_when_they_do_not():
    x, y, types = _data()
    strengths = [1e-6, 1.0, 1e6]
    truth = np.array([0.01, 0.0, -0.02, 0.0, 0.005])
    assert ft_head_ridge.cross_validated_strength(x, y, types, truth, 0.0, strengths) == 1e6
    assert ft_head_ridge.cross_validated_strength(x, y, types, np.array([0.0, 1.0, 0.0, 0.0, 0.0]), 0.0,
                                                  strengths) == 1e-6


def test_a_training_list_that_names_none_of_the_table_stops_with_exit_2_naming_it(tmp_path, capsys):
    table = tmp_path / "table.csv"
    table.write_text("reference,type,level,path,score,direction\n"
                     "a,GN,1,a/GN_1.png,0.9,higher_better\nb,GN,1,b/GN_1.png,0.8,higher_better\n")
    (tmp_path / "elsewhere.png").write_bytes(b"")  # exists, but is not one of the table's images
    train = tmp_path / "train.txt"
    train.write_text(f"{tmp_path / 'elsewhere.png'} 0.5\n")
    code = ft_head_ridge.main(["--rank-model", str(tmp_path / "m.caffemodel"), "--table", str(table),
                               "--train-list", str(train), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "must name some, not all, of the table's images" in err and str(train) in err
    assert not (tmp_path / "out").exists()
