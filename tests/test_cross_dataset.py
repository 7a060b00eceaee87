"""rankiqa.cross_dataset and tools.cross_dataset: directions reconciled across datasets with opposite
label directions (LIVE DMOS, TID2013 MOS), the matrix files, bad input, and a real Caffe run."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from data_prep import make_ft_lists
from data_prep.datasets import read_table, write_table
from rankiqa import cross_dataset as cd
from rankiqa import scoring
from rankiqa.errors import InputError
from rankiqa.image_io import read_bgr
from tests import iqa_fixtures as fx
from tests.caffe_marks import needs_caffe
from tools import evaluate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, Path]:
    """table.csv of a LIVE fixture (DMOS, lower = better) and of a TID2013 fixture (MOS, higher = better)."""
    root = tmp_path_factory.mktemp("cross")
    live = fx.make_live(root / "live", n_refs=3, distorted_per_ref=2)
    tid = fx.make_tid2013(root / "tid", n_refs=3, types=(1, 8), levels=3, include_ref25=False)
    make_ft_lists.make_lists("live", live, root / "ft_live")
    make_ft_lists.make_lists("tid2013", tid, root / "ft_tid")
    out = {"live": root / "ft_live" / "table.csv", "tid2013": root / "ft_tid" / "table.csv"}
    # The fixtures blur deterministically, so two LIVE types hold the same pixels under other scores: keep the
    # images whose content has one score, so that the oracle below can know each image's quality.
    rows = {name: read_table(table) for name, table in out.items()}
    scores: dict[str, set[float]] = {}
    for row in (row for table_rows in rows.values() for row in table_rows):
        scores.setdefault(_digest(read_bgr(row.path)), set()).add(row.score)
    for name, table in out.items():
        write_table(table, [row for row in rows[name] if len(scores[_digest(read_bgr(row.path))]) == 1])
    return out


def _digest(image: np.ndarray) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


class OracleScorer:
    """A ``CropScorer`` stand-in that scores each image by its true quality (known from the tables), pointing
    its output the way a model trained on MOS (``higher_better``) or on DMOS (``lower_better``) would."""

    def __init__(self, quality: dict[str, float], direction: str, deploy: str, crops: int = 2):
        self.info = scoring.DeployInfo(deploy, "data", 3, 32, 32, "fc8")
        self.quality, self.sign = quality, (1.0 if direction == "higher_better" else -1.0)
        self.crops, self.seed, self.batch = crops, 0, 1

    def fits(self, image: np.ndarray) -> bool:
        return min(image.shape[:2]) >= 32

    def score(self, items):
        for key, _, image in items:
            yield key, np.full(self.crops, self.sign * self.quality[_digest(image)])


@pytest.fixture(scope="module")
def quality(tables) -> dict[str, float]:
    """Image content -> quality (higher = better) from the tables' labels and directions."""
    out: dict[str, float] = {}
    for table in tables.values():
        for row in read_table(table):
            out[_digest(read_bgr(row.path))] = row.score if row.direction == "higher_better" else -row.score
    return out


def _model_files(tmp_path: Path) -> dict[str, Path]:
    """A model fine-tuned on LIVE (its run.json says so), a released-style name, and an unrecorded one."""
    run = tmp_path / "runs" / "ft_live_shallow_split0"
    (run / "snapshots").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"kind": "finetune", "dataset": "live"}), encoding="utf-8")
    files = {"dmos": run / "snapshots" / "ft_live_shallow_split0_iter_40.caffemodel",
             "mos": tmp_path / "models" / "mos_model.caffemodel",
             "unknown": tmp_path / "models" / "other.caffemodel",
             "deploy": tmp_path / "stub_deploy.prototxt"}
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return files


