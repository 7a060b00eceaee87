"""rankiqa.snapshots: snapshot files by iteration (weights loading and resume: tests/test_train.py)."""

from __future__ import annotations

from pathlib import Path

from rankiqa import snapshots


def test_snapshots_are_ordered_by_iteration(tmp_path):
    for it in (500, 1500, 1000):
        (tmp_path / f"run_iter_{it}.caffemodel").write_bytes(b"")
    (tmp_path / "notes_iter_x.caffemodel").write_bytes(b"")
    assert [p.name for p in snapshots.snapshots(tmp_path, "caffemodel")] == [
        "run_iter_1500.caffemodel", "run_iter_1000.caffemodel", "run_iter_500.caffemodel"]
    assert snapshots.snapshot_iteration(Path("a_iter_12.solverstate")) == 12
