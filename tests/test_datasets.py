"""Loaders of TID2013, LIVE, CSIQ, KADID-10k and MLIVE on fixtures in their published layouts."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from data_prep import datasets as ds
from rankiqa.errors import InputError
from tests import iqa_fixtures as fx

# ----------------------------------------------------------------------------------------------
# TID2013


@pytest.fixture(scope="module")
def tid_root(tmp_path_factory) -> Path:
    return fx.make_tid2013(tmp_path_factory.mktemp("tid") / "tid2013", n_refs=3, types=(1, 8, 10))


def test_tid2013_rows_scores_and_mixed_case(tid_root):
    rows = ds.load_tid2013(tid_root)
    assert len(rows) == 3 * 3 * 5  # reference 25 left out by default
    assert {r.reference for r in rows} == {"I01", "I02", "I03"}
    for row in rows:
        ref_id, type_id = int(row.reference[1:]), int(row.type)
        assert row.score == pytest.approx(fx.tid_score(ref_id, type_id, row.level))
        assert row.direction == ds.HIGHER_BETTER
        assert row.type in ds.TID2013_TYPES and row.type_name == ds.TID2013_TYPE_NAMES[row.type]
        path = Path(row.path)
        assert path.is_absolute() and path.is_file()
        # the list and the disk spell names differently; the path must be the file on disk
        assert path.name == fx.tid_disk_name(ref_id, type_id, row.level)
    assert any(Path(r.path).name.endswith(".BMP") for r in rows)
    assert any(Path(r.path).name.startswith("I") for r in rows)


def test_tid2013_include_synthetic_reference(tid_root):
    rows = ds.load_tid2013(tid_root, include_synthetic_ref=True)
    assert len(rows) == 4 * 3 * 5
    assert sum(r.reference == "I25" for r in rows) == 15


def _copy_tid(tid_root: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(tid_root, tmp_path / "tid2013"))


def _rewrite_line(path: Path, line: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_tid2013_non_numeric_mos_names_file_and_line(tid_root, tmp_path):
    root = _copy_tid(tid_root, tmp_path)
    _rewrite_line(root / "mos_with_names.txt", 4, "abc i01_01_4.bmp")
    with pytest.raises(InputError) as err:
        ds.load_tid2013(root)
    assert err.value.path == str(root / "mos_with_names.txt") and err.value.line == 4
    assert "not a number" in err.value.message


def test_tid2013_missing_image(tid_root, tmp_path):
    root = _copy_tid(tid_root, tmp_path)
    (root / "distorted_images" / fx.tid_disk_name(2, 8, 3)).unlink()
    lines = (root / "mos_with_names.txt").read_text().splitlines()
    expected_line = next(i for i, text in enumerate(lines, 1) if text.lower().endswith("i02_08_3.bmp"))
    with pytest.raises(InputError) as err:
        ds.load_tid2013(root)
    assert err.value.line == expected_line and "missing" in err.value.message


def test_tid2013_duplicate_name_any_case(tid_root, tmp_path):
    root = _copy_tid(tid_root, tmp_path)
    text = (root / "mos_with_names.txt").read_text()
    n_lines = len(text.splitlines())
    (root / "mos_with_names.txt").write_text(text + "5.0 I01_01_1.BMP\n")
    with pytest.raises(InputError) as err:
        ds.load_tid2013(root)
    assert err.value.line == n_lines + 1
    assert "duplicate" in err.value.message and "line 1" in err.value.message


def test_tid2013_bad_name(tid_root, tmp_path):
    root = _copy_tid(tid_root, tmp_path)
    _rewrite_line(root / "mos_with_names.txt", 2, "4.0 img_01.bmp")
    with pytest.raises(InputError, match="not a TID2013 name") as err:
        ds.load_tid2013(root)
    assert err.value.line == 2


# ----------------------------------------------------------------------------------------------
# LIVE


@pytest.fixture(scope="module")
def live_root(tmp_path_factory) -> Path:
    return fx.make_live(tmp_path_factory.mktemp("live") / "live", n_refs=3, distorted_per_ref=2)


def _live_truth(root: Path) -> dict[str, tuple[int, int, int]]:
    """path -> (ref index, type index, level), read back from the fixture's info.txt files."""
    truth = {}
    base = root / "databaserelease2"
    for type_index, folder in enumerate(fx.LIVE_FOLDERS):
        for line in (base / folder / "info.txt").read_text().splitlines():
            refname, image, param = line.split()
            level = round(float(param) / 0.5) - 1
            path = str((base / folder / image).resolve())
            truth[path] = (fx.LIVE_REFNAMES.index(refname), type_index, level)
    return truth


