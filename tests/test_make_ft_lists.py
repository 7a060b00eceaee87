"""Fine-tuning lists: files as docs/DESIGN.md says, seeded reference-disjoint splits, bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from data_prep import make_ft_lists as mfl
from data_prep.datasets import TABLE_COLUMNS, read_table
from rankiqa.errors import InputError
from rankiqa.fsutil import StorageError
from rankiqa.lists import read_list
from tests import iqa_fixtures as fx
from tests.small_fs import remount, small_fs


@pytest.fixture(scope="module")
def tid_root(tmp_path_factory) -> Path:
    return fx.make_tid2013(tmp_path_factory.mktemp("tid") / "tid2013", n_refs=6, types=(1, 8), levels=2)


@pytest.fixture(scope="module")
def kadid_root(tmp_path_factory) -> Path:
    return fx.make_kadid(tmp_path_factory.mktemp("kadid") / "kadid", n_refs=10, types=(1,), levels=2)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_files_and_reference_disjoint_splits(kadid_root, tmp_path):
    out = tmp_path / "ft"
    summary = mfl.make_lists("kadid", kadid_root, out, splits=4, seed=0, test_fraction=0.2)
    assert len(summary) == 4
    table = read_table(out / "table.csv", check_files=True)
    assert len(table) == 20
    assert (out / "table.csv").read_text().splitlines()[0] == ",".join(TABLE_COLUMNS)
    ref_of = {row.path: row.reference for row in table}
    score_of = {row.path: row.score for row in table}
    test_sets = []
    for k in range(4):
        split = out / f"split{k}"
        train = read_list(split / "train.txt")
        test = read_list(split / "test.txt")
        assert all(Path(p).is_absolute() for p, _ in train + test)
        assert all(score_of[p] == pytest.approx(v) for p, v in train + test)
        train_refs = {ref_of[p] for p, _ in train}
        test_refs = {ref_of[p] for p, _ in test}
        assert not train_refs & test_refs  # no reference in both halves
        assert len(test_refs) == 2 and len(train_refs) == 8  # 20% of 10 references
        assert sorted(p for p, _ in train + test) == sorted(ref_of)  # every image in one half
        test_rows = read_table(split / "test.csv")
        assert [r.path for r in test_rows] == [p for p, _ in test]
        assert summary[k]["test_images"] == len(test) and summary[k]["train_refs"] == 8
        test_sets.append(frozenset(test_refs))
    assert len(set(test_sets)) > 1  # the splits are drawn independently
    assert not list(out.rglob("*.tmp*"))


def test_same_seed_same_bytes_other_seed_other_split(tid_root, tmp_path):
    mfl.make_lists("tid2013", tid_root, tmp_path / "a", splits=3, seed=7)
    mfl.make_lists("tid2013", tid_root, tmp_path / "b", splits=3, seed=7)
    assert _snapshot(tmp_path / "a") == _snapshot(tmp_path / "b")
    draws = {tuple(mfl.split_references([f"r{i}" for i in range(20)], 0, seed)[1]) for seed in range(5)}
    assert len(draws) > 1


def test_original_proportions():
    tid_refs = [f"I{i:02d}" for i in range(1, 25)]
    train, test = mfl.split_references(tid_refs, 0, seed=0)
    assert (len(train), len(test)) == (19, 5) and not set(train) & set(test)
    train, test = mfl.split_references([f"ref{i}" for i in range(29)], 3, seed=1)
    assert (len(train), len(test)) == (23, 6)
    # row order must not matter, only the set of references
    assert mfl.split_references(list(reversed(tid_refs)) * 2, 2, 5) == mfl.split_references(tid_refs, 2, 5)


def test_cli_live_options(tmp_path, capsys):
    root = fx.make_live(tmp_path / "live", n_refs=3, distorted_per_ref=1)
    out = tmp_path / "ft_live"
    code = mfl.main(["--dataset", "live", "--data", str(root), "--out", str(out), "--splits", "2",
                     "--seed", "0", "--test-fraction", "0.34", "--live-drop-refs"])
    assert code == 0
    assert "split1" in capsys.readouterr().out
    with open(out / "table.csv", newline="") as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == 5 * 3 and {r["direction"] for r in records} == {"lower_better"}
    assert all(r["level"] == "1" for r in records)  # reference copies dropped
    assert len(read_list(out / "split1" / "test.txt")) == 5  # 1 of 3 references x 5 types


def test_cli_bad_input_exit_2_and_no_output(tid_root, tmp_path, capsys):
    import shutil

    root = Path(shutil.copytree(tid_root, tmp_path / "tid"))
    lines = (root / "mos_with_names.txt").read_text().splitlines()
    lines[5] = "x" + lines[5]
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    code = mfl.main(["--dataset", "tid2013", "--data", str(root), "--out", str(out)])
    assert code == 2
    assert f"error: {root / 'mos_with_names.txt'}:6:" in capsys.readouterr().err
    assert not out.exists()


def test_cli_option_for_another_dataset_and_bad_numbers(kadid_root, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--dataset", "kadid", "--data", str(kadid_root), "--out", str(out)]
    assert mfl.main(base + ["--live-realigned"]) == 2
    assert "apply to live only" in capsys.readouterr().err
    assert mfl.main(base + ["--splits", "0"]) == 2
    assert mfl.main(base + ["--test-fraction", "1.0"]) == 2
    assert not out.exists()
    with pytest.raises(SystemExit):
        mfl.main(["--dataset", "nosuch", "--data", str(kadid_root), "--out", str(out)])


def test_single_reference_cannot_be_split(tmp_path):
    root = fx.make_kadid(tmp_path / "kadid", n_refs=1, types=(1,), levels=2)
    with pytest.raises(InputError, match="at least 2 reference"):
        mfl.make_lists("kadid", root, tmp_path / "out")


def test_types_keep_the_papers_four_csiq_types(tmp_path: Path) -> None:
    root = fx.make_csiq(tmp_path / "csiq")
    mfl.make_lists("csiq", root, tmp_path / "all")
    mfl.make_lists("csiq", root, tmp_path / "paper", types=list(mfl.PAPER_CSIQ_TYPES))
    every = {row.type for row in read_table(tmp_path / "all" / "table.csv")}
    kept = {row.type for row in read_table(tmp_path / "paper" / "table.csv")}
    assert kept == set(mfl.PAPER_CSIQ_TYPES) & every and kept < every
    assert mfl.main(["--dataset", "csiq", "--data", str(root), "--out", str(tmp_path / "cli"),
                     "--types", "paper"]) == 0
    assert {row.type for row in read_table(tmp_path / "cli" / "table.csv")} == kept
    with pytest.raises(InputError, match="unknown csiq type code"):
        mfl.make_lists("csiq", root, tmp_path / "bad", types=["GB"])
    assert mfl.main(["--dataset", "tid2013", "--data", str(root), "--out", str(tmp_path / "x"),
                     "--types", "paper"]) == 2


def test_a_negative_seed_is_refused_before_anything_is_written(kadid_root, tmp_path):
    with pytest.raises(InputError, match="--seed must be >= 0, got -1"):
        mfl.make_lists("kadid", kadid_root, tmp_path / "ft", seed=-1)
    assert not (tmp_path / "ft").exists()


# ----------------------------------------------------------------------------------------------
# What the lists were made from (.make_ft_lists.json)


def _copy(root: Path, to: Path) -> Path:
    import shutil

    return Path(shutil.copytree(root, to))


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_lists_of_another_data_folder_are_rebuilt_not_reused(tid_root, tmp_path, capsys):
    """The same other variables with DATA=B after DATA=A: B's lists, and a message saying so."""
    data_a = _copy(tid_root, tmp_path / "A")
    data_b = _copy(tid_root, tmp_path / "B")
    out = tmp_path / "ft"
    args = ["--dataset", "tid2013", "--out", str(out), "--splits", "1"]
    assert mfl.main([*args, "--data", str(data_a)]) == 0
    capsys.readouterr()
    assert mfl.main([*args, "--data", str(data_b)]) == 0
    err = capsys.readouterr().err
    assert f"{out}: rebuilding the lists: data: '{data_a.resolve()}' -> '{data_b.resolve()}'" in err
    listed = [p for p, _ in read_list(out / "split0" / "test.txt")]
    assert listed and all(p.startswith(str(data_b.resolve())) for p in listed)
    assert all(r.path.startswith(str(data_b.resolve())) for r in read_table(out / "table.csv"))

    # Asked again with nothing changed: up to date, nothing rewritten.
    before = _mtimes(out)
    assert mfl.main([*args, "--data", str(data_b)]) == 0
    assert f"{out}: up to date, made from {data_b.resolve()}" in capsys.readouterr().err
    assert _mtimes(out) == before