def test_directions_are_reconciled_raw_and_corrected(tables, quality, tmp_path):
    files = _model_files(tmp_path)
    deploy = str(files["deploy"])
    models = [cd.ModelSpec("dmos_model", str(files["dmos"]), deploy),  # direction from its run.json
              cd.ModelSpec("mos_model", str(files["mos"]), deploy, "higher_better"),  # given
              cd.ModelSpec("unknown", str(files["unknown"]), deploy)]  # fc8 without a record
    outputs = {"dmos_model": "lower_better", "mos_model": "higher_better", "unknown": "higher_better"}
    targets = [cd.TargetSpec(name, str(table)) for name, table in tables.items()]
    cells = cd.evaluate_matrix(models, targets, tmp_path / "out",
                               lambda spec: OracleScorer(quality, outputs[spec.name], spec.deploy))
    got = {(c.model, c.dataset): c for c in cells}
    assert [(c.model, c.dataset) for c in cells] == [(m.name, t.name) for m in models for t in targets]

    # a DMOS model ranks DMOS positively and MOS negatively; corrected, both are +1
    assert got["dmos_model", "live"].srocc_raw == pytest.approx(1.0)
    assert got["dmos_model", "tid2013"].srocc_raw == pytest.approx(-1.0)
    assert got["dmos_model", "tid2013"].expected_sign == -1
    assert got["dmos_model", "tid2013"].srocc_corrected == pytest.approx(1.0)
    assert got["dmos_model", "tid2013"].plcc_corrected == -got["dmos_model", "tid2013"].plcc_raw > 0
    assert got["dmos_model", "live"].model_direction == "lower_better"
    assert "run.json" in got["dmos_model", "live"].direction_source
    # the MOS model: the other way round
    assert got["mos_model", "live"].srocc_raw == pytest.approx(-1.0)
    assert got["mos_model", "live"].srocc_corrected == pytest.approx(1.0)
    mos_on_mos = got["mos_model", "tid2013"]
    assert mos_on_mos.srocc_raw == mos_on_mos.srocc_corrected == pytest.approx(1.0)
    # unknown direction: raw only
    assert got["unknown", "live"].expected_sign is None and got["unknown", "live"].srocc_corrected is None
    assert got["unknown", "live"].srocc_raw == pytest.approx(-1.0)
    # the model's own dataset is marked; every image of the target is scored
    assert [c.same_dataset for c in cells if c.model == "dmos_model"] == [True, False]
    # 45 LIVE images less the 12 blurred alike in jpeg/ and gblur/ (3 references x 2 levels x 2 folders)
    assert got["mos_model", "live"].n_images == len(read_table(tables["live"])) == 3 * 5 * 3 - 12
    assert got["mos_model", "tid2013"].n_images == 3 * 2 * 3
    assert {c.label_direction for c in cells if c.dataset == "live"} == {"lower_better"}
    # each cell is a complete evaluation of the project's own
    metrics = json.loads((tmp_path / "out" / "dmos_model" / "tid2013" / "metrics.json").read_text())
    assert metrics["direction"]["expected_sign"] == -1 and metrics["n_images"] == 18

    cd.write_matrix(tmp_path / "out", cells, crops=2, seed=0)
    with open(tmp_path / "out" / "matrix.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == cd.CSV_COLUMNS and len(rows) == 6
    row = next(r for r in rows if r["model"] == "dmos_model" and r["dataset"] == "tid2013")
    assert float(row["srocc_raw"]) == pytest.approx(-1.0)
    assert float(row["srocc_corrected"]) == pytest.approx(1.0)
    assert next(r for r in rows if r["model"] == "unknown")["srocc_corrected"] == ""
    md = (tmp_path / "out" / "matrix.md").read_text()
    corrected = md.split("## SROCC, direction-corrected")[1].split("##")[0]
    raw = md.split("## SROCC, raw (as computed)")[1].split("##")[0]
    assert "| dmos_model | 1.0000* | 1.0000 |" in corrected and "| unknown |  |  |" in corrected
    assert "| dmos_model | 1.0000* | -1.0000 |" in raw
    assert (tmp_path / "out" / "heatmap.png").read_bytes().startswith(PNG_MAGIC)
    assert json.loads((tmp_path / "out" / "matrix.json").read_text())["cells"][0]["model"] == "dmos_model"


def test_bad_input_is_refused_before_any_scoring(tables, tmp_path):
    files = _model_files(tmp_path)
    deploy = str(files["deploy"])
    model = cd.ModelSpec("m", str(files["mos"]), deploy)
    good = cd.TargetSpec("live", str(tables["live"]))

    def never(spec):
        raise AssertionError("scored although the input was bad")

    with pytest.raises(InputError, match="test table / list not found"):
        cd.evaluate_matrix([model], [good, cd.TargetSpec("tid2013", str(tmp_path / "no.csv"))], tmp_path,
                           never)
    with pytest.raises(InputError, match="caffemodel not found") as err:
        cd.evaluate_matrix([model, cd.ModelSpec("x", str(tmp_path / "x.caffemodel"), deploy)], [good],
                           tmp_path, never)
    assert err.value.path == str(tmp_path / "x.caffemodel")
    with pytest.raises(InputError, match="dataset name.*given twice"):
        cd.evaluate_matrix([model], [good, good], tmp_path, never)
    with pytest.raises(InputError, match="2 --deploy for 3 models"):
        cd.model_specs(["a", "b", "c"], ["d1", "d2"])
    with pytest.raises(InputError, match="expected NAME=path"):
        cd.parse_target("live")
    # DATA_<ds> names another folder than the one the table was made from: refused, both named
    made_from = make_ft_lists.lists_record(tables["live"].parent)["data"]
    elsewhere = cd.with_data([good], [f"live={tmp_path / 'new live'}"])
    with pytest.raises(InputError, match=f"made from {made_from}, not from {tmp_path / 'new live'}") as err:
        cd.evaluate_matrix([model], elsewhere, tmp_path, never)
    assert err.value.path == str(tables["live"])
    # the advice remakes the lists as they are (their folder, their number of splits), from the other folder
    assert f"FT_DIR={tables['live'].parent} SPLITS=1;" in str(err.value)
    with pytest.raises(InputError, match="not among the datasets"):
        cd.with_data([good], ["tid2013=/x"])
    assert not list(tmp_path.glob("*/matrix.*"))


def test_model_labels_name_the_run_and_stay_unique():
    specs = cd.model_specs(["runs/ft_live_x/snapshots/ft_live_x_iter_40.caffemodel", "a/FT_live.caffemodel",
                            "b/FT_live.caffemodel"], ["d.prototxt"], ["lower_better"])
    assert [s.name for s in specs] == ["ft_live_x_iter40", "FT_live", "FT_live-2"]
    assert {s.deploy for s in specs} == {"d.prototxt"} and {s.direction for s in specs} == {"lower_better"}
    assert cd.parse_target("tid2013=data/ft/tid2013/table.csv") == cd.TargetSpec("tid2013",
                                                                                 "data/ft/tid2013/table.csv")


@needs_caffe
def test_real_caffe_matrix_matches_make_eval(tables, tmp_path):
    from tests.test_evaluate import make_tiny_model
    from tools import cross_dataset as tool

    deploy, model = make_tiny_model(tmp_path, head="fc8", seed=3)
    out = tmp_path / "cross"
    argv = ["--model", str(model), "--deploy", str(deploy), "--model-direction", "higher_better",
            "--dataset", f"live={tables['live']}", "--dataset", f"tid2013={tables['tid2013']}",
            "--out", str(out), "--crops", "3", "--batch", "4", "--seed", "1", "--quiet"]
    assert tool.main(argv) == 0
    with open(out / "matrix.csv", encoding="utf-8", newline="") as handle:
        rows = {r["dataset"]: r for r in csv.DictReader(handle)}
    # the same numbers as `make eval` on the same table, crops and seed
    for name in ("live", "tid2013"):
        assert evaluate.main(["--deploy", str(deploy), "--model", str(model), "--table", str(tables[name]),
                              "--out", str(tmp_path / f"eval_{name}"), "--crops", "3", "--batch", "4",
                              "--seed", "1", "--model-direction", "higher_better", "--dataset", name,
                              "--quiet"]) == 0
        metrics = json.loads((tmp_path / f"eval_{name}" / "metrics.json").read_text())
        assert float(rows[name]["srocc_raw"]) == pytest.approx(metrics["overall"]["mean"]["srocc"], abs=1e-12)
    assert float(rows["live"]["srocc_corrected"]) == pytest.approx(-float(rows["live"]["srocc_raw"]))
    assert float(rows["tid2013"]["srocc_corrected"]) == pytest.approx(float(rows["tid2013"]["srocc_raw"]))
    for name in cd.MATRIX_FILES:
        assert (out / name).is_file()
    # bad input: exit 2, nothing written
    assert tool.main([*argv[:-9], "--dataset", "x=missing.csv", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_the_library_imports_no_command() -> None:
    import ast

    for module in (cd, evaluate.evaluation):
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [name for name in imported if name.split(".")[0] == "tools"], module.__name__
