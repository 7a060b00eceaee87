"""rankiqa.netcheck: what Caffe would abort on is an InputError naming the prototxt and the layer.

Shapes are compared with the nets Caffe builds from the same text; the nets that would abort are only ever
checked, never built (the test process would die with them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rankiqa import netcheck
from rankiqa.errors import InputError
from tests.caffe_marks import needs_caffe

REPO = Path(__file__).resolve().parents[1]
SHALLOW_DEPLOY = REPO / "prototxts" / "shallow" / "ft_deploy.prototxt"

pytestmark = needs_caffe


def _net(text: str):
    from google.protobuf import text_format

    from rankiqa.caffe_io import caffe_pb2

    return text_format.Parse(text, caffe_pb2().NetParameter())


def _input(side: int, channels: int = 3) -> str:
    return (f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: {channels} '
            f'dim: {side} dim: {side} }} }} }}\n')


def _caffe_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    import caffe

    caffe.set_mode_cpu()
    net = caffe.Net(str(path), caffe.TEST)
    return {name: tuple(blob.data.shape) for name, blob in net.blobs.items()}


def test_inferred_shapes_are_caffes_for_conv_and_pool_geometries(tmp_path: Path) -> None:
    # Rounding up in pooling, padding (and the window dropped when it would start in the padding), strides,
    # dilation, rectangular kernels, inner product, concat and eltwise.
    text = _input(23) + """
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "p1" type: "Pooling" bottom: "c1" top: "p1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "p2" type: "Pooling" bottom: "c1" top: "p2"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2"
        convolution_param { num_output: 2 kernel_h: 3 kernel_w: 5 dilation: 2 } }
