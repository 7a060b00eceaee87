"""rankiqa.scoring, rankiqa.evaluation and tools.evaluate: crop protocol, batching, weight checks, the
result files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import stats

from data_prep.datasets import TABLE_COLUMNS
from rankiqa import evaluation, scoring
from rankiqa.errors import InputError
from rankiqa.fsutil import StorageError
from tests.small_fs import remount, small_fs
from tools import evaluate

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RESULT_FILES = ("metrics.json", "per_image.csv", "metrics.md", "scatter.png", "srocc_per_type.png")

# A deploy net small enough for tests: 32x32 input, one convolution, a one-output head.
TINY_DEPLOY = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "HEAD" type: "InnerProduct" bottom: "conv1" top: "HEAD" inner_product_param { num_output: 1 } }
"""


# ------------------------------------------------------------------------------------------------
# helpers (also used by tests/test_predict.py)


def make_tiny_model(folder: Path, head: str = "fc8", seed: int = 0, name: str = "tiny") -> tuple[Path, Path]:
    """Write a tiny deploy prototxt with output blob ``head`` and a caffemodel of seeded weights."""
    import caffe

    deploy = folder / f"{name}_deploy.prototxt"
    deploy.write_text(TINY_DEPLOY.replace("HEAD", head), encoding="utf-8")
    net = caffe.Net(str(deploy), caffe.TEST)
    rng = np.random.default_rng(seed)
    for params in net.params.values():
        for blob in params:
            blob.data[...] = rng.normal(0.0, 0.01, size=blob.data.shape)
    model = folder / f"{name}.caffemodel"
    net.save(str(model))
    return deploy, model


def write_table(path: Path, rows: list[tuple[str, str, str, Path, float]], direction: str) -> Path:
    """A test table CSV in the DESIGN.md format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TABLE_COLUMNS)
        for reference, type_code, level, image, score in rows:
            writer.writerow([reference, type_code, level, str(image), score, direction])
    return path


def make_images(folder: Path, count: int, size: tuple[int, int] = (40, 52), seed: int = 0) -> list[Path]:
    """``count`` distinct random PNG images of ``size`` (H, W)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        path = folder / f"img{i:02d}.png"
        cv2.imwrite(str(path), cv2.GaussianBlur(image, (0, 0), 1 + i % 3))
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------------
# crop positions and the batching logic (no Caffe needed)


def test_crop_positions_are_seeded_in_range_and_cover_both_ends() -> None:
    a = scoring.crop_positions(40, 50, 32, 32, 2000, seed=3, index=7)
    assert a.shape == (2000, 2)
    assert a[:, 0].min() == 0 and a[:, 0].max() == 8   # 40 - 32, inclusive
    assert a[:, 1].min() == 0 and a[:, 1].max() == 18
    np.testing.assert_array_equal(a, scoring.crop_positions(40, 50, 32, 32, 2000, seed=3, index=7))
    assert not np.array_equal(a, scoring.crop_positions(40, 50, 32, 32, 2000, seed=3, index=8))
    assert not np.array_equal(a, scoring.crop_positions(40, 50, 32, 32, 2000, seed=4, index=7))
    exact = scoring.crop_positions(32, 32, 32, 32, 5, seed=0, index=0)
    assert not exact.any()  # an image the size of the crop has one position
    with pytest.raises(ValueError, match="smaller"):
        scoring.crop_positions(31, 40, 32, 32, 1, 0, 0)


class _FakeBlob:
    def __init__(self, *shape: int):
        self.data = np.zeros(shape, dtype=np.float32)

    def reshape(self, *shape: int) -> None:
        self.data = np.zeros(shape, dtype=np.float32)


class _FakeNet:
    """pycaffe's interface; the output is a fixed random linear function of the crop (C, H, W)."""

    def __init__(self, crop: int):
        self.weights = np.random.default_rng(5).normal(size=(3, crop, crop))
        self.blobs = {"data": _FakeBlob(1, 3, crop, crop), "fc8": _FakeBlob(1, 1)}
        self.batch_sizes: list[int] = []

    def reshape(self) -> None:
        self.blobs["fc8"].reshape(self.blobs["data"].data.shape[0], 1)

    def forward(self) -> None:
        data = self.blobs["data"].data
        self.batch_sizes.append(data.shape[0])
        self.blobs["fc8"].data[:, 0] = np.einsum("nchw,chw->n", data.astype(np.float64), self.weights)


@pytest.mark.parametrize("batch", [1, 7, 10, 64])
def test_scorer_batches_crops_across_images_and_keeps_their_order(batch: int) -> None:
    crop, crops = 16, 10
    info = scoring.DeployInfo("fake.prototxt", "data", 3, crop, crop, "fc8")
    net = _FakeNet(crop)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(20 + i, 30 - i, 3), dtype=np.uint8) for i in range(5)]
    scorer = scoring.CropScorer(net, info, crops=crops, batch=batch, seed=11)
    keys = ["a", "b", "c", "d", "e"]
    results = list(scorer.score((keys[i], 100 + i, image) for i, image in enumerate(images)))
    assert [key for key, _ in results] == keys
    for i, (_, values) in enumerate(results):
        # recompute each crop's output by hand: the BGR HxWxC image cut at the seeded corners
        corners = scoring.crop_positions(*images[i].shape[:2], crop, crop, crops, 11, 100 + i)
        expected = [np.einsum("hwc,chw->", images[i][y:y + crop, x:x + crop].astype(np.float64), net.weights)
                    for y, x in corners]
        np.testing.assert_allclose(values, expected, rtol=1e-6)
    assert max(net.batch_sizes) == min(batch, 5 * crops)
    assert sum(net.batch_sizes) == 5 * crops