def test_changed_files_of_the_data_folder_are_named_and_rebuild_the_lists(tid_root, tmp_path, capsys):
    import os

    data = _copy(tid_root, tmp_path / "tid")
    out = tmp_path / "ft"
    mfl.make_lists("tid2013", data, out)
    labels = data / "mos_with_names.txt"
    # Touched without a change (a copy, a restore): still up to date, by the content hash of the labels.
    os.utime(labels, ns=(1, 1))
    mfl.make_lists("tid2013", data, out)
    assert "up to date" in capsys.readouterr().err
    # New scores: rebuilt, the file named, and the lists carry the new scores.
    lines = labels.read_text().splitlines()
    lines[0] = "8.88888 " + lines[0].split()[1]
    labels.write_text("\n".join(lines) + "\n")
    mfl.make_lists("tid2013", data, out)
    err = capsys.readouterr().err
    assert "rebuilding the lists: files of" in err and "1 modified (mos_with_names.txt)" in err
    assert 8.88888 in {row.score for row in read_table(out / "table.csv")}
    # An image replaced in place (same name): rebuilt, the image named.
    image = sorted((data / "distorted_images").iterdir())[3]
    image.write_bytes(image.read_bytes() + b"\0")
    mfl.make_lists("tid2013", data, out)
    assert f"1 modified (distorted_images/{image.name})" in capsys.readouterr().err


