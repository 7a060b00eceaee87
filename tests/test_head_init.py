"""The fine-tuning head's start and loss scale (rankiqa/head_init.py), and their use by tools/train.py."""

from __future__ import annotations

import numpy as np
import pytest

from rankiqa import head_init
from rankiqa.errors import InputError
from tests.caffe_marks import needs_caffe


def test_linear_probe_recovers_a_linear_map_at_any_label_scale():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)) * 30.0 + 50.0  # ranking features: large and off-centre
    w_true = np.array([0.5, -1.0, 0.0, 2.0, 0.1])
    for scale in (1.0, 9.0, 100.0):  # DMOS 0-1, MOS 0-9, DMOS 0-100
        y = scale * (x @ w_true + 3.0)
        w, b = head_init.linear_probe(x, y, ridge=1e-9)
        assert np.allclose(w, scale * w_true, rtol=1e-6, atol=1e-6 * scale)
        assert b == pytest.approx(3.0 * scale, rel=1e-6)


def test_linear_probe_ignores_dead_features_and_shrinks_with_the_ridge():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(50, 3)), np.zeros((50, 2))], axis=1)  # two dead ReLUs
    y = x[:, 0] * 2.0
    w, _ = head_init.linear_probe(x, y)
    assert np.all(np.isfinite(w)) and np.all(w[3:] == 0.0)
    strong, _ = head_init.linear_probe(x, y, ridge=10.0)
    assert abs(strong[0]) < abs(w[0]) < 2.0


def test_label_spread_refuses_constant_labels():
    assert head_init.label_spread([1.0, 3.0]) == (2.0, 1.0)
    with pytest.raises(InputError, match="equal"):
        head_init.label_spread([0.5, 0.5, 0.5])


@pytest.mark.caffe
def test_find_head_follows_the_euclidean_loss():
    from google.protobuf import text_format

    from rankiqa.caffe_io import caffe_pb2

    net = text_format.Parse("""
        layer { name: "fc7" type: "InnerProduct" bottom: "x" top: "fc7" }
        layer { name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8" }
        layer { name: "loss" type: "EuclideanLoss" bottom: "fc8" bottom: "score" top: "loss" }
    """, caffe_pb2().NetParameter())
    assert head_init.find_head(net, "n.prototxt") == head_init.Head("fc8", "fc7", "fc8", "loss")
    del net.layer[2]
    with pytest.raises(InputError, match="no EuclideanLoss"):
        head_init.find_head(net, "n.prototxt")