def test_live_default_keeps_reference_copies_in_published_order(live_root):
    rows = ds.load_live(live_root)
    assert len(rows) == 5 * 3 * 3
    assert [r.type for r in rows[:9]] == ["jp2k"] * 9 and rows[-1].type == "fastfading"
    assert [Path(r.path).name for r in rows[:3]] == ["img1.bmp", "img2.bmp", "img3.bmp"]
    truth = _live_truth(live_root)
    for row in rows:
        ref_index, type_index, level = truth[row.path]
        assert row.reference == Path(fx.LIVE_REFNAMES[ref_index]).stem
        assert row.type == ds.LIVE_TYPES[type_index]
        assert row.score == pytest.approx(fx.live_score(ref_index, type_index, level))
        assert row.level == (0 if level == 0 else 1)
        assert row.direction == ds.LOWER_BETTER
    assert sum(r.level == 0 for r in rows) == 15


def test_live_realigned_and_drop_refs(live_root):
    truth = _live_truth(live_root)
    rows = ds.load_live(live_root / "databaserelease2", realigned=True, drop_refs=True)
    assert len(rows) == 5 * 3 * 2 and all(r.level == 1 for r in rows)
    for row in rows:
        ref_index, type_index, level = truth[row.path]
        assert row.score == pytest.approx(fx.live_score(ref_index, type_index, level, realigned=True))


def _copy_live(live_root: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(live_root, tmp_path / "live")) / "databaserelease2"


def test_live_missing_middle_image(live_root, tmp_path):
    base = _copy_live(live_root, tmp_path)
    (base / "jpeg" / "img2.bmp").unlink()
    with pytest.raises(InputError, match="img2.bmp is missing") as err:
        ds.load_live(base)
    assert err.value.path == str(base / "jpeg")


def test_live_image_listed_in_info_txt_missing(live_root, tmp_path):
    base = _copy_live(live_root, tmp_path)
    (base / "wn" / "img9.bmp").unlink()  # the last one: only info.txt still names it
    line = next(i for i, text in enumerate((base / "wn" / "info.txt").read_text().splitlines(), 1)
                if " img9.bmp " in text)
    with pytest.raises(InputError) as err:
        ds.load_live(base)
    assert err.value.path == str(base / "wn" / "info.txt") and err.value.line == line


def test_live_score_count_mismatch_and_nan(live_root, tmp_path):
    base = _copy_live(live_root, tmp_path)
    mat = scipy.io.loadmat(base / "dmos.mat")
    scipy.io.savemat(base / "dmos.mat", {"dmos": mat["dmos"][:, :-1], "orgs": mat["orgs"][:, :-1]})
    with pytest.raises(InputError, match="lengths differ"):
        ds.load_live(base)
    dmos = mat["dmos"].copy()
    dmos[0, 7] = np.nan
    scipy.io.savemat(base / "dmos.mat", {"dmos": dmos, "orgs": mat["orgs"]})
    with pytest.raises(InputError, match=r"dmos\(8\) is not a finite number"):
        ds.load_live(base)


# ----------------------------------------------------------------------------------------------
# CSIQ


