"""Pairwise ranking accuracy (rankiqa/rank_accuracy.py) and its command (tools/rank_accuracy.py)."""

from __future__ import annotations

import csv
import json

import pytest

from rankiqa import rank_accuracy as ra
from rankiqa.errors import InputError
from rankiqa.manifest import MANIFEST_COLUMNS
from rankiqa.provenance import sha256_file
from tests.caffe_marks import needs_caffe


def _rows(types=("GN", "JPEG"), refs=("a", "b"), levels=4):
    return [ra.RankedImage(r, t, lv, f"{r}/{t}{lv}.png" if lv else f"{r}.png")
            for t in types for r in refs for lv in range(levels + 1)]


def test_perfect_reversed_and_tied_scores():
    rows = _rows()
    perfect = {row.path: -float(row.level) for row in rows}
    result = ra.pairwise_accuracy(rows, perfect)
    assert [(a.type, a.correct, a.pairs, a.references) for a in result.values()] == [
        ("GN", 20, 20, 2), ("JPEG", 20, 20, 2), ("overall", 40, 40, 2)]
    # the same scores from a DMOS-like model (higher = worse) are all wrong ...
    assert ra.pairwise_accuracy(rows, perfect, higher_better=False)["overall"].accuracy == 0.0
    # ... and a collapsed model gets 0, not chance: a tie is not a correct order
    assert ra.pairwise_accuracy(rows, {row.path: 1.0 for row in rows})["overall"].accuracy == 0.0


def test_one_swapped_level_costs_exactly_its_pairs():
    rows = _rows(types=("JPEG",), refs=("a",))
    scores = {row.path: -float(row.level) for row in rows}
    scores["a/JPEG3.png"], scores["a/JPEG4.png"] = -4.0, -3.0  # levels 3 and 4 swapped: 1 of 10 pairs
    assert ra.pairwise_accuracy(rows, scores)["JPEG"].accuracy == pytest.approx(0.9)


def test_duplicate_level_is_refused():
    rows = _rows(types=("GN",), refs=("a",)) + [ra.RankedImage("a", "GN", 2, "x.png")]
    with pytest.raises(ValueError, match="level 2"):
        ra.pairwise_accuracy(rows, {row.path: 0.0 for row in rows})


def test_read_rank_table_resolves_paths_and_selects_the_split(tmp_path):
    table = tmp_path / "manifest.csv"
    table.write_text("reference,type,level,path,split\na,GN,0,pristine/a.png,train\n"
                     "a,GN,1,GN/GN1/a.png,train\nb,GN,0,pristine/b.png,test\n", encoding="utf-8")
    rows = ra.read_rank_table(table, "test")
    assert rows == [ra.RankedImage("b", "GN", 0, str(tmp_path / "pristine/b.png"))]
    assert len(ra.read_rank_table(table)) == 3


@pytest.mark.parametrize("text, message", [
    ("reference,type,path\na,GN,x.png\n", "missing column"),
    ("reference,type,level,path\na,GN,one,x.png\n", ":2: level 'one'"),
    ("reference,type,level,path\na,GN,-1,x.png\n", "negative"),
    ("reference,type,level,path\na,GN,0,x.png\nb,GN\n",
     r":3: 2 fields, expected 4 \(reference,type,level,path\)$"),
    ("reference,type,level,path\na,GN,0,x.png\nb,GN,1\n", ":3: 3 fields, expected 4"),
    ("reference,type,level,path\na,GN,0,x.png\nb,GN,1,y.png,z\n", ":3: 5 fields, expected 4"),
    ("reference,type,level,path\na,GN,0,\n", ":2: empty path"),
    ("reference,type,level,path\na,GN,0,\" \"\n", ":2: empty path"),
    # a quoted field over two lines: the next row is on line 4
    ('reference,type,level,path\n"a\nb",GN,0,x.png\nc,GN,one,y.png\n', ":4: level 'one'"),
])
def test_bad_tables_name_the_file_and_line(tmp_path, text, message):
    table = tmp_path / "t.csv"
    table.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message) as info:
        ra.read_rank_table(table)
    assert str(table) in str(info.value)


