"""pycaffe and Caffe's files (``rankiqa.caffe_io``): the import, the build's prefix and mode, reading a net
prototxt and a ``.caffemodel`` (with or without pycaffe: ``caffe_pb2`` falls back on ``rankiqa.caffe_proto``),
and the weight checks that stand in for Caffe's fatal abort and its silent random start."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from rankiqa import caffe_io
from rankiqa.errors import InputError


def test_without_pycaffe_the_import_says_how_to_build_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "caffe", None)  # an import of it raises ImportError
    with pytest.raises(InputError, match=r"cannot import pycaffe .*; build it with `make caffe`"):
        caffe_io.import_caffe()


@pytest.mark.parametrize(("build_info", "mode"), [
    ("caffe 1.0.0\nmode cpu\n", "cpu"),
    ("key=abc\nmode=cuda-lean\n", "cuda"),
    ("a build without a mode line\n", "unknown"),
    (None, "unknown"),
])
def test_the_build_mode_is_read_from_the_prefix_build_info(tmp_path: Path, build_info: str | None,
                                                          mode: str) -> None:
    package = tmp_path / "prefix" / "python" / "caffe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    if build_info is not None:
        (tmp_path / "prefix" / "BUILD_INFO").write_text(build_info)
    fake = SimpleNamespace(__file__=str(package / "__init__.py"))
    assert caffe_io.caffe_prefix(fake) == (tmp_path / "prefix").resolve()
    assert caffe_io.build_mode(fake) == mode


def test_the_installed_pycaffe_sits_in_a_prefix_with_its_binary(pycaffe) -> None:
    prefix = caffe_io.caffe_prefix(pycaffe)
    assert (prefix / "python" / "caffe" / "__init__.py").is_file()
    assert caffe_io.build_mode(pycaffe) in ("cpu", "cuda")


# ----------------------------------------------------------------------------------------------------
# .caffemodel files


def _model(pb2, layers: dict[str, list[tuple[int, ...]]], legacy: bool = False):
    """A NetParameter with one blob per shape (values left empty), in the V1 ``layers`` field with
    ``legacy``."""
    net = pb2.NetParameter()
    for name, shapes in layers.items():
        layer = net.layers.add() if legacy else net.layer.add()
        layer.name = name
        for shape in shapes:
            blob = layer.blobs.add()
            if legacy:
                blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - len(shape)) + tuple(shape)
            else:
                blob.shape.dim.extend(shape)
    return net


def test_a_caffemodel_is_read_back_and_bad_files_are_named(tmp_path: Path) -> None:
    pb2 = caffe_io.caffe_pb2()
    path = tmp_path / "m.caffemodel"
    path.write_bytes(_model(pb2, {"conv1": [(4, 3, 3, 3), (4,)]}).SerializeToString())
    read = caffe_io.read_caffemodel(path)
    assert [layer.name for layer in read.layer] == ["conv1"]
    assert [caffe_io.blob_proto_shape(b) for b in read.layer[0].blobs] == [(4, 3, 3, 3), (4,)]
    cases = {"gone.caffemodel": (None, "weights file not found"),
             "w.h5": (b"\x89HDF\r\n\x1a\n....", "HDF5 weights are not supported"),
             "junk.caffemodel": (b"\xff\xff\xff\xff not a protobuf", "not a Caffe model")}
    for name, (data, fragment) in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError) as err:
            caffe_io.read_caffemodel(tmp_path / name)
        assert fragment in err.value.message and err.value.path == str(tmp_path / name)


def test_the_shape_check_lists_the_layers_caffe_would_copy() -> None:
    pb2 = caffe_io.caffe_pb2()
    source = _model(pb2, {"conv1": [(4, 3, 3, 3), (4,)], "relu1": [], "fc8": [(1000, 16), (1000,)]})
    target = {"conv1": [(4, 3, 3, 3), (4,)], "relu1": [], "fc8_m": [(1, 16), (1,)]}
    assert caffe_io.check_weight_shapes(source, target, Path("w.caffemodel")) == ["conv1"]
    # V1 files (e.g. VGG_ILSVRC_16_layers) keep 4-D legacy blobs: padded on the left with ones, as Caffe does
    legacy = _model(pb2, {"fc6": [(8, 16), (8,)]}, legacy=True)
    assert caffe_io.blob_proto_shape(legacy.layers[0].blobs[0]) is None
    assert caffe_io.check_weight_shapes(legacy, {"fc6": [(8, 16), (8,)]}, Path("v1.caffemodel")) == ["fc6"]


@pytest.mark.parametrize(("target", "legacy", "fragment"), [
    ({"fc8": [(1, 16), (1,)]}, False,
     "layer 'fc8' param 0: shape mismatch, the weights have 1000x16, the net needs 1x16; use SKIP_LAYERS"),
    ({"fc8": [(1000, 16)]}, False, "layer 'fc8': the weights have 2 blob(s), the net's layer has 1; use"),
    ({"fc8": [(1000, 8), (1000,)]}, True,
     "layer 'fc8' param 0: shape mismatch, the weights have 1x1x1000x16, the net needs 1000x8; use"),
])
def test_a_mismatch_names_the_weights_file_and_the_layer(target: dict, legacy: bool, fragment: str) -> None:
    source = _model(caffe_io.caffe_pb2(), {"fc8": [(1000, 16), (1000,)]}, legacy=legacy)
    with pytest.raises(InputError) as err:
        caffe_io.check_weight_shapes(source, target, Path("/m/vgg.caffemodel"), hint="use SKIP_LAYERS")
    assert fragment in err.value.message and err.value.path == "/m/vgg.caffemodel"
    with pytest.raises(InputError, match=caffe_io.RENAME_HINT):  # the default advice
        caffe_io.check_weight_shapes(source, target, Path("/m/vgg.caffemodel"))


def test_layer_types_are_pycaffes_registry_or_none_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "caffe", None)
    assert caffe_io.layer_types() is None


def test_the_registry_of_the_built_caffe_has_the_python_layer(pycaffe) -> None:
    assert {"Python", "Convolution", "InnerProduct"} <= caffe_io.layer_types()


def test_a_net_prototxt_is_read_and_bad_ones_are_named(tmp_path: Path) -> None:
    good = tmp_path / "deploy.prototxt"
    good.write_bytes("\ufeffname: 'tiny' layer { name: 'data' type: 'Input' top: 'data' }\n".encode())
    net = caffe_io.read_net_prototxt(good)
    assert net.name == "tiny" and [layer.type for layer in net.layer] == ["Input"]
    (tmp_path / "bad.prototxt").write_text("layer { name: 'x' typo: 1 }")
    for name, fragment in (("gone.prototxt", "deploy net not found"),
                           ("bad.prototxt", "not a valid deploy net")):
        with pytest.raises(InputError) as err:
            caffe_io.read_net_prototxt(tmp_path / name, "deploy net")
        assert err.value.message.startswith(fragment) and err.value.path == str(tmp_path / name)


def test_a_deploy_layer_the_model_holds_no_weights_for_is_refused() -> None:
    source = _model(caffe_io.caffe_pb2(), {"conv1": [(4, 3, 3, 3), (4,)], "fc6": [(8, 16), (8,)]})
    fits = {"conv1": [(4, 3, 3, 3), (4,)], "relu1": [], "fc6": [(8, 16), (8,)]}
    caffe_io.check_deploy_weights(source, fits, Path("m.caffemodel"))  # no error
    with pytest.raises(InputError) as err:
        caffe_io.check_deploy_weights(source, {"conv1": [(4, 3, 3, 3), (4,)], "fc6_m": [(8, 16), (8,)]},
                                      Path("/m/FT_tid2013.caffemodel"))
    assert err.value.path == "/m/FT_tid2013.caffemodel"
    assert err.value.message == ("no weights for layer(s) ['fc6_m'] of the deploy net (the model holds "
                                 f"['conv1', 'fc6']): {caffe_io.DEPLOY_HINT}")