# ------------------------------------------------------------------------------------------------
# tables and reports (no Caffe needed)


def test_read_table_and_its_errors(tmp_path: Path) -> None:
    images = make_images(tmp_path / "img", 2)
    table = write_table(tmp_path / "t.csv", [("r1", "01", "1", images[0], 5.5),
                                             ("r1", "02", "2", Path("img") / images[1].name, 3.0)],
                        "higher_better")
    samples, direction = evaluation.read_samples(table)
    assert direction == "higher_better"
    assert [s.type for s in samples] == ["01", "02"]
    assert samples[1].path == str(images[1])  # relative paths resolve against the table's folder
    assert samples[1].line == 3

    bad = tmp_path / "bad.csv"
    bad.write_text(table.read_text().replace("3.0", "three"), encoding="utf-8")
    with pytest.raises(InputError, match="not a number") as err:
        evaluation.read_samples(bad)
    assert err.value.path == str(bad) and err.value.line == 3
    mixed = write_table(tmp_path / "mixed.csv", [("r", "01", "1", images[0], 1.0)], "higher_better")
    with open(mixed, "a", encoding="utf-8") as handle:
        handle.write(f"r,01,2,{images[1]},2.0,lower_better\n")
    with pytest.raises(InputError, match="score direction lower_better, but line 2 has higher_better") as err:
        evaluation.read_samples(mixed)
    assert err.value.line == 3  # the first row that disagrees
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("reference,path,score\nr,x.png,1\n", encoding="utf-8")
    with pytest.raises(InputError, match="missing column"):
        evaluation.read_samples(nocol)


EXPECTED_FIELDS = "expected 6 (reference,type,level,path,score,direction)"


@pytest.mark.parametrize("row, message", [
    ("r,01,1\n", f"3 fields, {EXPECTED_FIELDS}"),
    ("r,01,1,b.png,2.0,higher_better,x\n", f"7 fields, {EXPECTED_FIELDS}"),
    ("r,01,x,b.png,2.0,higher_better\n", "level 'x' is not a number"),
    ("r,01,1.5,b.png,2.0,higher_better\n", "level '1.5' is not a whole number"),
    ("r,01,-1,b.png,2.0,higher_better\n", "level -1 is negative"),
    ("r,01,,b.png,2.0,higher_better\n", "level '' is not a number"),
    # a quoted field over two lines: the bad row ends on line 4
    ('"r\nx",01,1\n', f"3 fields, {EXPECTED_FIELDS}"),
])
def test_a_bad_row_of_a_table_names_the_table_and_line(tmp_path: Path, row: str, message: str) -> None:
    table = tmp_path / "test.csv"
    table.write_text(",".join(TABLE_COLUMNS) + "\nr,01,1,a.png,1.0,higher_better\n" + row,
                     encoding="utf-8")
    with pytest.raises(InputError) as err:
        evaluation.read_samples(table)
    line = 2 + row.count("\n")  # the line the row ends on
    assert str(err.value) == f"{table}:{line}: {message}"


def test_a_whole_level_is_written_as_one(tmp_path: Path) -> None:
    table = write_table(tmp_path / "t.csv", [("r", "01", "2.0", tmp_path / "a.png", 1.0),
                                             ("r", "01", "0", tmp_path / "b.png", 2.0)], "higher_better")
    samples, _ = evaluation.read_samples(table)
    assert [s.level for s in samples] == ["2", "0"]
    per_image = evaluation.per_image_csv(samples, {"mean": np.zeros(2), "median": np.zeros(2)})
    assert next(csv.DictReader(io.StringIO(per_image)))["level"] == "2"


def test_read_plain_list(tmp_path: Path) -> None:
    images = make_images(tmp_path, 2)
    listing = tmp_path / "test.txt"
    listing.write_text(f"{images[0]} 4.5\n{images[1].name} 2\n", encoding="utf-8")
    samples, direction = evaluation.read_samples(listing)
    assert direction is None
    assert [(s.path, s.score, s.type) for s in samples] == [(str(images[0]), 4.5, ""),
                                                            (str(images[1]), 2.0, "")]


def test_direction_report_states_the_expected_sign() -> None:
    assert evaluation.direction_report("lower_better", "higher_better", "x", False)["expected_sign"] == -1
    assert evaluation.direction_report("lower_better", "higher_better", "x", True)["expected_sign"] == 1
    assert evaluation.direction_report("higher_better", "higher_better", "x", False)["expected_sign"] == 1
    assert evaluation.direction_report("higher_better", "unknown", "x", False)["expected_sign"] is None


