"""All-pairs hinge loss: numpy forward/backward against brute force, and through real Caffe nets."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from pylayers.rank_loss import (
    all_pairs_hinge,
    all_pairs_hinge_loop,
    hinge_on_pairs,
    pair_count,
    pair_hinge,
    pair_indices,
)
from rankiqa.errors import InputError


def tid_layout(types: int = 9, levels: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Levels and groups of a TID-style batch: groups of one image over all levels."""
    return np.tile(np.arange(levels), types), np.repeat(np.arange(types), levels)


def live_layout(types: int = 4, levels: int = 6, images: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """LIVE-style: per type, level-major then image."""
    per_group = np.repeat(np.arange(levels), images)
    return np.tile(per_group, types), np.repeat(np.arange(types), levels * images)


def random_layout(rng: np.random.Generator, n: int = 37) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled items, uneven groups, tied levels: nothing the loss may take for granted."""
    return rng.integers(0, 4, size=n), rng.integers(0, 5, size=n)


def brute_force_loss(scores, levels, groups, margin, sign=1.0) -> float:
    """Enumerate pairs with itertools, independently of both implementations under test."""
    total = 0.0
    for i, j in itertools.permutations(range(len(scores)), 2):
        if groups[i] == groups[j] and levels[i] < levels[j]:
            total += max(0.0, margin - sign * (scores[i] - scores[j]))
    return total / len(scores)


LAYOUTS = {
    "tid": tid_layout(),
    "live": live_layout(),
    "random": random_layout(np.random.default_rng(7)),
    "one_group": (np.arange(6), np.zeros(6, dtype=int)),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("direction", ["quality", "dmos"])
@pytest.mark.parametrize("scale", [0.5, 8.0, 40.0])
def test_forward_and_gradient_equal_brute_force(layout: str, direction: str, scale: float) -> None:
    levels, groups = LAYOUTS[layout]
    rng = np.random.default_rng(int(scale * 10) + len(levels))
    scores = rng.normal(scale=scale, size=len(levels))
    sign = 1.0 if direction == "quality" else -1.0
    loss, grad = all_pairs_hinge(scores, levels, groups, 10.0, direction)
    loop_loss, loop_grad = all_pairs_hinge_loop(scores, levels, groups, 10.0, direction)
    assert loss == pytest.approx(brute_force_loss(scores, levels, groups, 10.0, sign), rel=1e-12)
    assert loss == pytest.approx(loop_loss, rel=1e-12)
    np.testing.assert_allclose(grad, loop_grad, atol=1e-15)
    # numeric gradient of the numpy loss itself (away from kinks for continuous random scores)
    eps = 1e-6
    numeric = np.array([(all_pairs_hinge(scores + eps * e, levels, groups, 10.0, direction)[0]
                         - all_pairs_hinge(scores - eps * e, levels, groups, 10.0, direction)[0]) / (2 * eps)
                        for e in np.eye(len(scores))])
    np.testing.assert_allclose(grad, numeric, atol=1e-7)


def test_pair_counts_match_the_paper() -> None:
    assert pair_count(*tid_layout()) == 90  # 9 groups x C(5, 2)
    assert pair_count(*live_layout()) == 240  # 4 groups x C(6, 2) x 2 x 2


def test_hand_computed_example() -> None:
    # better image scores 3, worse 0, margin 10: violation 7, over N = 2 images
    loss, grad = all_pairs_hinge(np.array([3.0, 0.0]), np.array([0, 1]), np.array([0, 0]), 10.0)
    assert loss == pytest.approx(3.5)
    np.testing.assert_allclose(grad, [-0.5, 0.5])
    # ordered by more than the margin: no loss, no gradient
    loss, grad = all_pairs_hinge(np.array([11.0, 0.0]), np.array([0, 1]), np.array([0, 0]), 10.0)
    assert loss == 0.0 and not grad.any()
    # items of different groups are never compared
    loss, _ = all_pairs_hinge(np.array([0.0, 5.0]), np.array([0, 1]), np.array([0, 1]), 10.0)
    assert loss == 0.0


def test_dmos_direction_is_quality_on_negated_scores() -> None:
    levels, groups = live_layout()
    scores = np.random.default_rng(1).normal(scale=10, size=len(levels))
    loss_q, grad_q = all_pairs_hinge(-scores, levels, groups, 10.0, "quality")
    loss_d, grad_d = all_pairs_hinge(scores, levels, groups, 10.0, "dmos")
    assert loss_d == pytest.approx(loss_q)
    np.testing.assert_allclose(grad_d, -grad_q)


def brute_force_pairs(levels, groups) -> list[tuple[int, int]]:
    """The ordered pairs by definition, in row-major (better, worse) order."""
    return [(i, j) for i, j in itertools.product(range(len(levels)), repeat=2)
            if groups[i] == groups[j] and levels[i] < levels[j]]


def test_pair_indices_are_the_ordered_pairs_within_groups() -> None:
    better, worse = pair_indices(np.array([2, 0, 1, 0]), np.array([0, 0, 0, 1]))
    assert list(zip(better.tolist(), worse.tolist(), strict=True)) == [(1, 0), (1, 2), (2, 0)]
    assert better.dtype == worse.dtype == np.intp


@pytest.mark.parametrize("seed", range(6))
def test_pair_indices_equal_the_definition_on_any_layout(seed: int) -> None:
    # Shuffled items, uneven groups (singletons included), tied levels, float group ids as Caffe blobs hold.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    levels = rng.integers(0, 5, size=n).astype(np.float32)
    groups = rng.choice([-3.5, 0.0, 2.0, 7.0, 11.0], size=n).astype(np.float32)
    better, worse = pair_indices(levels, groups)
    assert sorted(zip(better.tolist(), worse.tolist(), strict=True)) == brute_force_pairs(levels, groups)


@pytest.mark.parametrize("layout", ["tid", "live"])
def test_pairs_of_a_batch_laid_out_group_after_group_come_in_row_major_order(layout: str) -> None:
    # The order the N x N matrix had, so the loss of a data-layer batch sums its terms in the same order.
    levels, groups = LAYOUTS[layout]
    better, worse = pair_indices(levels, groups)
    assert list(zip(better.tolist(), worse.tolist(), strict=True)) == brute_force_pairs(levels, groups)


def test_pair_indices_of_an_empty_batch_and_mismatched_sizes() -> None:
    better, worse = pair_indices(np.zeros(0), np.zeros(0))
    assert better.size == worse.size == 0
    assert all_pairs_hinge(np.zeros(0), np.zeros(0), np.zeros(0)) == (0.0, pytest.approx(np.zeros(0)))
    with pytest.raises(ValueError, match="differ in size"):
        pair_indices(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="differ in size"):
        all_pairs_hinge(np.zeros(3), np.zeros(3), np.zeros(2))


def test_memory_grows_with_the_squared_group_sizes_not_with_n_squared() -> None:
    # 8,000 images in groups of 4: 32,000 candidate pairs. The N x N boolean matrix alone would be 64 MB (and
    # the dense float64 hinge matrix 512 MB); numpy reports its buffers to tracemalloc, so the peak shows what
    # was allocated.
    import tracemalloc

    n, size = 8_000, 4
    levels = np.tile(np.arange(size), n // size).astype(np.float32)
    groups = np.repeat(np.arange(n // size), size).astype(np.float32)
    scores = np.random.default_rng(0).normal(scale=10, size=n).astype(np.float32)
    tracemalloc.start()
    try:
        loss, grad = all_pairs_hinge(scores, levels, groups)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    candidates = n * size
    assert peak < 100 * candidates  # 3.2 MB; 64 MB for the N x N mask alone
    assert pair_count(levels, groups) == (n // size) * 6  # C(4, 2) per group
    assert np.isfinite(loss) and grad.shape == (n,)


def test_hinge_on_given_pairs_equals_the_loss_of_the_layout() -> None:
    levels, groups = LAYOUTS["random"]
    scores = np.random.default_rng(4).normal(scale=10, size=len(levels))
    for direction in ("quality", "dmos"):
        loss, grad = hinge_on_pairs(scores, *pair_indices(levels, groups), 10.0, direction)
        expected_loss, expected_grad = all_pairs_hinge_loop(scores, levels, groups, 10.0, direction)
        assert loss == pytest.approx(expected_loss, rel=1e-12)
        np.testing.assert_allclose(grad, expected_grad, atol=1e-15)
    nan_loss, nan_grad = hinge_on_pairs(np.array([1.0, np.nan]), np.array([0]), np.array([1]))
    assert np.isnan(nan_loss) and np.isnan(nan_grad).all()


def test_pair_hinge_matches_all_pairs_on_one_pair() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        a, b = rng.normal(scale=8, size=2)
        a_better = bool(rng.integers(2))
        loss, grad_a, grad_b = pair_hinge([a], [b], [1.0 if a_better else -1.0], 10.0)
        # the same two images as one group of the all-pairs loss (which divides by 2 images, not 1 pair)
        ref_loss, ref_grad = all_pairs_hinge([a, b], [0, 1] if a_better else [1, 0], [0, 0], 10.0)
        assert loss == pytest.approx(2 * ref_loss)
        np.testing.assert_allclose([grad_a[0], grad_b[0]], 2 * ref_grad)
    with pytest.raises(ValueError):
        pair_hinge([1.0], [2.0], [0.0])


def test_unknown_direction_is_rejected() -> None:
    with pytest.raises(ValueError):
        all_pairs_hinge([1.0, 2.0], [0, 1], [0, 0], 10.0, "up")


# ----------------------------------------------------------------------------------------------------
# Through Caffe: a real InnerProduct layer under the Python loss


def _loss_net(tmp_path: Path, n: int, dim: int, loss_param: str, with_group: bool = True,
              loss_weight: float = 1.0, layer: str = "AllPairsHingeLossLayer") -> Path:
    group_input = (f"layer {{ name: 'group' type: 'Input' top: 'group' "
                   f"input_param {{ shape {{ dim: {n} }} }} }}" if with_group else "")
    bottoms = "bottom: 'score' bottom: 'label' " + ("bottom: 'group' " if with_group else "")
    text = f"""
layer {{ name: 'x' type: 'Input' top: 'x' input_param {{ shape {{ dim: {n} dim: {dim} }} }} }}
layer {{ name: 'label' type: 'Input' top: 'label' input_param {{ shape {{ dim: {n} }} }} }}
{group_input}
layer {{ name: 'score' type: 'InnerProduct' bottom: 'x' top: 'score'
  inner_product_param {{ num_output: 1 weight_filler {{ type: 'gaussian' std: 1 }}
                         bias_filler {{ type: 'constant' value: 0.5 }} }} }}
layer {{ name: 'loss' type: 'Python' {bottoms} top: 'loss' loss_weight: {loss_weight}
  python_param {{ module: 'pylayers.rank_loss' layer: '{layer}' param_str: "{loss_param}" }} }}
"""
    path = tmp_path / "loss_net.prototxt"
    path.write_text(text)
    # The gaussian filler draws from Caffe's RNG: seed it, or a draw that puts a pair right at the hinge's
    # kink now and then makes the central differences disagree (seen once in the suite).
    import caffe

    caffe.set_random_seed(0)
    return path


def _finite_difference_check(net, loss_weight: float = 1.0, eps: float = 1e-2) -> None:
    """Analytic gradients of the InnerProduct parameters == central differences of the net's objective.

    The objective Caffe differentiates is loss_weight x the loss top blob."""
    net.forward()
    net.backward()
    for blob in net.params["score"]:
        analytic = blob.diff.copy()
        numeric = np.zeros_like(analytic)
        flat = blob.data.reshape(-1)
        for k in range(flat.size):
            original = flat[k]
            flat[k] = original + eps
            plus = net.forward()["loss"].item()
            flat[k] = original - eps
            minus = net.forward()["loss"].item()
            flat[k] = original
            numeric.reshape(-1)[k] = loss_weight * (plus - minus) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, rtol=2e-3, atol=2e-3)


@pytest.mark.caffe
@pytest.mark.parametrize("direction", ["quality", "dmos"])
def test_backward_matches_finite_differences_in_caffe(tmp_path: Path, direction: str) -> None:
    caffe = pytest.importorskip("caffe")
    caffe.set_mode_cpu()
    levels, groups = live_layout(types=2, levels=3, images=2)
    n, dim = len(levels), 4
    net = caffe.Net(str(_loss_net(tmp_path, n, dim, f"{{margin: 10, direction: {direction}}}",
                                  loss_weight=2.0)), caffe.TRAIN)
    rng = np.random.default_rng(11)
    net.blobs["x"].data[...] = rng.normal(scale=3.0, size=(n, dim))
    net.blobs["label"].data[...] = levels
    net.blobs["group"].data[...] = groups
    # the Caffe loss is loss_weight x the numpy loss of the layer's actual inputs
    out = net.forward()
    expected, _ = all_pairs_hinge(net.blobs["score"].data, levels, groups, 10.0, direction)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert 0 < expected  # some pairs active, so the gradient check is not vacuous
    _finite_difference_check(net, loss_weight=2.0)


@pytest.mark.caffe
def test_layer_follows_a_change_of_batch_layout(tmp_path: Path) -> None:
    # The layer keeps the pairs of the last layout: a new layout must be noticed (and an old one again).
    caffe = pytest.importorskip("caffe")
    caffe.set_mode_cpu()
    n = 12
    net = caffe.Net(str(_loss_net(tmp_path, n, 3, "{margin: 10}")), caffe.TRAIN)
    rng = np.random.default_rng(8)
    layouts = [tid_layout(types=3, levels=4), live_layout(types=2, levels=3, images=2),
               (rng.integers(0, 3, size=n), rng.integers(0, 4, size=n))]
    losses = []
    for levels, groups in [*layouts, layouts[0]]:
        net.blobs["x"].data[...] = rng.normal(scale=3.0, size=(n, 3))
        net.blobs["label"].data[...] = levels
        net.blobs["group"].data[...] = groups
        loss = net.forward()["loss"].item()
        net.backward()
        expected, expected_grad = all_pairs_hinge(net.blobs["score"].data, levels, groups, 10.0)
        assert loss == pytest.approx(expected, rel=1e-5)
        np.testing.assert_allclose(net.blobs["score"].diff.reshape(-1), expected_grad, rtol=1e-5, atol=1e-7)
        losses.append(loss)
    assert len(set(losses)) == len(losses) and min(losses) > 0  # four different, non-trivial batches


@pytest.mark.caffe
def test_group_size_param_replaces_group_bottom(tmp_path: Path) -> None:
    caffe = pytest.importorskip("caffe")
    levels, groups = tid_layout(types=3, levels=4)
    n = len(levels)
    net = caffe.Net(str(_loss_net(tmp_path, n, 3, "{group_size: 4}", with_group=False)), caffe.TRAIN)
    net.blobs["x"].data[...] = np.random.default_rng(2).normal(scale=3.0, size=(n, 3))
    net.blobs["label"].data[...] = levels
    loss = net.forward()["loss"].item()
    assert loss == pytest.approx(all_pairs_hinge(net.blobs["score"].data, levels, groups, 10.0)[0], rel=1e-5)
    _finite_difference_check(net)


@pytest.mark.caffe
def test_pair_hinge_layer_backward_in_caffe(tmp_path: Path) -> None:
    caffe = pytest.importorskip("caffe")
    p, dim = 6, 3
    text = f"""
layer {{ name: 'x' type: 'Input' top: 'x' top: 'x_p' top: 'label'
  input_param {{ shape {{ dim: {p} dim: {dim} }} shape {{ dim: {p} dim: {dim} }} shape {{ dim: {p} }} }} }}
layer {{ name: 'score' type: 'InnerProduct' bottom: 'x' top: 'score'
  param {{ name: 'w' }} param {{ name: 'b' }}
  inner_product_param {{ num_output: 1 weight_filler {{ type: 'gaussian' std: 1 }} }} }}
layer {{ name: 'score_p' type: 'InnerProduct' bottom: 'x_p' top: 'score_p'
  param {{ name: 'w' }} param {{ name: 'b' }}
  inner_product_param {{ num_output: 1 weight_filler {{ type: 'gaussian' std: 1 }} }} }}
layer {{ name: 'loss' type: 'Python' bottom: 'score' bottom: 'score_p' bottom: 'label' top: 'loss'
  loss_weight: 1 python_param {{ module: 'pylayers.rank_loss' layer: 'PairHingeLossLayer'
  param_str: '{{margin: 10}}' }} }}
"""
    path = tmp_path / "pair.prototxt"
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TRAIN)
    rng = np.random.default_rng(5)
    net.blobs["x"].data[...] = rng.normal(scale=3.0, size=(p, dim))
    net.blobs["x_p"].data[...] = rng.normal(scale=3.0, size=(p, dim))
    net.blobs["label"].data[...] = rng.choice([-1.0, 1.0], size=p)
    loss = net.forward()["loss"].item()
    expected = pair_hinge(net.blobs["score"].data, net.blobs["score_p"].data, net.blobs["label"].data)[0]
    assert loss == pytest.approx(expected, rel=1e-5) and expected > 0
    _finite_difference_check(net)  # the shared weights get both branches' gradients


@pytest.mark.parametrize("param_str, fragment", [
    ("{margin: ten}", "margin"),
    ("{group_sise: 5}", "unknown key"),
    ("[1, 2]", "mapping"),
    ("{direction: up}", "direction"),
    ("{margin: 10", "YAML"),
])
@pytest.mark.caffe
def test_bad_param_str_names_the_layer(tmp_path: Path, param_str: str, fragment: str) -> None:
    caffe = pytest.importorskip("caffe")
    with pytest.raises(InputError, match="AllPairsHingeLossLayer") as err:
        caffe.Net(str(_loss_net(tmp_path, 4, 2, param_str)), caffe.TRAIN)
    assert fragment in str(err.value)


@pytest.mark.caffe
def test_group_size_must_divide_the_batch(tmp_path: Path) -> None:
    caffe = pytest.importorskip("caffe")
    with pytest.raises(InputError, match="does not divide the batch size 10"):
        caffe.Net(str(_loss_net(tmp_path, 10, 2, "{group_size: 4}", with_group=False)), caffe.TRAIN)
    with pytest.raises(InputError, match="group_size"):
        caffe.Net(str(_loss_net(tmp_path, 10, 2, "{margin: 10}", with_group=False)), caffe.TRAIN)
