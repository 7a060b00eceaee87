"""rankiqa.onnx_export: the ONNX graph computes what Caffe computes, layer for layer, with the metadata a
scorer needs; tools.export_onnx writes it without Caffe; nets it cannot export exactly are refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rankiqa import caffe_io, caffe_proto, netcheck, onnx_export
from rankiqa.errors import InputError
from tests.caffe_marks import needs_caffe
from tools import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
#: Agreement asked of the export: max |caffe - onnx| over max |caffe| (the output's scale).
RELATIVE_TOLERANCE = 1e-4


def random_model(folder: Path, deploy_text: str, seed: int = 0, name: str = "net") -> tuple[Path, Path]:
    """Write ``deploy_text`` and a caffemodel of seeded random weights (He-scaled, so that activations keep
    their size through deep nets; biases random too, so that a dropped bias shows)."""
    import caffe

    folder.mkdir(parents=True, exist_ok=True)
    deploy = folder / f"{name}_deploy.prototxt"
    deploy.write_text(deploy_text, encoding="utf-8")
    caffe.set_mode_cpu()
    net = caffe.Net(str(deploy), caffe.TEST)
    rng = np.random.default_rng(seed)
    for params in net.params.values():
        fan_in = max(1, int(np.prod(params[0].data.shape[1:])))
        for blob in params:
            blob.data[...] = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=blob.data.shape)
    model = folder / f"{name}.caffemodel"
    net.save(str(model))
    return deploy, model


def caffe_forward(deploy: Path, model: Path, images: np.ndarray, blob: str | None = None) -> np.ndarray:
    """Caffe's output (or ``blob``) for the (N, 3, H, W) float32 ``images``."""
    import caffe

    net = caffe.Net(str(deploy), str(model), caffe.TEST)
    net.blobs["data"].reshape(*images.shape)
    net.reshape()
    net.blobs["data"].data[...] = images
    outputs = net.forward()
    return (net.blobs[blob].data if blob else next(iter(outputs.values()))).copy()


def onnx_forward(path: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def relative_error(expected: np.ndarray, got: np.ndarray) -> float:
    assert expected.shape == got.shape
    return float(np.abs(expected - got).max() / np.abs(expected).max())


def images_for(deploy: Path, count: int = 3, seed: int = 1) -> np.ndarray:
    """``count`` random 0-255 BGR crops of the deploy net's input size."""
    from rankiqa import scoring

    info = scoring.read_deploy(deploy)
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(count, 3, info.crop_height, info.crop_width)).astype(np.float32)


def with_input_side(deploy_text: str, side: int) -> str:
    """The deploy net with a square input of ``side`` (VGG-16's layers are size-agnostic up to fc6)."""
    assert deploy_text.count("dim: 224") == 2
    return deploy_text.replace("dim: 224", f"dim: {side}")


def export_and_compare(tmp_path: Path, deploy: Path, model: Path) -> tuple[float, Path]:
    out = tmp_path / "model.onnx"
    onnx_export.export(deploy, model, out)
    images = images_for(deploy)
    return relative_error(caffe_forward(deploy, model, images), onnx_forward(out, images)), out


@needs_caffe
@pytest.mark.parametrize("deploy", ["rank_deploy", "ft_deploy"])
def test_the_shallow_net_gives_caffes_outputs(tmp_path: Path, deploy: str) -> None:
    text = (REPO / "prototxts" / "shallow" / f"{deploy}.prototxt").read_text(encoding="utf-8")
    error, _ = export_and_compare(tmp_path, *random_model(tmp_path, text))
    assert error < RELATIVE_TOLERANCE


#: The three naming variants of the VGG-16 deploy nets and the fc layers the released models use there.
VGG_VARIANTS = {
    "rank_deploy": ("fc6", "fc7", "fc8_m"),  # Rank_tid2013, Rank_live
    "ft_deploy": ("fc6", "fc7", "fc8"),  # FT_live
    "ft_tid2013_deploy": ("fc6_m", "fc7_m", "fc8"),  # FT_tid2013
}


