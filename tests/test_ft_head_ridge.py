"""The head-refit measurement: its closed-form heads and its choice of strength (no Caffe needed)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from experiments import ft_head_ridge
from rankiqa.errors import InputError
from rankiqa.evaluation import Sample


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


def _table(path: Path, rows: list[tuple[str, str]], direction: str = "higher_better") -> Path:
    """A table CSV of (reference, image file) rows; the images need not exist."""
    lines = ["reference,type,level,path,score,direction"]
    lines += [f"{ref},GN,1,{image},0.5,{direction}" for ref, image in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_training_image_missing_from_the_table_stops_with_exit_2_naming_the_list(tmp_path, capsys):
    table = _table(tmp_path / "table.csv", [("a", "a/GN_1.png"), ("b", "b/GN_1.png")])
    test = _table(tmp_path / "test.csv", [("b", "b/GN_1.png")])
    (tmp_path / "elsewhere.png").write_bytes(b"")  # exists, but is not one of the table's images
    train = tmp_path / "train.txt"
    train.write_text(f"{tmp_path / 'elsewhere.png'} 0.5\n")
    code = ft_head_ridge.main(["--rank-model", str(tmp_path / "m.caffemodel"), "--table", str(table),
                               "--train-list", str(train), "--test-table", str(test),
                               "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"1 training image(s) are not in {table}" in err and str(train) in err
    assert not (tmp_path / "out").exists()


def test_held_out_images_never_train_and_the_tables_must_agree_on_the_direction(tmp_path):
    table = _table(tmp_path / "table.csv", [("a", "a/GN_1.png"), ("a", "a/GN_2.png"), ("b", "b/GN_1.png")])
    (tmp_path / "a").mkdir()
    for name in ("GN_1.png", "GN_2.png"):
        (tmp_path / "a" / name).write_bytes(b"")
    train = tmp_path / "train.txt"
    train.write_text(f"{tmp_path / 'a' / 'GN_1.png'} 0.5\n{tmp_path / 'a' / 'GN_2.png'} 0.5\n")
    test = _table(tmp_path / "test.csv", [("b", "b/GN_1.png")])
    got_train, got_test = ft_head_ridge.training_and_test(table, train, test, None)
    assert [s.reference for s in got_train] == ["a", "a"] and [s.reference for s in got_test] == ["b"]
    extra = _table(tmp_path / "extra.csv", [("b", "b/GN_1.png")])  # a held-out image again
    with pytest.raises(InputError, match="also training images"):
        ft_head_ridge.training_and_test(table, train, test, extra)
    other = _table(tmp_path / "other.csv", [("c", "c/GN_1.png")], direction="lower_better")
    with pytest.raises(InputError, match="score direction lower_better, but .* has higher_better") as err:
        ft_head_ridge.training_and_test(table, train, test, other)
    assert str(other) in str(err.value)  # the table that differs is the one named


def test_nothing_to_hold_out_and_a_constant_ranking_head_are_said_plainly():
    x, y, _ = _data()
    assert ft_head_ridge.cross_validated_strength(x, y, ["T0"] * len(y), np.ones(5), 0.0, [1.0]) is None
    with pytest.raises(InputError, match="same score"):
        ft_head_ridge.ridge_heads(x, y, np.zeros(5), 1.0, [1.0])


def test_one_group_of_training_images_is_reported_without_a_cross_validated_row(tmp_path, monkeypatch):
    x, y, _ = _data()
    images = []
    for k in range(len(y)):
        (tmp_path / f"i{k}.png").write_bytes(b"")
        images.append(tmp_path / f"i{k}.png")
    lines = ["reference,type,level,path,score,direction"]
    lines += [f"{'a' if k < 60 else 'b'},GN,1,{image},{float(y[k])!r},higher_better"
              for k, image in enumerate(images)]
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(lines[:1] + lines[61:]) + "\n")
    (tmp_path / "train.txt").write_text("".join(f"{images[k]} {float(y[k])!r}\n" for k in range(60)))
    features = {str(image): row for image, row in zip(images, x, strict=True)}
    monkeypatch.setattr(ft_head_ridge, "ranking_features", lambda model, tables, crops, seed: (
        [np.array([features[p] for p in paths]) for paths in tables], np.ones(x.shape[1]), 0.0))
    out = tmp_path / "out"
    assert ft_head_ridge.main(["--rank-model", "m", "--table", str(tmp_path / "table.csv"), "--train-list",
                               str(tmp_path / "train.txt"), "--test-table", str(tmp_path / "test.csv"),
                               "--out", str(out)]) == 0
    report = json.loads((out / "ridge.json").read_text())
    assert report["cross_validated_strength"] is None and report["cross_validated_over"] is None
    assert (report["train_images"], report["test_images"]) == (60, 20)
    text = (out / "ridge.md").read_text()
    assert "cross-validated choice)" not in text and "No cross-validated choice" in text
    assert len(report["rows"]) == 1 + len(ft_head_ridge.STRENGTHS) + 2  # + the two trained heads
    assert [row.get("descent") for row in report["rows"][-2:]] == ["demo", "centred"]


SOLVER = ft_head_ridge.HeadSolver(momentum=0.9, weight_decay=5e-4, lr_mult=10.0, bias_lr_mult=20.0,
                                  decay_mult=1.0, bias_decay_mult=0.0, iters=100, batch=30,
                                  base_lr=3e-6)


def test_the_simulated_solver_is_read_from_the_demos_solver_net_and_profile():
    # protobuf keeps the solver's and layers' floats in single precision
    assert asdict(ft_head_ridge.demo_head_solver()) == pytest.approx(asdict(SOLVER), rel=1e-6)


def _calibrated(x: np.ndarray, y: np.ndarray, prior: np.ndarray, prior_bias: float) -> np.ndarray:
    slope, offset = np.polyfit(x @ prior + prior_bias, y, 1)
    return slope * (x @ prior + prior_bias) + offset


@pytest.mark.parametrize("centred", [False, True])
def test_the_trained_head_starts_as_the_calibrated_ranking_head(centred):
    x, y, _ = _data()
    prior, prior_bias = np.array([3.0, 1.0, -2.0, 0.5, 0.0]), 7.0
    w, b, _ = ft_head_ridge.descent_head(x, y, prior, prior_bias, centred, 0, SOLVER, iters=0)
    assert np.allclose(x @ w + b, _calibrated(x, y, prior, prior_bias), atol=1e-9)


@pytest.mark.parametrize("centred", [False, True])
def test_one_step_is_caffes_sgd_update_at_the_head_step_bound(centred):
    x, y, _ = _data()
    x, y = x[:30], y[:30]  # one batch holds every image: the step does not depend on the draw
    prior, prior_bias = np.array([3.0, 1.0, -2.0, 0.5, 0.0]), 7.0
    w1, b1, rate = ft_head_ridge.descent_head(x, y, prior, prior_bias, centred, 0, SOLVER, iters=1)
    mean = x.mean(axis=0) if centred else np.zeros(5)
    loss_weight = 1.0 / y.std() ** 2
    assert rate == pytest.approx(0.1 / (10.0 * loss_weight * np.mean(np.sum((x - mean) ** 2, axis=1))))
    slope, _ = np.polyfit(x @ prior + prior_bias, y, 1)
    w0 = slope * prior
    error = (_calibrated(x, y, prior, prior_bias) - y) * loss_weight / 30
    w_expected = w0 - rate * 10.0 * ((x - mean).T @ error + 5e-4 * w0)
    b_centred = float(np.mean(_calibrated(x, y, prior, prior_bias) - (x - mean) @ w0))
    b_expected = b_centred - rate * 20.0 * error.sum() - mean @ w_expected
    assert np.allclose(w1, w_expected, rtol=1e-9)
    assert b1 == pytest.approx(b_expected, rel=1e-9)


def test_the_second_step_carries_the_first_ones_momentum():
    x, y, _ = _data()
    x, y = x[:30], y[:30]
    prior, prior_bias = np.array([3.0, 1.0, -2.0, 0.5, 0.0]), 7.0
    w1, b1, rate = ft_head_ridge.descent_head(x, y, prior, prior_bias, False, 0, SOLVER, iters=1)
    w2, b2, _ = ft_head_ridge.descent_head(x, y, prior, prior_bias, False, 0, SOLVER, iters=2)
    slope, _ = np.polyfit(x @ prior + prior_bias, y, 1)
    loss_weight = 1.0 / y.std() ** 2
    w0 = slope * prior
    v1 = w0 - w1  # the first step's history (it started at 0)
    error = (x @ w1 + b1 - y) * loss_weight / 30
    assert np.allclose(w2, w1 - (0.9 * v1 + rate * 10.0 * (x.T @ error + 5e-4 * w1)), rtol=1e-9)


def test_the_rate_asked_for_stands_when_it_is_below_the_bound():
    x, y, _ = _data()
    slow = ft_head_ridge.HeadSolver(**{**asdict(SOLVER), "base_lr": 1e-12})
    _, _, rate = ft_head_ridge.descent_head(x, y, np.ones(5), 0.0, False, 0, slow, iters=0)
    assert rate == 1e-12


def test_centring_the_input_lets_the_bounded_step_fit_off_centre_features():
    x, y, _ = _data()
    prior, prior_bias = np.array([3.0, 1.0, -2.0, 0.5, 0.0]), 7.0
    errors = {}
    for centred in (False, True):
        w, b, rate = ft_head_ridge.descent_head(x, y, prior, prior_bias, centred, 0, SOLVER)
        errors[centred] = float(np.mean((x @ w + b - y) ** 2))
        start = float(np.mean((_calibrated(x, y, prior, prior_bias) - y) ** 2))
        assert errors[centred] <= start
    assert errors[True] < 0.5 * errors[False]


def _sample(ref: str, kind: str, level: str, score: float, line: int = 2) -> Sample:
    return Sample(path=f"{ref}/{kind}_{level}.png", score=score, reference=ref, type=kind, level=level,
                  line=line)


def test_the_label_lookup_guesses_each_held_out_image_from_the_training_labels_of_its_type_and_level():
    train = [_sample("a", "GN", "1", 0.9), _sample("b", "GN", "1", 0.7), _sample("a", "GB", "2", 0.4)]
    test = [_sample("c", "GB", "2", 0.1), _sample("c", "GN", "1", 0.2)]
    assert ft_head_ridge.label_lookup(train, test).tolist() == pytest.approx([0.4, 0.8])


def test_the_label_lookup_names_the_held_out_image_whose_type_and_level_no_training_image_has(tmp_path):
    train = [_sample("a", "GN", "1", 0.9)]
    test = [_sample("c", "GN", "1", 0.2, line=2), _sample("c", "JPEG", "3", 0.2, line=3)]
    with pytest.raises(InputError, match="'JPEG' level '3'") as caught:
        ft_head_ridge.label_lookup(train, test, tmp_path / "test.csv")
    assert caught.value.path == str(tmp_path / "test.csv") and caught.value.line == 3


def test_the_label_lookup_refuses_images_without_a_type_or_level():
    train = [_sample("a", "GN", "1", 0.9), _sample("b", "", "", 0.7)]
    with pytest.raises(InputError, match="no distortion type and level for b/_.png"):
        ft_head_ridge.label_lookup(train, [_sample("c", "GN", "1", 0.2)])