def test_model_direction_inference() -> None:
    rank = scoring.DeployInfo("d", "data", 3, 224, 224, "fc8_m")
    ft = scoring.DeployInfo("d", "data", 3, 224, 224, "fc8")
    assert scoring.model_direction(rank, "runs/x/snap.caffemodel", None)[0] == "higher_better"
    assert scoring.model_direction(rank, "models/Rank_live.caffemodel", None)[0] == "lower_better"
    assert scoring.model_direction(ft, "models/FT_tid2013.caffemodel", None)[0] == "higher_better"
    assert scoring.model_direction(ft, "runs/x/snap.caffemodel", None)[0] == "unknown"
    assert scoring.model_direction(rank, "models/Rank_live.caffemodel", "higher_better")[0] == "higher_better"


#: What each kind of training run records in run.json, and the direction of the model it writes.
TRAINED = {
    "rank quality": ({"kind": "rank", "direction": "quality"}, "higher_better"),
    "rank dmos": ({"kind": "rank", "direction": "dmos"}, "lower_better"),
    **{f"finetune {ds}": ({"kind": "finetune", "dataset": ds}, direction)
       for ds, direction in (("tid2013", "higher_better"), ("live", "lower_better"), ("csiq", "lower_better"),
                             ("kadid", "higher_better"), ("synthetic", "higher_better"))},
}
#: The direction of the ground truth of each evaluation dataset (MOS, DMOS, DMOS, KADID's 1-5 "DMOS").
EVALUATED = {"tid2013": "higher_better", "live": "lower_better", "csiq": "lower_better",
             "kadid": "higher_better"}


@pytest.mark.parametrize("evaluated", sorted(EVALUATED))
@pytest.mark.parametrize("trained", sorted(TRAINED))
def test_every_training_run_against_every_evaluation_dataset(tmp_path: Path, trained: str,
                                                             evaluated: str) -> None:
    record, model_dir = TRAINED[trained]
    head = "fc8_m" if record["kind"] == "rank" else "fc8"
    info = scoring.DeployInfo("d", "data", 3, 224, 224, head)
    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({**record, "net": "vgg16"}))
    gt_dir = evaluation.dataset_info(evaluated).direction
    assert gt_dir == EVALUATED[evaluated]
    expected_sign = 1 if model_dir == gt_dir else -1
    # The run's record decides, whatever the file is called (a released model's name included).
    for name in ("run_iter_10", "FT_live", "FT_tid2013", "Rank_live", "Rank_tid2013"):
        direction, source = scoring.model_direction(info, run / "snapshots" / f"{name}.caffemodel", None)
        assert direction == model_dir and "run.json" in source, name
        for negate, sign in ((False, expected_sign), (True, -expected_sign)):
            assert evaluation.direction_report(gt_dir, direction, source, negate)["expected_sign"] == sign


def _synthetic_report(tmp_path: Path, shift: float = 0.0,
                      model: str = "m.caffemodel") -> tuple[dict, list, dict]:
    types = ["01", "08", "10"]
    samples = [evaluation.Sample(str(tmp_path / f"i{k}.png"), 9.0 - k % 5, f"r{k // 15}", types[k % 3],
                               str(k % 5), k + 2) for k in range(30)]
    truth = np.array([s.score for s in samples])
    rng = np.random.default_rng(int(shift * 10))
    preds = {"mean": truth + rng.normal(scale=1.0, size=30) + shift, "median": truth + shift}
    info = scoring.DeployInfo("d.prototxt", "data", 3, 224, 224, "fc8")
    direction = evaluation.direction_report("higher_better", "higher_better", "test", False)
    report = evaluation.build_report(info, model, "t.csv", "tid2013", samples, preds, 30, 0, direction,
                                   ("01", "08", "10"))
    return report, samples, preds


def test_writers_produce_every_file_without_caffe(tmp_path: Path) -> None:
    report, samples, preds = _synthetic_report(tmp_path)
    out = tmp_path / "res"
    evaluation.write_outputs(out, report, samples, preds, {"08": "Gaussian blur"})
    for name in RESULT_FILES:
        assert (out / name).is_file(), name
    loaded = json.loads((out / "metrics.json").read_text())
    assert loaded["overall"]["median"]["srocc"] == pytest.approx(1.0)  # median == truth + shift
    assert list(loaded["per_type"]["mean"]) == ["01", "08", "10"]
    assert loaded["per_type"]["mean"]["08"]["n"] == 10
    assert "| 08 | Gaussian blur | 10 |" in (out / "metrics.md").read_text()
    assert (out / "scatter.png").read_bytes()[:8] == PNG_MAGIC
    # two references of 15 images; the median scoring is the truth itself: 1.0 inside each
    within = loaded["within_reference"]
    assert set(within["mean"]["per_reference"]) == {"r0", "r1"}
    assert within["median"]["mean"] == {"srocc": pytest.approx(1.0), "krocc": pytest.approx(1.0),
                                        "plcc": pytest.approx(1.0), "n_references": 2}
    r0 = [k for k, s in enumerate(samples) if s.reference == "r0"]
    assert within["mean"]["per_reference"]["r0"]["srocc"] == pytest.approx(
        stats.spearmanr(preds["mean"][r0], [samples[k].score for k in r0])[0])
    assert "| mean over 2 references |" in (out / "metrics.md").read_text()


