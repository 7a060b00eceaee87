"""``make demo`` (tools/demo.py): the quick profile end to end, resuming, and the book-keeping helpers."""

from __future__ import annotations

import json
import math

import pytest

from rankiqa.errors import InputError
from tests.caffe_marks import needs_caffe
from tools import demo


def test_profiles_keep_ranking_and_finetuning_references_apart():
    for profile in (demo.full_profile(), demo.quick_profile()):
        assert profile.rank_refs and len(profile.ft_refs) >= 2
        assert not set(profile.rank_refs) & set(profile.ft_refs)
        assert not set(profile.types) & set(demo.EXCLUDED_TYPES)
    full = demo.full_profile()
    # every default image is used, alternately: no hand-picked assignment
    assert sorted(full.rank_refs + full.ft_refs) == demo.default_names()
    assert full.rank_refs == tuple(demo.default_names()[0::2])


def test_settings_pin_refuses_other_settings(tmp_path):
    demo.check_settings(tmp_path, {"seed": 0, "iters": 3})
    demo.check_settings(tmp_path, {"seed": 0, "iters": 3})  # same settings: accepted
    with pytest.raises(InputError, match="iters"):
        demo.check_settings(tmp_path, {"seed": 0, "iters": 4})


def test_verdict_and_table_follow_the_numbers():
    rows = [{"model": "RankIQA", "init": "a", "srocc": 0.2, "plcc": 0.1, "krocc": 0.1, "crops": 2,
             "n_images": 12},
            {"model": "RankIQA+FT", "init": "b", "srocc": -0.3, "plcc": 0.5, "krocc": 0.0, "crops": 2,
             "n_images": 12},
            {"model": "FT from scratch", "init": "c", "srocc": 0.6, "plcc": 0.4, "krocc": 0.3, "crops": 2,
             "n_images": 12}]
    assert demo.verdict(rows) == ("Order by SROCC on this run: FT from scratch (0.6000) > RankIQA (0.2000) > "
                                  "RankIQA+FT (-0.3000).")
    table = demo.table_markdown(rows)
    assert demo.STANDIN_LABEL in table
    assert "| RankIQA+FT | b | -0.3000 | 0.5000 | 0.0000 |" in table


def test_stage_times_keep_the_seconds_of_the_run_that_did_the_work(tmp_path):
    times = demo.StageTimes(tmp_path / "stages.json")
    times.record("ranks", 12.34, reused=False)
    again = demo.StageTimes(tmp_path / "stages.json")
    again.record("ranks", 0.01, reused=True)
    assert json.loads((tmp_path / "stages.json").read_text())["ranks"] == {"seconds": 12.3, "reused": True}


@needs_caffe
def test_quick_demo_end_to_end_and_resume(tmp_path, capsys):
    argv = ["--quick", "--out", str(tmp_path / "results"), "--data-dir", str(tmp_path / "data"),
            "--runs-dir", str(tmp_path / "runs"), "--seed", "0", "--jobs", "2"]
    assert demo.main(argv) == 0
    printed = capsys.readouterr().out
    summary_md = (tmp_path / "results" / "summary.md").read_text()
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())

    assert demo.STANDIN_LABEL in summary_md and summary["label"] == demo.STANDIN_LABEL
    assert [row["model"] for row in summary["rows"]] == ["RankIQA", "RankIQA+FT", "FT from scratch"]
    for row in summary["rows"]:
        assert math.isfinite(row["srocc"]) and math.isfinite(row["plcc"]), row
        assert -1.0 <= row["srocc"] <= 1.0 and -1.0 <= row["plcc"] <= 1.0
        assert f"| {row['model']} |" in summary_md and f"| {row['model']} |" in printed
        assert row["n_images"] == summary["rows"][0]["n_images"] > 0  # all three on the same test images
    assert summary["rows"][0]["output_blob"] == "fc8_m"
    # the held-out references were seen neither by the ranking stage nor by fine-tuning
    settings = summary["settings"]
    held_out = set(settings["ft_references"]["test"])
    assert held_out and not held_out & set(settings["ft_references"]["train"])
    assert not held_out & set(settings["rank_references"]["train"] + settings["rank_references"]["test"])
    for name in ("summary_bars.png", "loss_curves.png"):
        assert (tmp_path / "results" / name).stat().st_size > 0
    assert all(not stage["reused"] for stage in summary["stages"].values())

    # a rerun reuses every finished stage and reports the same numbers
    assert demo.main(argv) == 0
    again = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert all(stage["reused"] for stage in again["stages"].values())
    assert again["rows"] == summary["rows"]
    assert [s["seconds"] for s in again["stages"].values()] == [
        s["seconds"] for s in summary["stages"].values()]


def test_other_settings_in_the_same_folders_are_refused(tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    profile = demo.quick_profile()
    folder = f"{profile.name}-seed0"
    demo.check_settings(data / folder, {"profile": {"changed": True}, "seed": 0})
    with pytest.raises(InputError, match="other settings"):
        demo.run_demo(profile, tmp_path / "out", data, runs, seed=0)
    assert not (tmp_path / "out" / "summary.json").exists()


def test_help_runs_without_caffe(capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "synthetic" in capsys.readouterr().out.lower()


class _FakeProcess:
    """Stands in for subprocess.Popen: exits with ``code``; ``interrupted``: the first wait sees Ctrl-C."""

    def __init__(self, code: int, interrupted: bool = False) -> None:
        self.code, self.interrupted, self.waits, self.killed = code, interrupted, 0, False

    def __call__(self, *args, **kwargs) -> _FakeProcess:
        return self

    def wait(self, timeout: float | None = None) -> int:
        self.waits += 1
        if self.interrupted and self.waits == 1:
            raise KeyboardInterrupt
        return self.code

    def kill(self) -> None:
        self.killed = True


def test_run_failure_is_reported_as_a_failed_stage(monkeypatch):
    monkeypatch.setattr(demo.subprocess, "Popen", _FakeProcess(2))
    with pytest.raises(demo.StageFailed, match="train_rank"):
        demo._run("train_rank", ["python", "-m", "tools.train"])
    monkeypatch.setattr(demo.subprocess, "Popen", _FakeProcess(130))
    with pytest.raises(KeyboardInterrupt):
        demo._run("train_rank", ["python", "-m", "tools.train"])


def test_ctrl_c_lets_the_child_snapshot_instead_of_killing_it(monkeypatch):
    child = _FakeProcess(130, interrupted=True)
    monkeypatch.setattr(demo.subprocess, "Popen", child)
    with pytest.raises(KeyboardInterrupt):
        demo._run("train_rank", ["python", "-m", "tools.train"])
    assert child.waits == 2 and not child.killed
