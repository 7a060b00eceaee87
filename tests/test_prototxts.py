"""Nets and solvers in prototxts/: they parse, build and train in Caffe, and match the released models."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.test_ft_data import make_ft_list
from tests.test_rank_data import make_rank_set

caffe = pytest.importorskip("caffe")
pytestmark = pytest.mark.caffe
from caffe.proto import caffe_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROTOTXTS = ROOT / "prototxts"
NETS = sorted(p for p in PROTOTXTS.glob("*/*.prototxt") if p.parent.name != "solvers")
SOLVERS = sorted((PROTOTXTS / "solvers").glob("*.prototxt"))
VGG_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))


def load_net(path: Path) -> caffe_pb2.NetParameter:
    net = caffe_pb2.NetParameter()
    text_format.Merge(path.read_text(), net)
    return net


def layers_by_name(net: caffe_pb2.NetParameter) -> dict[str, caffe_pb2.LayerParameter]:
    return {layer.name: layer for layer in net.layer}


def test_expected_files_exist() -> None:
    names = {str(p.relative_to(PROTOTXTS)) for p in NETS + SOLVERS}
    for stem in ("rank_train", "rank_deploy", "ft_train", "ft_deploy", "pair_train"):
        assert f"vgg16/{stem}.prototxt" in names and f"shallow/{stem}.prototxt" in names
    assert {"vgg16/ft_tid2013_train.prototxt", "vgg16/ft_tid2013_deploy.prototxt"} <= names
    assert {f"solvers/{s}.prototxt" for s in ("rank_tid2013", "rank_live", "ft_tid2013", "ft_live")} <= names


def test_solvers_say_first_that_they_are_templates() -> None:
    for path in SOLVERS:
        assert path.read_text(encoding="utf-8").startswith("# TEMPLATE, not run as it is"), path


@pytest.mark.parametrize("path", NETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_net_parses_and_its_python_layers_exist(path: Path) -> None:
    net = load_net(path)
    assert len(net.layer) > 5
    for layer in net.layer:
        if layer.type != "Python":
            continue
        assert layer.python_param.module.startswith("pylayers.")  # every Caffe layer lives in pylayers/
        module = importlib.import_module(layer.python_param.module)
        layer_class = getattr(module, layer.python_param.layer)
        assert callable(layer_class.setup)
        if layer.python_param.param_str:
            assert isinstance(yaml.safe_load(layer.python_param.param_str), dict)
        if "Loss" in layer.python_param.layer:
            assert list(layer.loss_weight) == [1.0]  # a Python layer only counts as a loss with it


def _fc_names(path: Path) -> list[str]:
    return [layer.name for layer in load_net(path).layer if layer.type == "InnerProduct"]


@pytest.mark.parametrize("stem, fcs", [
    ("rank_train", ["fc6", "fc7", "fc8_m"]), ("rank_deploy", ["fc6", "fc7", "fc8_m"]),
    ("ft_train", ["fc6", "fc7", "fc8"]), ("ft_deploy", ["fc6", "fc7", "fc8"]),
    ("ft_tid2013_train", ["fc6_m", "fc7_m", "fc8"]), ("ft_tid2013_deploy", ["fc6_m", "fc7_m", "fc8"]),
])
def test_vgg16_layer_names_and_learning_rates(stem: str, fcs: list[str]) -> None:
    path = PROTOTXTS / "vgg16" / f"{stem}.prototxt"
    assert _fc_names(path) == fcs
    layers = layers_by_name(load_net(path))
    convs = [f"conv{b}_{i}" for b, n, _ in VGG_BLOCKS for i in range(1, n + 1)]
    assert [layer.name for layer in layers.values() if layer.type == "Convolution"] == convs
    head = layers[fcs[-1]]
    assert head.inner_product_param.num_output == 1
    if stem.endswith("train"):
        assert [(p.lr_mult, p.decay_mult) for p in head.param] == [(10, 1), (20, 0)]
        assert [p.lr_mult for p in layers["conv1_1"].param] == [1, 2]
        # the original fine-tuning nets train fc6/fc7 at 10/20 as well; the ranking net at 1/2
        expected_fc = [1, 2] if stem.startswith("rank") else [10, 20]
        assert [p.lr_mult for p in layers[fcs[0]].param] == expected_fc


def test_pair_net_shares_all_weights_between_branches() -> None:
    for net_name in ("vgg16", "shallow"):
        layers = layers_by_name(load_net(PROTOTXTS / net_name / "pair_train.prototxt"))
        learnable = [name for name, layer in layers.items()
                     if layer.type in ("Convolution", "InnerProduct") and not name.endswith("_p")]
        assert "fc8_m" in learnable
        for name in learnable:
            assert [p.name for p in layers[name].param] == [p.name for p in layers[name + "_p"].param]
            assert all(p.name for p in layers[name].param)


SOLVER_VALUES = {
    "rank_tid2013": dict(base_lr=1e-4, gamma=0.1, stepsize=10000, max_iter=50000),
    "rank_live": dict(base_lr=1e-5, gamma=0.1, stepsize=10000, max_iter=50000),
    "ft_tid2013": dict(base_lr=1e-5, gamma=0.5, stepsize=5000, max_iter=10000),
    "ft_live": dict(base_lr=1e-6, gamma=0.5, stepsize=5000, max_iter=20000),
}


@pytest.mark.parametrize("path", SOLVERS, ids=lambda p: p.stem)
def test_solver_values_are_the_original(path: Path) -> None:
    solver = caffe_pb2.SolverParameter()
    text_format.Merge(path.read_text(), solver)
    assert (ROOT / solver.net).is_file()
    assert solver.type == "SGD" and solver.lr_policy == "step"
    assert solver.momentum == pytest.approx(0.9) and solver.weight_decay == pytest.approx(5e-4)
    for key, value in SOLVER_VALUES[path.stem].items():
        assert getattr(solver, key) == pytest.approx(value), key
    if path.stem.startswith("ft_"):
        assert "ft" in Path(solver.net).stem
        assert ("tid2013" in solver.net) == (path.stem == "ft_tid2013")


# ----------------------------------------------------------------------------------------------------
# Building the nets in Caffe


def resolve(path: Path, out: Path, overrides: dict[str, dict]) -> Path:
    """Copy a net with param_str keys overridden per Python layer class (as the driver does)."""
    net = load_net(path)
    for layer in net.layer:
        if layer.type == "Python" and layer.python_param.layer in overrides:
            params = yaml.safe_load(layer.python_param.param_str) or {}
            params.update(overrides[layer.python_param.layer])
            layer.python_param.param_str = yaml.safe_dump(params, default_flow_style=True).strip()
    out.write_text(text_format.MessageToString(net))
    return out


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nets")
    (root / "ranks").mkdir()
    (root / "ft").mkdir()
    manifest = make_rank_set(root / "ranks", n_refs=2, types=("GB", "GN"), levels=3, size=(230, 232))
    ft_list = make_ft_list(root / "ft", count=4, size=(230, 232))
    return {"root": root, "manifest": manifest, "list": ft_list}


def overrides_for(fixtures: dict[str, Path]) -> dict[str, dict]:
    loader = {"workers": 0, "seed": 1}
    return {
        "RankDataLayer": {"manifest": str(fixtures["manifest"]), "types_per_batch": 2, **loader},
        "PairDataLayer": {"manifest": str(fixtures["manifest"]), "batch_size": 3, **loader},
        "FTDataLayer": {"list": str(fixtures["list"]), "batch_size": 4, **loader},
    }


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["rank_train", "pair_train", "ft_train"])
def test_shallow_train_nets_run_forward_and_backward(fixtures: dict[str, Path], stem: str) -> None:
    caffe.set_mode_cpu()
    path = resolve(PROTOTXTS / "shallow" / f"{stem}.prototxt", fixtures["root"] / f"shallow_{stem}.prototxt",
                   overrides_for(fixtures))
    net = caffe.Net(str(path), caffe.TRAIN)
    # supplementary Table 5 sizes
    assert net.blobs["pool1"].data.shape[1:] == (32, 57, 57)
    assert net.blobs["pool2"].data.shape[1:] == (32, 14, 14)
    assert net.blobs["conv3"].data.shape[1:] == (32, 12, 12)
    assert net.blobs["conv4"].data.shape[1:] == (32, 1, 1)
    loss = net.forward()["loss"].item()
    assert np.isfinite(loss) and loss > 0
    net.backward()
    assert np.abs(net.params["conv1"][0].diff).sum() > 0  # the gradient reaches the first layer
    if stem != "pair_train":
        test_net = caffe.Net(str(path), caffe.TEST)  # the TEST phase reads the test split / list
        outputs = test_net.forward()
        assert ("srocc" in outputs) == (stem == "ft_train")


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["rank_train", "pair_train", "ft_train", "ft_tid2013_train"])
def test_vgg16_train_nets_build(fixtures: dict[str, Path], stem: str) -> None:
    caffe.set_mode_cpu()
    small = overrides_for(fixtures)
    small["RankDataLayer"].update(types_per_batch=1)
    small["PairDataLayer"].update(batch_size=1)
    small["FTDataLayer"].update(batch_size=2)
    path = resolve(PROTOTXTS / "vgg16" / f"{stem}.prototxt", fixtures["root"] / f"vgg16_{stem}.prototxt",
                   small)
    net = caffe.Net(str(path), caffe.TRAIN)
    assert net.blobs["data"].data.shape[1:] == (3, 224, 224)
    assert net.blobs["pool5"].data.shape[1:] == (512, 7, 7)
    head = "fc8" if stem.startswith("ft") else "fc8_m"
    assert net.blobs[head].data.shape[1] == 1


@pytest.mark.parametrize("net_name, stem, crop, head", [
    ("shallow", "rank_deploy", 227, "fc8_m"), ("shallow", "ft_deploy", 227, "fc8"),
])
def test_shallow_deploy_nets(net_name: str, stem: str, crop: int, head: str) -> None:
    net = caffe.Net(str(PROTOTXTS / net_name / f"{stem}.prototxt"), caffe.TEST)
    assert net.blobs["data"].data.shape == (1, 3, crop, crop)
    assert net.outputs == [head] and net.blobs[head].data.shape == (1, 1)


# ----------------------------------------------------------------------------------------------------
# Released models: a caffemodel with the released layer names and shapes loads into our deploy nets.


def released_vgg16_spec(fcs: tuple[str, str, str]) -> str:
    """A deploy net written independently of prototxts/, from the released models' names and shapes."""
    lines = ["layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 1 dim: 3 dim: 224 "
             "dim: 224 } } }"]
    bottom = "data"
    filler = "weight_filler { type: 'gaussian' std: 0.01 } bias_filler { type: 'gaussian' std: 0.1 }"
    for block, n, width in VGG_BLOCKS:
        for i in range(1, n + 1):
            name = f"conv{block}_{i}"
            lines.append(f"layer {{ name: '{name}' type: 'Convolution' bottom: '{bottom}' top: '{name}' "
                         f"convolution_param {{ num_output: {width} pad: 1 kernel_size: 3 {filler} }} }}")
            lines.append(f"layer {{ name: 'r{name}' type: 'ReLU' bottom: '{name}' top: '{name}' }}")
            bottom = name
        lines.append(f"layer {{ name: 'pool{block}' type: 'Pooling' bottom: '{bottom}' top: 'pool{block}' "
                     "pooling_param { pool: MAX kernel_size: 2 stride: 2 } }")
        bottom = f"pool{block}"
    for name, width in zip(fcs, (4096, 4096, 1), strict=True):
        lines.append(f"layer {{ name: '{name}' type: 'InnerProduct' bottom: '{bottom}' top: '{name}' "
                     f"inner_product_param {{ num_output: {width} {filler} }} }}")
        if width > 1:
            lines.append(f"layer {{ name: 'r{name}' type: 'ReLU' bottom: '{name}' top: '{name}' }}")
        bottom = name
    return "\n".join(lines) + "\n"