def test_a_table_where_some_images_name_no_reference_gets_no_within_reference_figures() -> None:
    samples = [evaluation.Sample(f"i{k}.png", float(k), "" if k == 0 else f"r{k % 2}", "01")
               for k in range(8)]
    preds = {"mean": np.arange(8.0), "median": np.arange(8.0)}
    info = scoring.DeployInfo("d.prototxt", "data", 3, 224, 224, "fc8")
    direction = evaluation.direction_report("higher_better", "higher_better", "test", False)
    report = evaluation.build_report(info, "m", "t.csv", None, samples, preds, 1, 0, direction)
    assert report["within_reference"] == {}
    assert report["warnings"] == ["1 of 8 images name no reference: no within-reference figures"]


def test_summarize_splits_mean_and_sample_std(tmp_path: Path) -> None:
    reports = [_synthetic_report(tmp_path, shift)[0] for shift in (0.0, 0.5, 1.0)]
    summary = evaluation.summarize_splits(reports)
    values = [r["overall"]["mean"]["plcc"] for r in reports]
    assert summary["overall"]["mean"]["plcc"] == pytest.approx(np.mean(values))
    assert summary["overall_std"]["mean"]["plcc"] == pytest.approx(np.std(values, ddof=1))
    assert summary["per_type"]["mean"]["10"]["n_splits"] == 3
    within = [r["within_reference"]["mean"]["mean"]["srocc"] for r in reports]
    assert summary["within_reference"]["mean"]["mean"]["srocc"] == pytest.approx(np.mean(within))
    assert summary["within_reference_std"]["mean"]["srocc"] == pytest.approx(np.std(within, ddof=1))
    text = evaluation.metrics_markdown(summary, {})
    # the same two references in every split: two distinct references, a mean over the three splits
    assert summary["within_reference"]["mean"]["mean"]["n_references"] == 2
    assert "| mean over the splits of each split's mean (2 distinct references) |" in text
    # a split evaluated before the within-reference figures existed: the summary has none, and says nothing
    old = dict(reports[0])
    del old["within_reference"]
    summary = evaluation.summarize_splits([old, *reports[1:]])
    assert summary["within_reference"] == {} and "Within each reference" not in \
        evaluation.metrics_markdown(summary, {})
    assert "±" in text and "n_splits" in text


def test_report_says_where_the_weights_started(tmp_path: Path) -> None:
    # tools/train.py records the initialisation in run.json beside snapshots/; the evaluation reports it.
    run = tmp_path / "ft_run"
    (run / "snapshots").mkdir(parents=True)
    ranked_from = {"weights": None, "description": "random initialisation, chosen with --weights none"}
    init = {"weights": "/r/rank_iter_50000.caffemodel", "rank_initialisation": ranked_from,
            "description": "ranking model /r/rank_iter_50000.caffemodel, whose ranking started from random "
                           "initialisation, chosen with --weights none"}
    (run / "run.json").write_text(json.dumps({"kind": "finetune", "initialisation": init}))
    report = _synthetic_report(tmp_path, model=str(run / "snapshots" / "ft_run_iter_10.caffemodel"))[0]
    assert report["initialisation"] == init
    assert f"- initialisation: {init['description']}\n" in evaluation.metrics_markdown(report, {})
    released = _synthetic_report(tmp_path, 0.5, model=str(tmp_path / "FT_tid2013.caffemodel"))[0]
    assert released["initialisation"] is None
    unknown = "unknown (no run.json of tools/train.py beside the model)"
    assert f"- initialisation: {unknown}\n" in evaluation.metrics_markdown(released, {})
    summary = evaluation.summarize_splits([report, released])
    assert summary["initialisation"] == [init, None]
    assert (f"- initialisation: split 0: {init['description']}; split 1: {unknown}\n"
            in evaluation.metrics_markdown(summary, {}))


# ------------------------------------------------------------------------------------------------
# with Caffe


@pytest.fixture(scope="module")
def caffe_module():
    return pytest.importorskip("caffe")


@pytest.mark.caffe
def test_output_blob_is_chosen_from_the_deploy_prototxt(caffe_module, tmp_path: Path) -> None:
    expected = {"vgg16/rank_deploy.prototxt": ("fc8_m", 224), "vgg16/ft_deploy.prototxt": ("fc8", 224),
                "vgg16/ft_tid2013_deploy.prototxt": ("fc8", 224),
                "shallow/rank_deploy.prototxt": ("fc8_m", 227), "shallow/ft_deploy.prototxt": ("fc8", 227)}
    for name, (blob, crop) in expected.items():
        path = REPO / "prototxts" / name
        assert path.is_file(), path
        info = scoring.read_deploy(path)
        got = (info.output_blob, info.crop_height, info.crop_width, info.input_blob)
        assert got == (blob, crop, crop, "data"), name
    tiny = tmp_path / "t.prototxt"
    tiny.write_text(TINY_DEPLOY.replace("HEAD", "quality"), encoding="utf-8")
    assert scoring.read_deploy(tiny).output_blob == "quality"  # the only output, whatever its name
    legacy = tmp_path / "legacy.prototxt"
    legacy.write_text('input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 24\ninput_dim: 20\n'
                      + TINY_DEPLOY.split("\n", 3)[3].replace("HEAD", "fc8"), encoding="utf-8")
    info = scoring.read_deploy(legacy)
    assert (info.crop_height, info.crop_width, info.output_blob) == (24, 20, "fc8")
    # two dangling outputs, one of them a known head -> the head; none known -> refused
    two = tmp_path / "two.prototxt"
    two.write_text(TINY_DEPLOY.replace("HEAD", "fc8_m") + 'layer { name: "aux" type: "InnerProduct" '
                   'bottom: "conv1" top: "aux" inner_product_param { num_output: 2 } }', encoding="utf-8")
    assert scoring.read_deploy(two).output_blob == "fc8_m"
    two.write_text(two.read_text().replace("fc8_m", "other"), encoding="utf-8")
    with pytest.raises(InputError, match="cannot tell the score blob"):
        scoring.read_deploy(two)