def test_fewer_splits_remove_the_old_ones_and_a_missing_data_folder_keeps_the_lists(kadid_root, tmp_path,
                                                                                   capsys):
    data = _copy(kadid_root, tmp_path / "kadid")
    out = tmp_path / "ft"
    mfl.make_lists("kadid", data, out, splits=3)
    mfl.make_lists("kadid", data, out, splits=1)
    assert "splits: 3 -> 1" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".make_ft_lists.json", "split0", "table.csv"]
    data.rename(tmp_path / "moved")
    before = _mtimes(out)
    assert mfl.make_lists("kadid", data, out, splits=1)[0]["split"] == 0
    assert f"({data} is not there: the lists are kept as they are)" in capsys.readouterr().err
    assert _mtimes(out) == before


def test_lists_made_by_hand_or_edited_are_never_overwritten(kadid_root, tmp_path, capsys):
    hand = tmp_path / "hand"
    (hand / "split0").mkdir(parents=True)
    (hand / "split0" / "train.txt").write_text("/my/a.png 1\n")
    with pytest.raises(InputError, match="holds lists that make_ft_lists did not make"):
        mfl.make_lists("kadid", kadid_root, hand)
    assert (hand / "split0" / "train.txt").read_text() == "/my/a.png 1\n"

    out = tmp_path / "ft"
    mfl.make_lists("kadid", kadid_root, out, seed=0)
    edited = out / "split0" / "train.txt"
    edited.write_text(edited.read_text() + "/my/extra.png 3\n")
    mfl.make_lists("kadid", kadid_root, out, seed=0)  # nothing to rebuild: the edit stays, with a note
    assert "split0/train.txt changed since make_ft_lists wrote them" in capsys.readouterr().err
    with pytest.raises(InputError, match=r"not overwritten \(needed: seed: 0 -> 1\)"):
        mfl.make_lists("kadid", kadid_root, out, seed=1)
    assert edited.read_text().endswith("/my/extra.png 3\n")