@pytest.mark.parametrize("labels,layout", [("xlsx", "subfolders"), ("txt", "flat"), ("both", "flat")])
def test_csiq_label_files_and_layouts(tmp_path, labels, layout):
    root = fx.make_csiq(tmp_path / "csiq", n_refs=3, levels=3, labels=labels, layout=layout)
    if labels == "both":  # the published workbook wins over the text file
        (root / "csiq_label.txt").write_text("garbage\n")
    rows = ds.load_csiq(root)
    assert len(rows) == 3 * 6 * 3
    assert {r.reference for r in rows} == {"1600", "aerial_city", "boston"}
    assert {r.type for r in rows} == set(ds.CSIQ_TYPES)
    for row in rows:
        ref_index = fx.CSIQ_REFS.index(row.reference)
        type_index = ds.CSIQ_TYPES.index(row.type)
        assert row.score == pytest.approx(fx.csiq_score(ref_index, type_index, row.level))
        assert row.direction == ds.LOWER_BETTER
        assert Path(row.path).name == f"{row.reference}.{row.type}.{row.level}.png"
        assert Path(row.path).is_file()


def test_csiq_xlsx_bad_dmos_names_row(tmp_path):
    import openpyxl

    root = fx.make_csiq(tmp_path / "csiq", n_refs=2, levels=2)
    book = openpyxl.load_workbook(root / "csiq.DMOS.xlsx")
    book["all_by_image"].cell(row=7, column=9, value="n/a")  # column I = dmos
    book.save(root / "csiq.DMOS.xlsx")
    with pytest.raises(InputError, match="not a number") as err:
        ds.load_csiq(root)
    assert err.value.path == str(root / "csiq.DMOS.xlsx") and err.value.line == 7


def test_csiq_txt_missing_image_and_duplicate(tmp_path):
    root = fx.make_csiq(tmp_path / "csiq", n_refs=2, levels=2, labels="txt", layout="subfolders")
    (root / "dst_imgs" / "blur" / "aerial_city.BLUR.2.png").rename(tmp_path / "moved.png")
    with pytest.raises(InputError, match="missing") as err:
        ds.load_csiq(root)
    lines = (root / "csiq_label.txt").read_text().splitlines()
    assert err.value.line == lines.index(next(t for t in lines if t.startswith("aerial_city.BLUR.2 "))) + 1
    (tmp_path / "moved.png").rename(root / "dst_imgs" / "blur" / "aerial_city.BLUR.2.png")
    with open(root / "csiq_label.txt", "a") as handle:
        handle.write("1600.awgn.1 0.5\n")
    with pytest.raises(InputError, match="duplicate") as err:
        ds.load_csiq(root)
    assert err.value.line == len(lines) + 1


# ----------------------------------------------------------------------------------------------
# KADID-10k


@pytest.fixture(scope="module")
def kadid_root(tmp_path_factory) -> Path:
    return fx.make_kadid(tmp_path_factory.mktemp("kadid") / "kadid10k", n_refs=3, types=(1, 2, 11))


def test_kadid_rows(kadid_root):
    rows = ds.load_kadid(kadid_root)
    assert len(rows) == 3 * 3 * 5
    for row in rows:
        assert row.score == pytest.approx(fx.kadid_score(int(row.reference[1:]), int(row.type), row.level))
        assert row.direction == ds.HIGHER_BETTER and row.type in ds.KADID_TYPES
        assert Path(row.path).is_file()


