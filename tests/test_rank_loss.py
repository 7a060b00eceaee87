"""All-pairs hinge loss: numpy forward/backward against brute force, and through real Caffe nets."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from pylayers.rank_loss import all_pairs_hinge, all_pairs_hinge_loop, pair_count, pair_hinge, pair_mask
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


def test_pair_mask_orders_pairs_within_groups() -> None:
    mask = pair_mask(np.array([2, 0, 1, 0]), np.array([0, 0, 0, 1]))
    assert {tuple(p) for p in np.argwhere(mask)} == {(1, 0), (1, 2), (2, 0)}


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
def test_bad_param_str_names_the_layer(tmp_path: Path, param_str: str, fragment: str) -> None:
    caffe = pytest.importorskip("caffe")
    with pytest.raises(InputError, match="AllPairsHingeLossLayer") as err:
        caffe.Net(str(_loss_net(tmp_path, 4, 2, param_str)), caffe.TRAIN)
    assert fragment in str(err.value)


def test_group_size_must_divide_the_batch(tmp_path: Path) -> None:
    caffe = pytest.importorskip("caffe")
    with pytest.raises(InputError, match="does not divide the batch size 10"):
        caffe.Net(str(_loss_net(tmp_path, 10, 2, "{group_size: 4}", with_group=False)), caffe.TRAIN)
    with pytest.raises(InputError, match="group_size"):
        caffe.Net(str(_loss_net(tmp_path, 10, 2, "{margin: 10}", with_group=False)), caffe.TRAIN)