def test_lists_of_an_earlier_version_without_a_record_are_rebuilt(kadid_root, tmp_path, capsys):
    out = tmp_path / "ft"
    mfl.make_lists("kadid", kadid_root, out)
    (out / mfl.STAMP).unlink()
    mfl.make_lists("kadid", kadid_root, out)
    assert "no record of what made these lists (an earlier version): rebuilt" in capsys.readouterr().err
    assert (out / mfl.STAMP).is_file()


def test_lists_on_a_full_disk_name_the_file_and_the_rerun_completes(kadid_root, tmp_path):
    expected = tmp_path / "expected"
    mfl.make_lists("kadid", kadid_root, expected, splits=4, seed=0)
    with small_fs(tmp_path / "fs", 12 << 10) as fs:  # three 4 KiB pages: table.csv and two of the lists
        out = fs / "ft"
        with pytest.raises(StorageError) as caught:
            mfl.make_lists("kadid", kadid_root, out, splits=4, seed=0)
        assert Path(caught.value.path).name in ("train.txt", "test.txt", "test.csv")
        assert "No space left on device" in str(caught.value)
        assert not list(out.rglob("*.tmp*"))
        remount(fs, "size=1M")
        mfl.make_lists("kadid", kadid_root, out, splits=4, seed=0)
        assert _snapshot(out) == _snapshot(expected)


@pytest.fixture(scope="module")
def tid24_root(tmp_path_factory) -> Path:
    """All 24 natural TID2013 references (one type, one level each) and the synthetic 25."""
    return fx.make_tid2013(tmp_path_factory.mktemp("tid24") / "tid2013", n_refs=24, types=(1,), levels=1,
                           size=16)


def test_original_split_is_the_released_test_list(tid24_root, tmp_path, capsys):
    # The original's released ft_tid2013_test.txt holds references I04, I11, I13, I17, I19; the other 19 of
    # I01-I24 train.
    out = tmp_path / "ft"
    assert mfl.main(["--dataset", "tid2013", "--data", str(tid24_root), "--out", str(out),
                     "--original-split"]) == 0
    assert "splitoriginal: train 19 images (19 refs), test 5 images (5 refs)" in capsys.readouterr().out
    ref_of = {row.path: row.reference for row in read_table(out / "table.csv")}
    test_refs = {ref_of[p] for p, _ in read_list(out / "splitoriginal" / "test.txt")}
    train_refs = {ref_of[p] for p, _ in read_list(out / "splitoriginal" / "train.txt")}
    assert test_refs == {"I04", "I11", "I13", "I17", "I19"}
    assert train_refs == {f"I{i:02d}" for i in range(1, 25)} - test_refs  # i25 stays out, as the original
    assert {row.reference for row in read_table(out / "splitoriginal" / "test.csv")} == test_refs
    assert (out / "split0" / "test.txt").is_file()  # the random splits are still written
    # The lists record the choice: a rerun without it rebuilds them and removes splitoriginal/.
    mfl.make_lists("tid2013", tid24_root, out)
    assert not (out / "splitoriginal").exists() and (out / "split0" / "test.txt").is_file()