def test_a_row_too_short_to_have_a_split_is_an_error_not_skipped(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("reference,type,level,path,split\na,GN,0,x.png,test\nb,GN,0,y.png\n", encoding="utf-8")
    with pytest.raises(InputError, match=r":3: 4 fields, expected 5 \(reference,type,level,path,split\)"):
        ra.read_rank_table(table, "test")


def test_each_image_keeps_the_line_of_its_row(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text('reference,type,level,path\n"a\nb",GN,0,x.png\nc,GN,1,y.png\n', encoding="utf-8")
    assert [row.line for row in ra.read_rank_table(table)] == [3, 4]


def test_csv_and_plot(tmp_path):
    rows = _rows()
    result = ra.pairwise_accuracy(rows, {row.path: -float(row.level) for row in rows})
    assert ra.accuracy_csv(result).splitlines() == [
        "type,pairs,correct,references,accuracy", "GN,20,20,2,1.0000", "JPEG,20,20,2,1.0000",
        "overall,40,40,2,1.0000"]
    ra.plot_accuracy(result, tmp_path / "a.png", "test")
    assert (tmp_path / "a.png").stat().st_size > 0


@needs_caffe
def test_command_on_a_rank_set_folder(tmp_path):
    """A tiny ranking model on a tiny rank set: the files are written and agree with each other."""
    import cv2
    import numpy as np

    from tests.test_evaluate import make_tiny_model
    from tools import rank_accuracy as command

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    images = tmp_path / 'odd, "named"'  # a comma and a quote in every image path
    images.mkdir()
    with open(tmp_path / "manifest.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_COLUMNS)
        for ref in ("a", "b"):
            for level in range(3):
                path = images / f"{ref}{level}.png"
                noise = rng.normal(0, 20 * level, base.shape)
                cv2.imwrite(str(path), np.clip(base + noise, 0, 255).astype(np.uint8))
                writer.writerow((ref, "GN", level, path.relative_to(tmp_path), "test"))
    deploy, model = make_tiny_model(tmp_path, head="fc8_m")
    argv = ["--deploy", str(deploy), "--model", str(model), "--ranks", str(tmp_path), "--split", "test",
            "--out", str(tmp_path / "out"), "--crops", "2", "--quiet"]
    assert command.main(argv) == 0
    record = json.loads((tmp_path / "out" / "rank_accuracy.json").read_text())
    assert record["pairs"] == {"GN": 6, "overall": 6}
    assert record["model_direction"] == "higher_better"
    # what the scores were made from, by content: a model trained again under this path is told apart
    assert record["sha256"] == {"model": sha256_file(model), "deploy": sha256_file(deploy),
                                "ranks": sha256_file(tmp_path / "manifest.csv")}
    args = command.build_parser().parse_args(argv)
    assert command.record_is_current(record, args)
    model.write_bytes(model.read_bytes() + b"\0")
    assert not command.record_is_current(record, args)
    with open(tmp_path / "out" / "scores.csv", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        assert tuple(next(reader)) == command.SCORES_COLUMNS
        scores = dict(reader)
    rows = ra.read_rank_table(tmp_path / "manifest.csv")
    assert set(scores) == {row.path for row in rows}
    expected = ra.pairwise_accuracy(rows, {k: float(v) for k, v in scores.items()})
    assert record["accuracy"]["overall"] == expected["overall"].accuracy
    assert (tmp_path / "out" / "rank_accuracy.png").stat().st_size > 0
    assert "GN,6," in (tmp_path / "out" / "rank_accuracy.csv").read_text()


@needs_caffe
def test_a_missing_image_names_the_table_and_the_line_that_lists_it(tmp_path, capsys):
    import cv2
    import numpy as np

    from tests.test_evaluate import make_tiny_model
    from tools import rank_accuracy as command

    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for name in ("a0.png", "a1.png", "b0.png"):
        cv2.imwrite(str(tmp_path / name), image)
    table = tmp_path / "heldout.csv"
    # b1.png is absent; b's quoted reference spans two lines, so b1.png's row is lines 6-7 (named by its end)
    table.write_text('reference,type,level,path\na,GN,0,a0.png\na,GN,1,a1.png\n"b\nB",GN,0,b0.png\n'
                     '"b\nB",GN,1,b1.png\n', encoding="utf-8")
    deploy, model = make_tiny_model(tmp_path, head="fc8_m")
    out = tmp_path / "out"
    assert command.main(["--deploy", str(deploy), "--model", str(model), "--ranks", str(table),
                         "--out", str(out), "--crops", "2", "--quiet"]) == 2
    assert capsys.readouterr().err == f"error: {table}:7: image not found: {tmp_path / 'b1.png'}\n"
    assert not (out / "rank_accuracy.json").exists()


def test_the_default_results_folder_differs_by_rank_set_and_run_but_not_by_rerun(tmp_path):
    """Scoring another rank set, or another run's model of the same file name, must not replace an earlier
    result; the same scoring again finds its own folder."""
    from tools.rank_accuracy import RESULTS_DIR, default_out

    def record(model: str, ranks: str, split: str | None = None) -> dict:
        return {"model": str(tmp_path / model), "deploy": "prototxts/shallow/rank_deploy.prototxt",
                "ranks": str(tmp_path / ranks), "split": split, "crops": 10, "seed": 0, "direction": None}

    seed0 = record("seed0/rank_iter_200.caffemodel", "ranks/manifest.csv")
    folder = default_out(seed0)
    assert folder.parent == RESULTS_DIR and folder.name.startswith("rank_iter_200-ranks-")
    assert default_out(dict(seed0)) == folder
    others = [record("seed1/rank_iter_200.caffemodel", "ranks/manifest.csv"),
              record("seed0/rank_iter_200.caffemodel", "heldout_ranks.csv"),
              record("seed0/rank_iter_200.caffemodel", "ranks/manifest.csv", "test"),
              {**seed0, "crops": 30}]
    names = {default_out(other).name for other in others} | {folder.name}
    assert len(names) == 5
    assert default_out(others[1]).name.startswith("rank_iter_200-heldout_ranks-")
    assert default_out(others[2]).name.startswith("rank_iter_200-ranks-test-")