@needs_caffe
@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_finetuning_starts_from_a_linear_probe_on_any_label_scale(tmp_path, scale):
    """Shallow fine-tuning from scratch on tiny lists: the first training loss is below the labels' variance
    (a fitted head), the loss weight is 1/variance, and both are recorded."""
    import json

    import cv2

    from rankiqa import netconfig
    from tools import train

    rng = np.random.default_rng(0)
    lines = {"train": [], "test": []}
    for split, count in (("train", 12), ("test", 4)):
        for k in range(count):
            image = rng.integers(0, 256, (232, 232, 3), dtype=np.uint8)
            sigma = 0.5 + k % 4
            path = tmp_path / f"{split}{k}.png"
            cv2.imwrite(str(path), cv2.GaussianBlur(image, (0, 0), sigma))
            lines[split].append(f"{path} {scale * (1.0 + k % 4):g}")
    lists = tmp_path / "lists"
    lists.mkdir()
    for split, text in lines.items():
        (lists / f"{split}.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    assert train.main(["finetune", "--dataset", "synthetic", "--net", "shallow", "--lists", str(lists),
                       "--out", str(out), "--gpu", "-1", "--iters", "2", "--batch", "4", "--from-scratch",
                       "--test-interval", "0", "--display", "1", "--workers", "1",
                       "--head-init", "linear"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert (record["head_init"], record["loss_scale"]) == ("linear", "std")  # std: the Shallow default
    labels = scale * (1.0 + np.arange(12) % 4)
    net = netconfig.read_net_param(out / "train.prototxt")
    weight = [layer for layer in net.layer if layer.name == "loss"]
    assert weight[0].loss_weight[0] == pytest.approx(1.0 / labels.var(), rel=1e-6)
    log = (out / "log.txt").read_text()
    assert "linear probe on 32 features of conv4" in log
    first = float(log.split("train iter=1 loss=")[1].split()[0])
    # loss = weight * mean squared error / 2; the mean label alone would give 0.5
    assert 0.0 <= first < 0.5
    # the rate was bounded for a stable head, and the bound is what the solver file now says
    solver = netconfig.read_solver_param(out / "solver.prototxt")
    energy = float(log.split("E||f||^2 ")[1].split()[0])
    bound = head_init.HEAD_STEP / (10 * weight[0].loss_weight[0] * energy)  # fc8 lr_mult 10
    if bound < 3e-6:
        assert "base_lr lowered from 3e-06" in log
        assert solver.base_lr == pytest.approx(bound, rel=1e-2)
    else:
        assert "base_lr lowered" not in log and solver.base_lr == pytest.approx(3e-6)


@pytest.mark.caffe
def test_stable_lr_follows_lr_mult_loss_weight_and_feature_energy():
    from google.protobuf import text_format

    from rankiqa.caffe_io import caffe_pb2

    net = text_format.Parse("""
        layer { name: "fc8" type: "InnerProduct" bottom: "f" top: "fc8" param { lr_mult: 10 } }
        layer { name: "loss" type: "EuclideanLoss" bottom: "fc8" bottom: "s" top: "loss" loss_weight: 4 }
    """, caffe_pb2().NetParameter())
    head = head_init.Head("fc8", "f", "fc8", "loss")
    assert head_init.stable_lr(net, head, 100.0) == pytest.approx(head_init.HEAD_STEP / (10 * 4 * 100.0))


@needs_caffe
def test_calibrate_keeps_the_ranking_head_direction(tmp_path):
    """``calibrate`` copies fc8_m into the head and fits only scale and offset: the head's outputs are an
    affine map of the ranking head's, with the least-squares scale."""
    import caffe
    import cv2

    from tests.test_evaluate import make_tiny_model

    deploy, model = make_tiny_model(tmp_path, head="fc8_m")
    rng = np.random.default_rng(2)
    lines = []
    for k in range(6):
        path = tmp_path / f"i{k}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
        lines.append(f"{path} {float(k)}")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    train_net = tmp_path / "train.prototxt"
    extra = ('layer { name: "s" type: "Input" top: "s" input_param { shape { dim: 8 } } }\n'
             'layer { name: "loss" type: "EuclideanLoss" bottom: "fc8" bottom: "s" top: "loss" }\n')
    text = deploy.read_text().replace('"fc8_m"', '"fc8"').replace("dim: 1 dim: 3", "dim: 8 dim: 3")
    train_net.write_text(text + extra)
    net = caffe.Net(str(train_net), caffe.TRAIN)
    net.copy_from(str(model))  # the transferred layers (conv1); the ranking head is fc8_m, not fc8
    ranking = caffe.Net(str(deploy), str(model), caffe.TEST)
    head = head_init.find_head(train_net_param(train_net), train_net)
    note, energy = head_init.init_head(net, head, "calibrate", tmp_path / "train.txt", 32, 0, model)
    assert "the ranking head fc8_m" in note and energy > 0
    w_rank = ranking.params["fc8_m"][0].data.ravel()
    w_head = net.params["fc8"][0].data.ravel()
    scale = w_head[np.argmax(np.abs(w_rank))] / w_rank[np.argmax(np.abs(w_rank))]
    assert np.allclose(w_head, scale * w_rank, rtol=1e-4, atol=1e-9)
    # BOUNDED_STARTS (what the run preparation refuses under --gpus, and reads back on resume) names exactly
    # the starts that return a feature energy, on which the rate is bounded
    for mode in head_init.HEAD_INITS:
        _, energy = head_init.init_head(net, head, mode, tmp_path / "train.txt", 32, 0, model)
        assert (energy is not None) == (mode in head_init.BOUNDED_STARTS), mode


def train_net_param(path):
    from google.protobuf import text_format

    from rankiqa.caffe_io import caffe_pb2

    return text_format.Parse(path.read_text(), caffe_pb2().NetParameter())


def test_linear_probe_shrinks_towards_a_prior_head_instead_of_zero():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 4))
    y = x @ np.array([1.0, 0.0, -1.0, 0.5]) + 0.1 * rng.normal(size=60)
    prior = np.array([0.2, 0.3, 0.0, -0.4])
    free, _ = head_init.linear_probe(x, y, ridge=1e-9, prior=prior)
    plain, _ = head_init.linear_probe(x, y, ridge=1e-9)
    assert np.allclose(free, plain, atol=1e-6)  # a vanishing penalty: the least-squares fit either way
    held, _ = head_init.linear_probe(x, y, ridge=1e9, prior=prior)
    assert np.allclose(held, prior, atol=1e-6)
    middle, _ = head_init.linear_probe(x, y, ridge=1.0, prior=prior)
    assert np.linalg.norm(middle - prior) < np.linalg.norm(plain - prior)
    with pytest.raises(ValueError, match="3 weights for 4 features"):
        head_init.linear_probe(x, y, prior=prior[:3])