@pytest.mark.caffe
def test_mismatched_caffemodel_is_an_input_error(caffe_module, tmp_path: Path) -> None:
    deploy, model = make_tiny_model(tmp_path, head="fc8")
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    deploy_m, _ = make_tiny_model(renamed, head="fc8_m")  # layer 'fc8_m' has no weights in `model`
    with pytest.raises(InputError, match=r"no weights for layer\(s\) \['fc8_m'\]") as err:
        scoring.load_net(deploy_m, model)
    assert err.value.path == str(model)
    wider = tmp_path / "wider_deploy.prototxt"
    wider.write_text(deploy.read_text().replace("num_output: 4", "num_output: 5"), encoding="utf-8")
    with pytest.raises(InputError, match="shape"):
        scoring.load_net(wider, model)
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(b"\xff\xfe not a protobuf \x00\x01")
    with pytest.raises(InputError):
        scoring.load_net(deploy, junk)
    with pytest.raises(InputError, match="caffemodel not found"):
        scoring.load_net(deploy, tmp_path / "missing.caffemodel")


def _scores(net, info, images: list[np.ndarray], batch: int, crops: int = 30) -> np.ndarray:
    scorer = scoring.CropScorer(net, info, crops=crops, batch=batch, seed=0)
    return np.stack([values for _, values in scorer.score((i, i, img) for i, img in enumerate(images))])


@pytest.mark.caffe
def test_batched_and_one_crop_per_forward_give_the_same_scores(caffe_module, tmp_path: Path) -> None:
    deploy, model = make_tiny_model(tmp_path)
    net, info = scoring.load_net(deploy, model)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, size=(36 + i, 41, 3), dtype=np.uint8) for i in range(4)]
    one = _scores(net, info, images, batch=1)
    for batch in (7, 60, 120):
        np.testing.assert_allclose(_scores(net, info, images, batch=batch), one, rtol=1e-5, atol=1e-6)
    assert np.ptp(one) > 0  # different crops really give different outputs


@pytest.mark.caffe
def test_batched_equals_one_crop_on_the_shallow_deploy(caffe_module, tmp_path: Path) -> None:
    deploy = REPO / "prototxts" / "shallow" / "ft_deploy.prototxt"
    net = caffe_module.Net(str(deploy), caffe_module.TEST)
    rng = np.random.default_rng(2)
    for params in net.params.values():
        for blob in params:
            blob.data[...] = rng.normal(0.0, 0.02, size=blob.data.shape)
    info = scoring.read_deploy(deploy)
    images = [rng.integers(0, 256, size=(235, 240, 3), dtype=np.uint8) for _ in range(2)]
    one = _scores(net, info, images, batch=1, crops=6)
    np.testing.assert_allclose(_scores(net, info, images, batch=12, crops=6), one, rtol=1e-4, atol=1e-5)


@pytest.fixture()
def tid_fixture(caffe_module, tmp_path: Path) -> dict:
    """A fixture TID2013 through the real list writer, and a tiny random model."""
    from data_prep.make_ft_lists import make_lists
    from tests.iqa_fixtures import make_tid2013

    data = make_tid2013(tmp_path / "tid", n_refs=5, types=(1, 8, 10), levels=3, size=40)
    make_lists("tid2013", data, tmp_path / "ft", splits=2, seed=0)
    deploy, model = make_tiny_model(tmp_path)
    return {"root": tmp_path, "deploy": deploy, "model": model, "ft": tmp_path / "ft"}


def _run(args: list[str]) -> int:
    return evaluate.main([*args, "--quiet"])