@pytest.mark.parametrize("edit,line,message", [
    (lambda lines: lines.__setitem__(3, "I01_01_03.png,I01.png,high,0.2"), 4, "not a number"),
    (lambda lines: lines.append("I01_01_01.png,I01.png,3.0,0.2"), 47, "duplicate"),
    (lambda lines: lines.append("I09_01_01.png,I09.png,3.0,0.2"), 47, "missing"),
    (lambda lines: lines.__setitem__(2, "I01_01_02.png,I02.png,3.0,0.2"), 3, "does not match"),
    (lambda lines: lines.__setitem__(0, "image,reference,score"), 1, "header"),
])
def test_kadid_bad_input(kadid_root, tmp_path, edit, line, message):
    import shutil

    root = Path(shutil.copytree(kadid_root, tmp_path / "kadid"))
    lines = (root / "dmos.csv").read_text().splitlines()
    edit(lines)
    (root / "dmos.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=message) as err:
        ds.load_kadid(root)
    assert err.value.line == line and err.value.path == str(root / "dmos.csv")


# ----------------------------------------------------------------------------------------------
# wrong folders, registry, table files


def test_folder_of_another_dataset_is_refused(tid_root, kadid_root, live_root, tmp_path):
    with pytest.raises(InputError, match="not a TID2013 folder"):
        ds.load_tid2013(kadid_root)
    with pytest.raises(InputError, match="not a LIVE Release 2 folder"):
        ds.load_live(tid_root)
    with pytest.raises(InputError, match="not a CSIQ folder"):
        ds.load_csiq(live_root)
    with pytest.raises(InputError, match="not a KADID-10k folder"):
        ds.load_kadid(tid_root)
    with pytest.raises(InputError, match="folder not found"):
        ds.load_tid2013(tmp_path / "nowhere")


def test_registry():
    assert set(ds.DATASETS) == {"tid2013", "live", "csiq", "kadid", "mlive"}
    assert [len(ds.TYPE_CODES[n]) for n in ("tid2013", "live", "csiq", "kadid", "mlive")] == [24, 5, 6, 25, 2]
    assert ds.LIVE_TYPES == ("jp2k", "jpeg", "wn", "gblur", "fastfading")
    assert ds.DATASETS["tid2013"].direction == ds.HIGHER_BETTER
    assert ds.DATASETS["live"].direction == ds.LOWER_BETTER
    assert ds.DATASETS["csiq"].direction == ds.LOWER_BETTER
    assert ds.DATASETS["kadid"].direction == ds.HIGHER_BETTER
    assert ds.DATASETS["mlive"].direction == ds.LOWER_BETTER
    for info in ds.DATASETS.values():
        assert set(info.type_names) == set(info.types)
    with pytest.raises(InputError, match="unknown dataset"):
        ds.load_dataset("nosuch", "/tmp")


def test_table_round_trip(live_root, tmp_path):
    rows = ds.load_live(live_root)
    ds.write_table(tmp_path / "table.csv", rows)
    header = (tmp_path / "table.csv").read_text().splitlines()[0]
    assert header == ",".join(ds.TABLE_COLUMNS)
    back = ds.read_table(tmp_path / "table.csv", check_files=True)
    assert [(r.reference, r.type, r.level, r.path, r.direction, r.type_name) for r in back] == \
        [(r.reference, r.type, r.level, r.path, r.direction, r.type_name) for r in rows]
    assert all(math.isclose(a.score, b.score) for a, b in zip(back, rows, strict=True))
    lines = (tmp_path / "table.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",upwards"
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="direction") as err:
        ds.read_table(tmp_path / "table.csv")
    assert err.value.line == 4


def test_a_table_row_of_the_wrong_length_or_a_negative_level_is_named(live_root, tmp_path):
    ds.write_table(tmp_path / "table.csv", ds.load_live(live_root))
    good = (tmp_path / "table.csv").read_text().splitlines()
    for line, fragment in ((good[2].rsplit(",", 2)[0], "4 fields, expected 6"),
                           (good[2] + ",extra", "7 fields, expected 6"),
                           (good[2].replace(",1,", ",-1,", 1), "level -1 is negative")):
        (tmp_path / "bad.csv").write_text("\n".join([*good[:2], line]) + "\n")
        with pytest.raises(InputError, match=fragment) as err:
            ds.read_table(tmp_path / "bad.csv")
        assert err.value.line == 3


def test_the_evaluation_reads_the_columns_the_table_writer_writes(live_root, tmp_path):
    from rankiqa import evaluation

    rows = ds.load_live(live_root)
    ds.write_table(tmp_path / "table.csv", rows)
    samples, direction = evaluation.read_table(tmp_path / "table.csv")
    assert [s.path for s in samples] == [r.path for r in rows] and direction == rows[0].direction
    assert [s.line for s in samples] == list(range(2, 2 + len(rows)))  # the header is line 1


def _with_bom(path: Path) -> None:
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def _rows(rows: list) -> list[tuple]:
    """Rows without the folder they were read from (the copies live elsewhere)."""
    return [(r.reference, r.type, r.level, Path(r.path).name, r.score, r.direction) for r in rows]


def test_label_files_with_a_byte_order_mark_read_as_without(tid_root, live_root, tmp_path):
    import shutil

    tid = _copy_tid(tid_root, tmp_path)
    _with_bom(tid / "mos_with_names.txt")
    assert _rows(ds.load_tid2013(tid)) == _rows(ds.load_tid2013(tid_root))
    # the same file with tabs between the fields
    text = (tid / "mos_with_names.txt").read_text(encoding="utf-8")
    (tid / "mos_with_names.txt").write_text(text.replace(" ", "\t"), encoding="utf-8")
    assert _rows(ds.load_tid2013(tid)) == _rows(ds.load_tid2013(tid_root))

    csiq = fx.make_csiq(tmp_path / "csiq", labels="txt")
    expected = ds.load_csiq(csiq)
    _with_bom(csiq / "csiq_label.txt")
    assert ds.load_csiq(csiq) == expected

    live = Path(shutil.copytree(live_root, tmp_path / "live"))
    infos = sorted(live.rglob("info.txt"))
    assert infos
    for info in infos:
        _with_bom(info)
    assert _rows(ds.load_live(live)) == _rows(ds.load_live(live_root))

    rows = ds.load_tid2013(tid_root)
    ds.write_table(tmp_path / "table.csv", rows)
    _with_bom(tmp_path / "table.csv")
    assert _rows(ds.read_table(tmp_path / "table.csv")) == _rows(rows)


# ----------------------------------------------------------------------------------------------
# MLIVE


@pytest.fixture(scope="module")
def mlive_root(tmp_path_factory) -> Path:
    return fx.make_mlive(tmp_path_factory.mktemp("mlive") / "mlive", n_refs=3)


def _mlive_truth(name: str) -> tuple[int, int, int]:
    """(reference index, blur, second) of a fixture image from its file name ``<ref>_<b>_<s>.bmp``."""
    stem, blur, second = Path(name).stem.lower().split("_")
    return fx.MLIVE_REFNAMES.index(f"{stem}.bmp"), int(blur), int(second)


def test_mlive_both_parts_with_levels_scores_and_direction(mlive_root):
    rows = ds.load_mlive(mlive_root)
    assert len(rows) == 2 * 3 * 15
    assert [r.type for r in rows] == ["blurjpeg"] * 45 + ["blurnoise"] * 45
    for row in rows:
        ref_index, blur, second = _mlive_truth(Path(row.path).name)
        part_index = ds.MLIVE_TYPES.index(row.type)
        assert Path(row.path).is_file() and Path(row.path).parent.name == row.type
        # ref4dist points into refimgs (listed in reverse order): the reference is the image's own
        assert row.reference == Path(fx.MLIVE_REFNAMES[ref_index]).stem
        assert row.level == 10 * blur + second == ds.mlive_level(blur, second)
        assert row.score == pytest.approx(fx.mlive_score(ref_index, part_index, blur, second))
        assert row.direction == ds.LOWER_BETTER and row.type_name == ds.MLIVE_TYPE_NAMES[row.type]
    # both parts share the references, under one name
    by_part = {t: {r.reference for r in rows if r.type == t} for t in ds.MLIVE_TYPES}
    assert by_part["blurjpeg"] == by_part["blurnoise"] == {"babygirl", "bikes", "lighthouse"}
    assert any(Path(r.path).name.endswith(".BMP") for r in rows)  # found whatever the case on disk


def test_mlive_accepts_the_release_folders_and_part_names(mlive_root, tmp_path):
    expected = [(r.reference, r.type, r.level, r.score) for r in ds.load_mlive(mlive_root)]
    inner = mlive_root / "To_Release"
    assert [(r.reference, r.type, r.level, r.score) for r in ds.load_mlive(inner)] == expected
    wrapped = tmp_path / "data" / "LIVEmultidistortiondatabase"
    shutil.copytree(inner, wrapped / "To_Release")
    assert [(r.reference, r.type, r.level, r.score) for r in ds.load_mlive(tmp_path / "data")] == expected
    (wrapped / "To_Release" / "Part 1").rename(wrapped / "To_Release" / "Part1")
    (wrapped / "To_Release" / "Part 2").rename(wrapped / "To_Release" / "Part2")
    assert [(r.reference, r.type, r.level, r.score) for r in ds.load_mlive(wrapped)] == expected


def _copy_mlive(mlive_root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(mlive_root / "To_Release", tmp_path / "mlive"))


def test_mlive_missing_part_or_file(mlive_root, tmp_path):
    base = _copy_mlive(mlive_root, tmp_path)
    shutil.rmtree(base / "Part 2")
    with pytest.raises(InputError, match="missing Part 2/") as err:
        ds.load_mlive(base)
    assert err.value.path == str(base)
    (base / "Part 1" / "Scores.mat").unlink()
    with pytest.raises(InputError, match="missing Scores.mat"):
        ds.load_mlive(base)
    with pytest.raises(InputError, match="MLIVE folder not found"):
        ds.load_mlive(tmp_path / "nowhere")


def test_mlive_bad_mat_contents_name_the_file_and_entry(mlive_root, tmp_path):
    base = _copy_mlive(mlive_root, tmp_path)
    lists_path, scores_path = base / "Part 2" / "Imagelists.mat", base / "Part 2" / "Scores.mat"
    lists = scipy.io.loadmat(lists_path)
    scores = scipy.io.loadmat(scores_path)

    scipy.io.savemat(scores_path, {"DMOSscores": scores["DMOSscores"][:, :-1]})
    with pytest.raises(InputError, match="44 DMOSscores.*45 distimgs") as err:
        ds.load_mlive(base)
    assert err.value.path == str(lists_path)
    scipy.io.savemat(scores_path, {"DMOSscores": scores["DMOSscores"]})

    levels = lists["distimgdistlevels"].copy()
    levels[4, 1] = 4
    scipy.io.savemat(lists_path, {**_mat_vars(lists), "distimgdistlevels": levels})
    with pytest.raises(InputError, match=r"distimgdistlevels\(5,:\).*0-3") as err:
        ds.load_mlive(base)
    assert err.value.path == str(lists_path)

    ref4dist = lists["ref4dist"].copy()
    ref4dist[2, 0] = 9
    scipy.io.savemat(lists_path, {**_mat_vars(lists), "ref4dist": ref4dist})
    with pytest.raises(InputError, match=r"ref4dist\(3\) = 9.0 is not an index of refimgs \(1-3\)"):
        ds.load_mlive(base)

    scipy.io.savemat(lists_path, _mat_vars(lists))
    name = str(lists["distimgs"][6, 0][0])
    for found in (base / "Part 2" / "blurnoise").iterdir():
        if found.name.lower() == name.lower():
            found.unlink()
    with pytest.raises(InputError, match=f"image '{name}' listed here is missing from Part 2/blurnoise/") \
            as err:
        ds.load_mlive(base)
    assert (err.value.path, err.value.line) == (str(lists_path), 7)


def _mat_vars(mat: dict) -> dict:
    return {key: value for key, value in mat.items() if not key.startswith("__")}


def test_a_users_table_may_have_more_columns_and_paths_relative_to_its_folder(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"")
    table = tmp_path / "mine.csv"
    table.write_text("reference,type,level,path,score,direction,note\n"
                     "r,01,1,imgs/a.png,5.5,higher_better,seen twice\n")
    (row,) = ds.read_table(table, check_files=True)
    assert Path(row.path) == tmp_path / "imgs" / "a.png" and row.line == 2 and row.score == 5.5
    table.write_text("reference,type,level,path,score,direction\nr, 01, 1, imgs/a.png, 5.5, higher_better\n")
    (spaced,) = ds.read_table(table, check_files=True)  # as a person types a CSV: the spaces are not values
    assert (spaced.reference, spaced.type, spaced.path) == (row.reference, row.type, row.path)
    assert spaced.type_name == row.type_name
    table.write_text("reference,type,level,path,score,direction\nr,01,1, ,5.5,higher_better\n")
    with pytest.raises(InputError, match="empty path") as err:
        ds.read_table(table)
    assert err.value.line == 2