def test_original_split_refused_where_unknown_or_incomplete(tid24_root, tid_root, tmp_path, capsys):
    live = fx.make_live(tmp_path / "live", n_refs=3, distorted_per_ref=1)
    out = tmp_path / "out"
    assert mfl.main(["--dataset", "live", "--data", str(live), "--out", str(out), "--original-split"]) == 2
    assert "the original's split is known for tid2013 only" in capsys.readouterr().err
    assert mfl.main(["--dataset", "tid2013", "--data", str(tid24_root), "--out", str(out),
                     "--original-split", "--include-synthetic-ref"]) == 2
    assert "I01-I24" in capsys.readouterr().err
    with pytest.raises(InputError, match="test reference\\(s\\) I11, I13, I17, I19 are not in"):
        mfl.make_lists("tid2013", tid_root, out, original=True)  # references I01-I06 only
    assert not out.exists()


def test_scores_are_written_with_the_originals_two_decimals(tid_root, tmp_path):
    import shutil

    root = Path(shutil.copytree(tid_root, tmp_path / "tid"))
    label = root / "mos_with_names.txt"
    lines = label.read_text().splitlines()
    # MOS with five decimals, as TID2013 publishes them; 4.12345 -> 4.12, 5.98765 -> 5.99
    lines[0] = "4.12345 " + lines[0].split()[1]
    lines[1] = "5.98765 " + lines[1].split()[1]
    label.write_text("\n".join(lines) + "\n")
    first, second = (root / "distorted_images" / line.split()[1] for line in lines[:2])
    out = tmp_path / "ft"
    mfl.make_lists("tid2013", root, out, splits=2, seed=1)
    written = {}
    for k in range(2):
        for part in ("train", "test"):
            for line in (out / f"split{k}" / f"{part}.txt").read_text().splitlines():
                path, value = line.rsplit(" ", 1)
                assert len(value.split(".")[1]) == 2, line  # every value '%.2f', integers too
                written[path.lower()] = value
    assert (written[str(first).lower()], written[str(second).lower()]) == ("4.12", "5.99")
    for k in range(2):  # test.csv, the evaluation's ground truth, holds the test list's scores
        for row in read_table(out / f"split{k}" / "test.csv"):
            assert row.score == float(written[row.path.lower()])
    table = {row.path.lower(): row.score for row in read_table(out / "table.csv")}
    assert table[str(first).lower()] == 4.12345  # table.csv keeps the published value
    mfl.make_lists("tid2013", root, tmp_path / "full", score_decimals="full")
    full = dict((p.lower(), v) for p, v in read_list(tmp_path / "full" / "split0" / "train.txt")
                + read_list(tmp_path / "full" / "split0" / "test.txt"))
    assert full[str(first).lower()] == 4.12345
    # CSIQ (no list of the original; DMOS in 0-1) keeps the published values by default.
    csiq = fx.make_csiq(tmp_path / "csiq")
    mfl.make_lists("csiq", csiq, tmp_path / "csiq_ft")
    scores = {v for p, v in read_list(tmp_path / "csiq_ft" / "split0" / "train.txt")}
    assert any(round(v, 2) != v for v in scores)


def test_mlive_lists_split_by_reference_across_both_parts(tmp_path):
    root = fx.make_mlive(tmp_path / "mlive", n_refs=5)
    out = tmp_path / "ft"
    assert mfl.main(["--dataset", "mlive", "--data", str(root), "--out", str(out), "--splits", "3"]) == 0
    table = read_table(out / "table.csv", check_files=True)
    assert len(table) == 2 * 5 * 15 and {r.direction for r in table} == {"lower_better"}
    ref_of = {row.path: row.reference for row in table}
    for k in range(3):
        test = [p for p, _ in read_list(out / f"split{k}" / "test.txt")]
        train = [p for p, _ in read_list(out / f"split{k}" / "train.txt")]
        test_refs = {ref_of[p] for p in test}
        assert len(test_refs) == 1 and not test_refs & {ref_of[p] for p in train}  # 20% of 5 references
        # every image of the test reference, from both parts, is in the test half
        assert sorted(test) == sorted(r.path for r in table if r.reference in test_refs)
        assert {r.type for r in read_table(out / f"split{k}" / "test.csv")} == {"blurjpeg", "blurnoise"}