@pytest.mark.caffe
def test_end_to_end_eval_writes_every_file(tid_fixture: dict, capsys) -> None:
    out = tid_fixture["root"] / "results" / "run"
    table = tid_fixture["ft"] / "split0" / "test.csv"
    code = _run(["--deploy", str(tid_fixture["deploy"]), "--model", str(tid_fixture["model"]),
                 "--table", str(table), "--out", str(out), "--crops", "5", "--batch", "8",
                 "--dataset", "tid2013"])
    assert code == 0, capsys.readouterr().err
    for name in RESULT_FILES:
        assert (out / name).is_file(), name
    assert not list(out.glob(".*.tmp*"))  # no temporary files left behind
    for name in ("scatter.png", "srocc_per_type.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    samples, _ = evaluation.read_samples(table)
    report = json.loads((out / "metrics.json").read_text())
    assert report["n_images"] == len(samples) and report["crops"] == 5 and report["seed"] == 0
    assert report["output_blob"] == "fc8" and report["dataset"] == "tid2013"
    assert report["crop_size"] == [32, 32]
    # per-type metrics are keyed by the dataset's type codes, exactly those of the table
    assert set(report["per_type"]["mean"]) == {s.type for s in samples} == {"01", "08", "10"}
    assert set(report["overall"]) == {"mean", "median"}
    assert set(report["within_reference"]["mean"]["per_reference"]) == {s.reference for s in samples}
    # a fine-tuned head with no record of its training: its direction, hence the sign, is unknown
    assert report["direction"]["model"] == "unknown" and report["direction"]["expected_sign"] is None
    with open(out / "per_image.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(evaluation.PER_IMAGE_COLUMNS)
    assert [r["path"] for r in rows] == [s.path for s in samples]
    assert [float(r["ground_truth"]) for r in rows] == [s.score for s in samples]
    from rankiqa.metrics import metrics

    recomputed = metrics([float(r["pred_mean"]) for r in rows], [s.score for s in samples])
    assert recomputed["srocc"] == pytest.approx(report["overall"]["mean"]["srocc"])
    markdown = (out / "metrics.md").read_text()
    assert "SROCC" in markdown and "| 08 |" in markdown and "Gaussian blur" in markdown

    # the batch size changes nothing; one crop per forward neither (same seed, same crops)
    out_one = tid_fixture["root"] / "results" / "one"
    assert _run(["--deploy", str(tid_fixture["deploy"]), "--model", str(tid_fixture["model"]),
                 "--table", str(table), "--out", str(out_one), "--crops", "5",
                 "--one-crop-per-forward"]) == 0
    with open(out_one / "per_image.csv", encoding="utf-8", newline="") as handle:
        one_rows = list(csv.DictReader(handle))
    np.testing.assert_allclose([float(r["pred_mean"]) for r in one_rows],
                               [float(r["pred_mean"]) for r in rows], rtol=1e-5)


@pytest.mark.caffe
def test_ranking_model_on_dmos_reports_negative_expected_sign_and_negate(tid_fixture: dict) -> None:
    root = tid_fixture["root"]
    rank_dir = root / "rank"
    rank_dir.mkdir()
    deploy, model = make_tiny_model(rank_dir, head="fc8_m")
    samples, _ = evaluation.read_samples(tid_fixture["ft"] / "split0" / "test.csv")
    dmos = write_table(root / "dmos.csv", [(s.reference, s.type, s.level, Path(s.path), 10 - s.score)
                                           for s in samples], "lower_better")
    reports = {}
    for negate in (False, True):
        out = root / f"neg{negate}"
        assert _run(["--deploy", str(deploy), "--model", str(model), "--table", str(dmos), "--out", str(out),
                     "--crops", "3"] + (["--negate"] if negate else [])) == 0
        reports[negate] = json.loads((out / "metrics.json").read_text())
    assert reports[False]["direction"]["expected_sign"] == -1
    assert "NEGATIVE" in reports[False]["direction"]["note"]
    assert reports[True]["direction"]["expected_sign"] == 1 and reports[True]["direction"]["negated"]
    flipped = -reports[False]["overall"]["mean"]["srocc"]
    assert reports[True]["overall"]["mean"]["srocc"] == pytest.approx(flipped)


@pytest.mark.caffe
def test_splits_mode_averages_over_splits(tid_fixture: dict) -> None:
    out = tid_fixture["root"] / "results" / "splits"
    assert _run(["--deploy", str(tid_fixture["deploy"]), "--model", str(tid_fixture["model"]),
                 "--table", str(tid_fixture["ft"] / "split{split}" / "test.csv"), "--out", str(out),
                 "--crops", "3", "--splits", "2", "--dataset", "tid2013"]) == 0
    per_split = [json.loads((out / f"split{k}" / "metrics.json").read_text()) for k in range(2)]
    for k in range(2):
        for name in RESULT_FILES:
            assert (out / f"split{k}" / name).is_file()
    for name in RESULT_FILES:
        assert (out / name).is_file()
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["n_splits"] == 2
    values = [r["overall"]["mean"]["srocc"] for r in per_split]
    assert summary["overall"]["mean"]["srocc"] == pytest.approx(np.mean(values))
    assert summary["overall_std"]["mean"]["srocc"] == pytest.approx(np.std(values, ddof=1))
    with open(out / "per_image.csv", encoding="utf-8") as handle:
        assert sum(1 for _ in handle) == 1 + sum(r["n_images"] for r in per_split)


@pytest.mark.caffe
def test_a_split_evaluation_stopped_half_way_leaves_no_earlier_summary(tid_fixture: dict, capsys) -> None:
    root = tid_fixture["root"]
    out = root / "results" / "stopped"
    common = ["--deploy", str(tid_fixture["deploy"]), "--out", str(out), "--crops", "2", "--splits", "2"]
    assert _run([*common, "--model", str(tid_fixture["model"]),
                 "--table", str(tid_fixture["ft"] / "split{split}" / "test.csv")]) == 0
    assert (out / "metrics.json").is_file() and (out / "metrics.md").is_file()
    other_dir = root / "other"
    other_dir.mkdir()
    _, other = make_tiny_model(other_dir, seed=5)
    partial = root / "partial"
    (partial / "split0").mkdir(parents=True)
    (partial / "split0" / "test.csv").write_bytes((tid_fixture["ft"] / "split0" / "test.csv").read_bytes())
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    # Another model on tables of which split 1 is missing: refused before anything is touched.
    capsys.readouterr()
    assert _run([*common, "--model", str(other), "--table", str(partial / "split{split}" / "test.csv")]) == 2
    assert "split1/test.csv: test table / list not found" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before
    # Split 1's table names an image that is not there: split 0 is rewritten, then the run stops.
    (partial / "split1").mkdir()
    header, first, *rest = (tid_fixture["ft"] / "split1" / "test.csv").read_text().splitlines()
    gone = first.split(",")
    gone[3] = str(root / "gone.bmp")
    (partial / "split1" / "test.csv").write_text("\n".join([header, ",".join(gone), *rest]) + "\n")
    assert _run([*common, "--model", str(other), "--table", str(partial / "split{split}" / "test.csv")]) == 2
    assert "gone.bmp" in capsys.readouterr().err
    assert json.loads((out / "split0" / "metrics.json").read_text())["model"] == str(other)
    # The first model's summary would pass for a finished evaluation of this one: it is gone.
    assert not (out / "metrics.json").exists() and not (out / "metrics.md").exists()


@pytest.mark.caffe
def test_too_small_image_and_bad_flags_are_clean_errors(tid_fixture: dict, capsys) -> None:
    root = tid_fixture["root"]
    small = make_images(root / "small", 1, size=(20, 60))[0]
    table = write_table(root / "small.csv", [("r", "01", "1", small, 3.0)], "higher_better")
    args = ["--deploy", str(tid_fixture["deploy"]), "--model", str(tid_fixture["model"]),
            "--out", str(root / "bad")]
    assert _run([*args, "--table", str(table)]) == 2
    err = capsys.readouterr().err
    assert f"{table}:2:" in err and "smaller than the 32x32 crop" in err
    assert not (root / "bad" / "metrics.json").exists()
    assert _run([*args, "--table", str(table), "--splits", "2"]) == 2
    assert "{split}" in capsys.readouterr().err


@pytest.mark.caffe
def test_ranking_model_trained_with_dmos_direction_is_lower_better(tmp_path):
    # tools/train.py records the rank loss direction in run.json beside snapshots/.
    model = tmp_path / "run" / "snapshots" / "run_iter_10.caffemodel"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"")
    assert scoring.trained_direction(model) is None
    (tmp_path / "run" / "run.json").write_text(json.dumps({"kind": "rank", "direction": "dmos"}))
    assert scoring.trained_direction(model)[0] == "lower_better"
    assert scoring.trained_direction(tmp_path / "elsewhere.caffemodel") is None
    ranking = scoring.read_deploy(REPO / "prototxts" / "shallow" / "rank_deploy.prototxt")
    assert scoring.model_direction(ranking, model, None)[0] == "lower_better"
    assert scoring.model_direction(ranking, tmp_path / "elsewhere.caffemodel", None)[0] == "higher_better"


@pytest.mark.caffe
def test_evaluate_and_predict_give_a_live_model_the_same_direction_on_tid2013(tid_fixture: dict) -> None:
    """A model fine-tuned on LIVE (DMOS) evaluated on TID2013 (MOS): lower_better and sign -1 everywhere,
    under its snapshot name and renamed as the released FT_live alike."""
    from tools import predict

    root = tid_fixture["root"]
    run = root / "ft_live_run"
    (run / "snapshots").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"kind": "finetune", "dataset": "live", "net": "shallow"}))
    table = tid_fixture["ft"] / "split0" / "test.csv"
    image = evaluation.read_samples(table)[0][0].path
    for name in ("ft_live_run_iter_20", "FT_live"):
        model = run / "snapshots" / f"{name}.caffemodel"
        model.write_bytes(tid_fixture["model"].read_bytes())
        out = root / "results" / name
        assert _run(["--deploy", str(tid_fixture["deploy"]), "--model", str(model), "--table", str(table),
                     "--out", str(out), "--crops", "2", "--dataset", "tid2013"]) == 0
        direction = json.loads((out / "metrics.json").read_text())["direction"]
        assert (direction["model"], direction["expected_sign"]) == ("lower_better", -1), name
        csv_out = root / f"{name}.csv"
        assert predict.main(["--deploy", str(tid_fixture["deploy"]), "--model", str(model), "--images", image,
                             "--out", str(csv_out), "--crops", "2", "--quiet"]) == 0
        with open(csv_out, encoding="utf-8", newline="") as handle:
            assert next(csv.DictReader(handle))["direction"] == "lower_better", name