@needs_caffe
@pytest.mark.parametrize("variant", sorted(VGG_VARIANTS))
def test_vgg16_in_the_released_layer_names_gives_caffes_outputs(tmp_path: Path, variant: str) -> None:
    # 48x48: pool5 gets 3x3 and Caffe's rounding up gives 2x2 (ONNX's rounding down would give 1x1)
    text = with_input_side((REPO / "prototxts" / "vgg16" / f"{variant}.prototxt").read_text(encoding="utf-8"),
                           48)
    deploy, model = random_model(tmp_path, text)
    shapes = netcheck.check_net(caffe_io.read_net_prototxt(deploy), str(deploy), "test")
    assert shapes["pool5"] == (1, 512, 2, 2)
    error, out = export_and_compare(tmp_path, deploy, model)
    assert error < RELATIVE_TOLERANCE
    names = {tensor.name for tensor in onnx.load(str(out)).graph.initializer}
    assert {f"{fc}.weight" for fc in VGG_VARIANTS[variant]} <= names
    assert {f"conv{i}_{j}.weight" for i, j in [(1, 1), (3, 3), (5, 3)]} <= names


POOL_NET = """
name: "pools"
layer {{ name: "data" type: "Input" top: "data"
        input_param {{ shape {{ dim: 1 dim: 3 dim: {side} dim: {side} }} }} }}
layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool"
        pooling_param {{ pool: {pool} kernel_size: {kernel} stride: {stride} pad: {pad} }} }}
"""


@needs_caffe
@pytest.mark.parametrize("side, kernel, stride, pad, pool, caffe_side, floor_side", [
    (6, 3, 2, 0, "MAX", 3, 2),  # rounded up: a last window over the last row only
    (7, 2, 2, 0, "AVE", 4, 3),  # the same for averages, divided by the window's part inside the image
    (5, 2, 2, 1, "MAX", 3, 3),  # padded: rounding up would start a window in the padding; Caffe drops it
    (8, 3, 3, 1, "MAX", 3, 3),
    (9, 7, 1, 3, "AVE", 9, 9),  # padded averages that never reach past the padding: padding counted
])
def test_pooling_keeps_caffes_ceil_mode_windows(tmp_path: Path, side: int, kernel: int, stride: int, pad: int,
                                                pool: str, caffe_side: int, floor_side: int) -> None:
    text = POOL_NET.format(side=side, kernel=kernel, stride=stride, pad=pad, pool=pool)
    deploy = tmp_path / "pool.prototxt"
    deploy.write_text(text, encoding="utf-8")
    model = tmp_path / "pool.caffemodel"
    import caffe

    caffe.Net(str(deploy), caffe.TEST).save(str(model))
    assert (side + 2 * pad - kernel) // stride + 1 == floor_side
    images = np.random.default_rng(0).normal(size=(2, 3, side, side)).astype(np.float32)
    expected = caffe_forward(deploy, model, images)
    assert expected.shape[2:] == (caffe_side, caffe_side)
    out = tmp_path / "pool.onnx"
    onnx_export.export(deploy, model, out)
    np.testing.assert_allclose(onnx_forward(out, images), expected, rtol=0, atol=1e-6)


