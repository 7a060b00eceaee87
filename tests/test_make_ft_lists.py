"""Fine-tuning lists: files as docs/DESIGN.md says, seeded reference-disjoint splits, bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from data_prep import make_ft_lists as mfl
from data_prep.datasets import TABLE_COLUMNS, read_table
from rankiqa.errors import InputError
from rankiqa.lists import read_list
from tests import iqa_fixtures as fx


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
        mfl.main(["--dataset", "mlive", "--data", str(kadid_root), "--out", str(out)])


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