def test_tables_and_lists_with_a_byte_order_mark_or_tabs(tmp_path: Path) -> None:
    image = tmp_path / "a b.png"
    table = write_table(tmp_path / "t.csv", [("r", "01", "1", image, 3.0)], "higher_better")
    table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    samples, direction = evaluation.read_samples(table)
    assert direction == "higher_better"
    assert [(s.path, s.score, s.type) for s in samples] == [(str(image), 3.0, "01")]
    listed = tmp_path / "hand_made.txt"
    listed.write_text(f"\ufeff{image}\t3.5\n", encoding="utf-8")
    samples, direction = evaluation.read_samples(listed)
    assert direction is None and [(s.path, s.score) for s in samples] == [(str(image), 3.5)]


@pytest.mark.caffe
def test_a_collapsed_model_is_reported_as_constant_not_just_srocc_0(tid_fixture: dict, capsys) -> None:
    import caffe

    net = caffe.Net(str(tid_fixture["deploy"]), caffe.TEST)
    for params in net.params.values():
        for blob in params:
            blob.data[...] = 0.0
    collapsed = tid_fixture["root"] / "collapsed.caffemodel"
    net.save(str(collapsed))
    out = tid_fixture["root"] / "results" / "collapsed"
    assert _run(["--deploy", str(tid_fixture["deploy"]), "--model", str(collapsed), "--table",
                 str(tid_fixture["ft"] / "split0" / "test.csv"), "--out", str(out), "--crops", "2"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["overall"]["mean"]["srocc"] == 0.0
    assert len(report["warnings"]) == 1 and report["warnings"][0].startswith("the scores are constant")
    assert "**warning**: the scores are constant" in (out / "metrics.md").read_text()
    assert "warning: the scores are constant" in capsys.readouterr().err
    # a model whose scores vary carries no warning
    assert _run(["--deploy", str(tid_fixture["deploy"]), "--model", str(tid_fixture["model"]), "--table",
                 str(tid_fixture["ft"] / "split0" / "test.csv"), "--out", str(out), "--crops", "2"]) == 0
    assert json.loads((out / "metrics.json").read_text())["warnings"] == []


def test_degenerate_reason_names_what_is_constant() -> None:
    from rankiqa import metrics

    assert metrics.degenerate_reason([1.0, 2.0, 3.0], [3.0, 1.0, 2.0]) is None
    assert metrics.degenerate_reason([2.5, 2.5], [1.0, 2.0]).startswith(
        "the scores are constant (every one of the 2 images scored 2.5)")
    assert metrics.degenerate_reason([1.0, 2.0], [4.0, 4.0]).startswith("the ground truth is constant")
    assert metrics.degenerate_reason([1.0], [4.0]).startswith("only 1 image")


@pytest.mark.slow
@pytest.mark.caffe
def test_results_record_their_inputs_and_say_when_they_replace_others(tid_fixture: dict, capsys) -> None:
    from rankiqa.provenance import sha256_file

    root = tid_fixture["root"]
    other_dir = root / "other"
    other_dir.mkdir()
    _, other = make_tiny_model(other_dir, seed=5)
    out = root / "results" / "replaced"
    table = tid_fixture["ft"] / "split0" / "test.csv"
    common = ["--deploy", str(tid_fixture["deploy"]), "--out", str(out), "--crops", "2"]
    assert _run([*common, "--model", str(tid_fixture["model"]), "--table",
                 str(tid_fixture["ft"] / "split{split}" / "test.csv"), "--splits", "2"]) == 0
    assert (out / "split1" / "metrics.json").is_file()
    capsys.readouterr()
    assert _run([*common, "--model", str(other), "--table", str(table)]) == 0
    assert f"note: {out}: replacing the results of an evaluation with another model, splits" in \
        capsys.readouterr().err
    report = json.loads((out / "metrics.json").read_text())
    assert report["inputs"]["model"] == {"path": str(other.resolve()), "sha256": sha256_file(other)}
    assert report["inputs"]["table"]["sha256"] == sha256_file(table) and report["inputs"]["crops"] == 2
    assert not (out / "split0").exists() and not (out / "split1").exists()  # the split results were stale
    # The same evaluation again: nothing to say.
    assert _run([*common, "--model", str(other), "--table", str(table)]) == 0
    assert "replacing" not in capsys.readouterr().err


def test_results_on_a_full_disk_name_the_file_and_leave_no_metrics_json(tmp_path: Path) -> None:
    report, samples, preds = _synthetic_report(tmp_path)
    with small_fs(tmp_path / "fs", 16 << 10) as fs:
        out = fs / "res"
        with pytest.raises(StorageError) as caught:  # the plots do not fit in 16 KiB
            evaluation.write_outputs(out, report, samples, preds, {})
        assert Path(caught.value.path).parent == out and Path(caught.value.path).name in RESULT_FILES
        assert "No space left on device" in str(caught.value)
        # metrics.json, written last, is what says an evaluation finished: it is not there.
        assert not (out / "metrics.json").exists() and not list(out.glob(".*.tmp*"))
        remount(fs, "size=1M")
        evaluation.write_outputs(out, report, samples, preds, {})
        assert sorted(p.name for p in out.iterdir()) == sorted(RESULT_FILES)