ZOO_NET = """
name: "zoo"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 21 dim: 21 } } }
layer { name: "scale_in" type: "Power" bottom: "data" top: "scaled" power_param { scale: 0.004 shift: -0.5 } }
layer { name: "square" type: "Power" bottom: "scaled" top: "squared" power_param { power: 2 scale: 1.5 } }
layer { name: "conv1" type: "Convolution" bottom: "squared" top: "conv1"
        convolution_param { num_output: 8 kernel_h: 3 kernel_w: 5 pad_h: 1 pad_w: 2 stride: 2 } }
layer { name: "leaky" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "affine" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 3 group: 2 dilation: 2 bias_term: false } }
layer { name: "tanh" type: "TanH" bottom: "conv2" top: "conv2" }
layer { name: "conv3" type: "Convolution" bottom: "conv1" top: "conv3"
        convolution_param { num_output: 4 kernel_size: 5 } }
layer { name: "sig" type: "Sigmoid" bottom: "conv3" top: "conv3" }
layer { name: "cat" type: "Concat" bottom: "conv2" bottom: "conv3" top: "cat" }
layer { name: "esum" type: "Eltwise" bottom: "cat" bottom: "cat" top: "esum"
        eltwise_param { operation: SUM coeff: 3 coeff: -0.5 } }
layer { name: "eprod" type: "Eltwise" bottom: "esum" bottom: "cat" top: "eprod"
        eltwise_param { operation: PROD } }
layer { name: "emax" type: "Eltwise" bottom: "eprod" bottom: "cat" top: "emax"
        eltwise_param { operation: MAX } }
layer { name: "avg" type: "Pooling" bottom: "emax" top: "avg"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "gmax" type: "Pooling" bottom: "emax" top: "gmax"
        pooling_param { pool: MAX global_pooling: true } }
layer { name: "flat" type: "Flatten" bottom: "avg" top: "flat" }
layer { name: "fc_a" type: "InnerProduct" bottom: "flat" top: "fc_a" inner_product_param { num_output: 5 } }
layer { name: "fc_b" type: "InnerProduct" bottom: "gmax" top: "fc_b"
        inner_product_param { num_output: 5 bias_term: false transpose: true } }
layer { name: "both" type: "Concat" bottom: "fc_a" bottom: "fc_b" top: "both" }
layer { name: "drop" type: "Dropout" bottom: "both" top: "both" dropout_param { dropout_ratio: 0.5 } }
layer { name: "relu" type: "ReLU" bottom: "both" top: "both" }
layer { name: "score" type: "InnerProduct" bottom: "both" top: "score" inner_product_param { num_output: 1 } }
layer { name: "score_relu" type: "ReLU" bottom: "score" top: "score" relu_param { negative_slope: 0.5 } }
"""


@needs_caffe
def test_every_supported_layer_gives_caffes_outputs(tmp_path: Path) -> None:
    deploy, model = random_model(tmp_path, ZOO_NET, seed=3)
    types = {layer.type for layer in caffe_io.read_net_prototxt(deploy).layer}
    assert types == set(onnx_export.SUPPORTED_TYPES)
    out = tmp_path / "zoo.onnx"
    onnx_export.export(deploy, model, out)
    images = images_for(deploy, count=4)
    expected = caffe_forward(deploy, model, images)
    assert expected.shape == (4, 1) and np.abs(expected).max() > 0.1
    assert relative_error(expected, onnx_forward(out, images)) < RELATIVE_TOLERANCE
    # the in-place ReLU on the score blob: the graph's output is the last write, under the blob's name
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["score"]


@needs_caffe
def test_metadata_say_the_input_size_direction_and_scale(tmp_path: Path) -> None:
    deploy = REPO / "prototxts" / "shallow" / "rank_deploy.prototxt"
    _, model = random_model(tmp_path, deploy.read_text(encoding="utf-8"))
    out = tmp_path / "rank.onnx"
    result = onnx_export.export(deploy, model, out)
    loaded = onnx.load(str(out))
    meta = {prop.key: prop.value for prop in loaded.metadata_props}
    assert meta == result.metadata and set(meta) == set(onnx_export.METADATA_KEYS)
    assert meta[onnx_export.META_INPUT_SIZE] == "227x227" and meta[onnx_export.META_INPUT_BLOB] == "data"
    assert meta[onnx_export.META_OUTPUT_BLOB] == "fc8_m" and meta[onnx_export.META_SCALE] == "relative"
    assert meta[onnx_export.META_DIRECTION] == "higher_better"
    assert meta[onnx_export.META_INPUT_LAYOUT] == onnx_export.INPUT_LAYOUT
    dims = loaded.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == [onnx_export.BATCH_DIM, 3, 227, 227]
    assert loaded.opset_import[0].version == onnx_export.OPSET and loaded.ir_version == onnx_export.IR_VERSION

    # a released fine-tuned model by its name (FT_live: DMOS-like), and the flag over everything
    ft_deploy = REPO / "prototxts" / "shallow" / "ft_deploy.prototxt"
    _, ft_model = random_model(tmp_path / "ft", ft_deploy.read_text(encoding="utf-8"), name="FT_live")
    meta = onnx_export.export(ft_deploy, ft_model, tmp_path / "ft.onnx").metadata
    assert meta[onnx_export.META_DIRECTION] == "lower_better" and meta[onnx_export.META_SCALE] == "absolute"
    assert "FT_live" in meta[onnx_export.META_DIRECTION_SOURCE]
    meta = onnx_export.export(ft_deploy, ft_model, tmp_path / "ft.onnx", direction="higher_better").metadata
    assert meta[onnx_export.META_DIRECTION] == "higher_better"