RELEASED = {
    "Rank_tid2013/Rank_live": (("fc6", "fc7", "fc8_m"), "rank_deploy"),
    "FT_tid2013": (("fc6_m", "fc7_m", "fc8"), "ft_tid2013_deploy"),
    "FT_live": (("fc6", "fc7", "fc8"), "ft_deploy"),
}


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(RELEASED))
def test_released_vgg16_weights_load_unchanged(tmp_path: Path, model: str) -> None:
    caffe.set_mode_cpu()
    fcs, deploy = RELEASED[model]
    spec = tmp_path / "released.prototxt"
    spec.write_text(released_vgg16_spec(fcs))
    weights = tmp_path / "released.caffemodel"
    try:
        released = caffe.Net(str(spec), caffe.TEST)
        image = np.random.default_rng(0).uniform(0, 255, size=(1, 3, 224, 224)).astype(np.float32)
        released.blobs["data"].data[...] = image
        expected = released.forward()[fcs[-1]].copy()
        shapes = {name: [b.data.shape for b in blobs] for name, blobs in released.params.items()}
        probes = {name: blobs[0].data.reshape(-1)[:1000].copy() for name, blobs in released.params.items()}
        released.save(str(weights))
        del released
        ours = caffe.Net(str(PROTOTXTS / "vgg16" / f"{deploy}.prototxt"), str(weights), caffe.TEST)
        # every released layer found (Caffe silently skips unknown names) with the same shapes and values
        assert {name: [b.data.shape for b in blobs] for name, blobs in ours.params.items()} == shapes
        for name, probe in probes.items():
            np.testing.assert_array_equal(ours.params[name][0].data.reshape(-1)[:1000], probe)
        ours.blobs["data"].data[...] = image
        np.testing.assert_allclose(ours.forward()[fcs[-1]], expected, rtol=1e-4)
        assert ours.outputs == [fcs[-1]]
    finally:
        weights.unlink(missing_ok=True)  # 550 MB: do not leave it in pytest's kept temp folders
