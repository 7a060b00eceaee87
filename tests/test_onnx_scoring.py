"""rankiqa.onnx_scoring and ``tools.predict --backend onnx``: the Caffe scorer's crops and summaries with
onnxruntime doing the forward pass, the model's metadata in place of the deploy prototxt, no Caffe needed."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rankiqa import onnx_export, onnx_scoring
from rankiqa.errors import InputError
from tests.caffe_marks import needs_caffe
from tests.test_evaluate import make_images
from tests.test_onnx_export import REPO, no_caffe_env, random_model
from tools import predict

pytest.importorskip("onnxruntime")


def _scores(path: Path) -> dict[str, dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


@pytest.fixture()
def exported(tmp_path: Path) -> dict[str, Path]:
    """The Shallow net's fine-tuned deploy net with random weights, as caffemodel and as ONNX, and images."""
    pytest.importorskip("caffe")
    deploy = REPO / "prototxts" / "shallow" / "ft_deploy.prototxt"
    _, model = random_model(tmp_path, deploy.read_text(encoding="utf-8"), seed=5)
    onnx_path = tmp_path / "model.onnx"
    onnx_export.export(deploy, model, onnx_path, direction="lower_better")
    images = make_images(tmp_path / "imgs", 3, size=(240, 260))
    return {"deploy": deploy, "model": model, "onnx": onnx_path, "images": images[0].parent, "root": tmp_path}


@pytest.mark.caffe
def test_onnx_scores_are_the_caffe_scores_of_the_same_crops(exported: dict[str, Path]) -> None:
    root = exported["root"]
    common = ["--images", str(exported["images"]), "--crops", "5", "--batch", "4", "--seed", "3", "--quiet"]
    assert predict.main(["--deploy", str(exported["deploy"]), "--model", str(exported["model"]),
                         "--out", str(root / "caffe.csv"), *common]) == 0
    assert predict.main(["--backend", "onnx", "--model", str(exported["onnx"]),
                         "--out", str(root / "onnx.csv"), *common]) == 0
    by_caffe, by_onnx = _scores(root / "caffe.csv"), _scores(root / "onnx.csv")
    assert list(by_caffe) == list(by_onnx) and len(by_onnx) == 3
    caffe_scores = np.array([[float(r["score"]), float(r["median"])] for r in by_caffe.values()])
    onnx_scores = np.array([[float(r["score"]), float(r["median"])] for r in by_onnx.values()])
    assert np.ptp(caffe_scores[:, 0]) > 0  # the images score differently: a crop mix-up would show
    assert np.abs(caffe_scores - onnx_scores).max() < 1e-4 * np.abs(caffe_scores).max()
    # the direction recorded at export; the Caffe run has no record for this model
    assert {r["direction"] for r in by_onnx.values()} == {"lower_better"}
    assert {r["direction"] for r in by_caffe.values()} == {"unknown"}
    assert {r["scale"] for r in by_onnx.values()} == {"absolute"}


@pytest.mark.caffe
def test_predict_with_onnx_runs_where_caffe_does_not_import(exported: dict[str, Path]) -> None:
    root = exported["root"]
    out = root / "no caffe.csv"
    args = ["--images", str(exported["images"]), "--crops", "4", "--batch", "3", "--quiet"]
    result = subprocess.run([sys.executable, "-m", "tools.predict", "--backend", "onnx", "--model",
                             str(exported["onnx"]), "--out", str(out), "--direction", "higher_better", *args],
                            cwd=REPO, env=no_caffe_env(root), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "3 images scored" in result.stderr
    in_process = root / "in process.csv"
    assert predict.main(["--backend", "onnx", "--model", str(exported["onnx"]), "--out", str(in_process),
                         "--direction", "higher_better", *args]) == 0
    assert out.read_text(encoding="utf-8") == in_process.read_text(encoding="utf-8")
    assert {r["direction"] for r in _scores(out).values()} == {"higher_better"}


@pytest.mark.caffe
def test_a_model_without_the_exports_metadata_is_refused(exported: dict[str, Path], capsys) -> None:
    import onnx

    model = onnx.load(str(exported["onnx"]))
    del model.metadata_props[:]
    bare = exported["root"] / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(InputError, match="no input_blob, input_size, output_blob metadata") as err:
        onnx_scoring.open_session(bare)
    assert err.value.path == str(bare)
    not_onnx = exported["root"] / "x.onnx"
    not_onnx.write_bytes(b"not a model")
    code = predict.main(["--backend", "onnx", "--model", str(not_onnx), "--images", str(exported["images"]),
                         "--out", str(exported["root"] / "p.csv")])
    assert code == 2 and f"error: {not_onnx}: not a readable ONNX model:" in capsys.readouterr().err
    assert not (exported["root"] / "p.csv").exists()
    caffe_model = exported["root"] / "m.caffemodel"  # a Caffe model given to the ONNX backend
    caffe_model.write_bytes(b"not onnx")
    with pytest.raises(InputError, match="not a readable ONNX model \\(a Caffe model: .*make export\\)"):
        onnx_scoring.open_session(caffe_model)


@pytest.mark.caffe
def test_a_deploy_prototxt_with_the_onnx_backend_is_refused(exported: dict[str, Path], capsys) -> None:
    code = predict.main(["--backend", "onnx", "--deploy", str(exported["deploy"]), "--model",
                         str(exported["onnx"]), "--images", str(exported["images"]), "--out", "unused.csv"])
    assert code == 2 and "--deploy is for the caffe backend" in capsys.readouterr().err


def test_the_direction_flag_wins_over_the_recorded_one() -> None:
    meta = {onnx_export.META_DIRECTION: "lower_better", onnx_export.META_DIRECTION_SOURCE: "released model"}
    assert onnx_scoring.model_direction(meta, "m.onnx", None) == (
        "lower_better", "recorded in m.onnx at export: released model")
    assert onnx_scoring.model_direction(meta, "m.onnx", "higher_better")[0] == "higher_better"
    assert onnx_scoring.model_direction({}, "m.onnx", None)[0] == "unknown"


@needs_caffe
def test_the_caffe_backend_still_needs_its_deploy_prototxt(exported: dict[str, Path], capsys) -> None:
    code = predict.main(["--model", str(exported["model"]), "--images", str(exported["images"]),
                         "--out", "unused.csv"])
    assert code == 2 and "--deploy is required with the caffe backend" in capsys.readouterr().err