@needs_caffe
def test_a_layer_without_an_exact_onnx_form_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    lrn = ZOO_NET.replace('layer { name: "tanh" type: "TanH"', 'layer { name: "norm" type: "LRN"')
    deploy, model = random_model(tmp_path, lrn)
    out = tmp_path / "out.onnx"
    with pytest.raises(InputError, match=r"layer 'norm' \(LRN\): layer type 'LRN' cannot be exported") as err:
        onnx_export.export(deploy, model, out)
    assert err.value.path == str(deploy)
    padded_average = POOL_NET.format(side=6, kernel=3, stride=2, pad=1, pool="AVE")
    deploy, model = random_model(tmp_path / "ave", padded_average)
    with pytest.raises(InputError, match="layer 'pool' .*last window reaches past the padding"):
        onnx_export.export(deploy, model, out)
    assert list(tmp_path.glob("*.onnx*")) == []


@needs_caffe
def test_weights_of_another_net_are_refused_naming_the_model_and_layer(tmp_path: Path) -> None:
    vgg = (REPO / "prototxts" / "vgg16" / "ft_deploy.prototxt").read_text(encoding="utf-8")
    _, model = random_model(tmp_path, with_input_side(vgg, 32))  # fc6 / fc7 names, FT_tid2013 wants fc6_m
    out = tmp_path / "out.onnx"
    with pytest.raises(InputError, match=r"no weights for layer\(s\) \['fc6_m', 'fc7_m'\]") as err:
        onnx_export.export(REPO / "prototxts" / "vgg16" / "ft_tid2013_deploy.prototxt", model, out)
    assert err.value.path == str(model) and not out.exists()


def test_the_embedded_caffe_proto_reads_the_projects_nets() -> None:
    net = caffe_proto.caffe_pb2().NetParameter()
    from google.protobuf import text_format

    text_format.Parse((REPO / "prototxts" / "vgg16" / "rank_deploy.prototxt").read_text(encoding="utf-8"),
                      net)
    assert [layer.name for layer in net.layer if layer.type == "InnerProduct"] == ["fc6", "fc7", "fc8_m"]
    assert net.layer[-1].inner_product_param.num_output == 1


@needs_caffe
def test_the_embedded_caffe_proto_is_the_built_caffes() -> None:
    from caffe.proto import caffe_pb2

    assert caffe_proto.descriptor_bytes() == caffe_pb2.DESCRIPTOR.serialized_pb


def no_caffe_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import caffe`` fails (a ``sitecustomize`` blocks the module)."""
    shim = tmp_path / "no_caffe"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['caffe'] = None\n", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(shim))
    probe = subprocess.run([sys.executable, "-c", "import caffe"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "caffe" in probe.stderr
    return env


@needs_caffe
def test_export_needs_no_caffe_and_writes_the_same_file(tmp_path: Path) -> None:
    deploy = REPO / "prototxts" / "shallow" / "ft_deploy.prototxt"
    _, model = random_model(tmp_path, deploy.read_text(encoding="utf-8"))
    with_caffe = tmp_path / "with.onnx"
    assert export_onnx.main(["--deploy", str(deploy), "--model", str(model), "--out", str(with_caffe)]) == 0
    without = tmp_path / "without.onnx"
    result = subprocess.run([sys.executable, "-m", "tools.export_onnx", "--deploy", str(deploy), "--model",
                             str(model), "--out", str(without)], cwd=REPO, env=no_caffe_env(tmp_path),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert without.read_bytes() == with_caffe.read_bytes()


def test_export_of_a_missing_model_exits_2_naming_it(tmp_path: Path, capsys) -> None:
    deploy = REPO / "prototxts" / "shallow" / "ft_deploy.prototxt"
    missing = tmp_path / "none.caffemodel"
    assert export_onnx.main(["--deploy", str(deploy), "--model", str(missing)]) == 2
    assert f"error: {missing}: weights file not found" in capsys.readouterr().err
    assert export_onnx.default_out(str(missing)) == tmp_path / "none.onnx"
    assert not (tmp_path / "none.onnx").exists()