layer { name: "r" type: "ReLU" bottom: "c2" top: "c2" }
layer { name: "cat" type: "Concat" bottom: "p1" bottom: "p1" top: "cat" }
layer { name: "sum" type: "Eltwise" bottom: "p1" bottom: "p1" top: "sum" }
layer { name: "p3" type: "Pooling" bottom: "data" top: "p3"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 pad: 1 } }
layer { name: "g" type: "Pooling" bottom: "c2" top: "g" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "cat" top: "fc" inner_product_param { num_output: 5 } }
"""
    path = tmp_path / "geometry.prototxt"
    path.write_text(text)
    inferred = netcheck.check_net(_net(text), path, "test")
    built = _caffe_shapes(path)
    assert inferred == {name: shape for name, shape in built.items() if "_split_" not in name}  # not Caffe's
    assert built["c1"] == (2, 4, 12, 12) and built["p2"] == (2, 4, 7, 7) and built["c2"] == (2, 2, 8, 4)
    assert built["p3"] == (2, 3, 12, 12)  # ceil((23 + 2 - 2) / 2) + 1 = 13, less the window in the padding


def test_the_project_deploy_net_matches_caffe_and_needs_at_least_217_pixels() -> None:
    net = _net(SHALLOW_DEPLOY.read_text())
    built = _caffe_shapes(SHALLOW_DEPLOY)  # the local normalisation's blobs feed several layers: splits
    assert netcheck.check_net(net, SHALLOW_DEPLOY, "test") == {
        name: shape for name, shape in built.items() if "_split_" not in name}
    # 217 -> conv1 (pad 1) 217 -> pool 55 -> conv2 53 -> pool 14 -> conv3 12 -> conv4 (12x12) 1
    assert netcheck.minimum_input_side(net, SHALLOW_DEPLOY, "test") == 217


def test_a_deploy_input_too_small_names_the_layer_and_the_smallest_input(tmp_path: Path) -> None:
    small = tmp_path / "deploy200.prototxt"
    small.write_text(SHALLOW_DEPLOY.read_text().replace("dim: 227", "dim: 200"))
    with pytest.raises(InputError) as caught:
        netcheck.check_net(_net(small.read_text()), small, "test")
    message = str(caught.value)
    assert message.startswith(f"{small}: layer 'conv4' (Convolution) gets 10x10 and would give -1x-1")
    assert "the input shape of layer 'data'" in message and "at least 217x217" in message


def test_python_layer_module_and_class_must_import(tmp_path: Path) -> None:
    base = ('layer { name: "in" type: "Input" top: "data" top: "score" '
            'input_param { shape { dim: 4 } shape { dim: 4 } } }\n')
    layer = ('layer {{ name: "corr" type: "Python" bottom: "data" bottom: "score" top: "s" top: "p" '
             'python_param {{ module: "{module}" layer: "{cls}" }} }}\n')
    source = tmp_path / "net.prototxt"
    cases = {
        ("pylayers.correlaton", "CorrelationLayer"):
            "python_param module 'pylayers.correlaton' cannot be imported: ModuleNotFoundError: No module "
            "named 'pylayers.correlaton' (did you mean pylayers.correlation?)",
        ("pylayers.correlation", "CorrelationLayr"):
            "module 'pylayers.correlation' has no class 'CorrelationLayr' (did you mean CorrelationLayer?)",
        ("pylayers.correlation", "correlations"):
            "pylayers.correlation.correlations is not a caffe.Layer class",
    }
    for (module, cls), expected in cases.items():
        with pytest.raises(InputError) as caught:
            netcheck.check_net(_net(base + layer.format(module=module, cls=cls)), source, "test")
        assert str(caught.value) == f"{source}: layer 'corr' (Python): {expected}"


def test_python_layers_check_their_blobs_before_the_net_is_built(tmp_path: Path) -> None:
    source = tmp_path / "net.prototxt"
    scores = ('layer { name: "in" type: "Input" top: "score" top: "label" '
              'input_param { shape { dim: 6 dim: 2 } shape { dim: 6 } } }\n')
    loss = ('layer {{ name: "loss" type: "Python" bottom: "score" bottom: "label" top: "loss" '
            'python_param {{ module: "pylayers.rank_loss" layer: "AllPairsHingeLossLayer" '
            'param_str: "{params}" }} loss_weight: 1 }}\n')
    with pytest.raises(InputError, match=r"layer 'loss' \(Python\): bottom 0 must hold one value per image, "
                                         r"got shape 6x2"):
        netcheck.check_net(_net(scores + loss.format(params="{group_size: 3}")), source, "train")
    with pytest.raises(InputError, match="param_str needs group_size"):
        netcheck.check_net(_net(scores + loss.format(params="{}")), source, "train")
    with pytest.raises(InputError, match=r"unknown key\(s\) \['margn'\]"):
        netcheck.check_net(_net(scores + loss.format(params="{margn: 1, group_size: 3}")), source, "train")
    one_top = ('layer { name: "corr" type: "Python" bottom: "score" bottom: "label" top: "s" '
               'python_param { module: "pylayers.correlation" layer: "CorrelationLayer" } }\n')
    with pytest.raises(InputError, match=r"needs 2 bottoms \(prediction, score\) and 2 tops.*got 2/1"):
        netcheck.check_net(_net(scores + one_top), source, "test")


def test_data_layer_crop_too_small_for_the_train_net(tmp_path: Path) -> None:
    train = REPO / "prototxts" / "shallow" / "ft_train.prototxt"
    net = _net(train.read_text().replace("crop: 227", "crop: 128"))
    with pytest.raises(InputError) as caught:
        netcheck.check_net(net, train, "train")
    message = str(caught.value)
    assert "layer 'conv4' (Convolution) gets 6x6" in message
    assert "the crop of layer 'data'" in message and "at least 217x217" in message
    assert netcheck.check_net(_net(train.read_text()), train, "train")["fc8"] == (None, 1)


def test_unknown_types_missing_bottoms_and_doubled_tops(tmp_path: Path) -> None:
    source = tmp_path / "net.prototxt"
    cases = {
        'layer { name: "r" type: "Relu" bottom: "data" top: "data" }':
            "layer 'r': unknown layer type 'Relu' (did you mean ReLU?)",
        'layer { name: "r" type: "ReLU" bottom: "dta" top: "r" }':
            "layer 'r' (ReLU): bottom 0 'dta' is not produced by an earlier layer of the test net",
        'layer { name: "p" type: "Power" bottom: "data" top: "x" }\n'
        'layer { name: "q" type: "Power" bottom: "data" top: "x" }':
            "layer 'q' (Power): top 'x' is already produced by an earlier layer",
        'layer { name: "e" type: "Eltwise" bottom: "data" bottom: "half" top: "e" }':
            "layer 'e' (Eltwise): bottom 1 is 2x3x4x4, bottom 0 is 2x3x8x8; they must have the same shape",
    }
    half = 'layer { name: "h" type: "Pooling" bottom: "data" top: "half" pooling_param { kernel_size: 2 ' \
           'stride: 2 } }\n'
    for text, expected in cases.items():
        with pytest.raises(InputError) as caught:
            netcheck.check_net(_net(_input(8) + half + text), source, "test")
        assert str(caught.value) == f"{source}: {expected}"


def test_layers_of_the_other_phase_are_left_out() -> None:
    text = _input(8) + ('layer { name: "x" type: "ReLU" bottom: "nothing" top: "x" '
                        'include { phase: TRAIN } }\n')
    assert "x" not in netcheck.check_net(_net(text), "n", "test")
    with pytest.raises(InputError, match="'nothing' is not produced"):
        netcheck.check_net(_net(text), "n", "train")


def test_solver_fields_caffe_aborts_on() -> None:
    from google.protobuf import text_format

    from rankiqa.caffe_io import caffe_pb2

    good = 'base_lr: 0.001 lr_policy: "step" gamma: 0.1 stepsize: 10 max_iter: 5 momentum: 0.9'
    netcheck.check_solver(text_format.Parse(good, caffe_pb2().SolverParameter()), "s")
    cases = {
        good.replace("stepsize: 10", "stepsize: 0"): "lr_policy 'step' needs stepsize >= 1",
        good.replace('"step"', '"steps"'): "lr_policy 'steps' is unknown",
        good + ' type: "Adagrad"': "solver type 'Adagrad' is unknown",
        good + ' type: "AdaGrad"': "momentum cannot be used with AdaGrad",
        good + " iter_size: 0": "iter_size must be >= 1",
        good + " average_loss: 0": "average_loss must be >= 1",
        good + ' regularization_type: "L3"': "regularization_type 'L3' must be L1 or L2",
        good.replace("base_lr: 0.001", "base_lr: 0"): "base_lr must be > 0, got 0.0",
    }
    for text, expected in cases.items():
        with pytest.raises(InputError) as caught:
            netcheck.check_solver(text_format.Parse(text, caffe_pb2().SolverParameter()), "solver.prototxt")
        assert str(caught.value).startswith(f"solver.prototxt: {expected}")
