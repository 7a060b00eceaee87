"""``make demo`` (tools/demo.py over rankiqa/demo_setup.py and rankiqa/demo_report.py): the quick profile end
to end, resuming, and the book-keeping helpers."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from rankiqa import demo_report, demo_setup
from rankiqa.errors import InputError
from tests.caffe_marks import needs_caffe
from tools import demo


def test_profiles_keep_ranking_and_finetuning_references_apart():
    names = demo_setup.default_names()
    for profile in (demo_setup.full_profile(names), demo_setup.quick_profile(names)):
        assert profile.rank_refs and len(profile.ft_refs) >= 3
        assert not set(profile.rank_refs) & set(profile.ft_refs)
        assert not set(profile.types) & set(demo_setup.EXCLUDED_TYPES)
        assert demo_setup.MIN_TEST_REFS <= profile.ft_test_refs < len(profile.ft_refs)
    full = demo_setup.full_profile(names)
    # every default image is used, alternately: no hand-picked assignment
    assert sorted(full.rank_refs + full.ft_refs) == names
    assert full.rank_refs == tuple(names[0::2])
    assert "HFN" not in full.types and "HFN" in full.ft_types  # as the original's lists; TID2013 rates it
    assert set(full.types) < set(full.ft_types)


def test_test_reference_count_keeps_two_held_out_and_one_to_train():
    assert [demo_setup.test_reference_count(n) for n in (3, 4, 5, 6, 9)] == [2, 2, 2, 3, 4]


def test_a_folder_needs_six_usable_photographs(tmp_path):
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for k in range(5):
        cv2.imwrite(str(tmp_path / f"p{k}.png"), rng.integers(0, 256, (240, 250, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "small.png"), rng.integers(0, 256, (100, 300, 3), dtype=np.uint8))
    warnings: list[str] = []
    with pytest.raises(InputError, match="at least 6 usable") as info:
        demo_setup.resolve_photos(str(tmp_path), warn=warnings.append)
    assert str(tmp_path) in str(info.value)
    assert any("small.png" in w for w in warnings)
    cv2.imwrite(str(tmp_path / "p5.png"), rng.integers(0, 256, (240, 250, 3), dtype=np.uint8))
    photos = demo_setup.resolve_photos(str(tmp_path), warn=warnings.append)
    assert sorted(photos.sources) == [f"p{k}" for k in range(6)]
    assert photos.tag.startswith(tmp_path.name + "-")
    # a changed folder is another photo set (other stage folders), never a silent reuse
    cv2.imwrite(str(tmp_path / "p6.png"), rng.integers(0, 256, (240, 250, 3), dtype=np.uint8))
    assert demo_setup.resolve_photos(str(tmp_path), warn=warnings.append).tag != photos.tag


def test_demo_images_are_png_with_a_shorter_side_of_at_most_256(tmp_path):
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for name, shape in (("big.jpg", (600, 900, 3)), ("small.png", (240, 300, 3))):
        cv2.imwrite(str(tmp_path / name), rng.integers(0, 256, shape, dtype=np.uint8))
    big = cv2.imdecode(np.frombuffer(demo.demo_image(tmp_path / "big.jpg"), np.uint8), cv2.IMREAD_UNCHANGED)
    assert big.shape == (demo_setup.SHORT_SIDE, 384, 3)
    small_bytes = demo.demo_image(tmp_path / "small.png")
    small = cv2.imdecode(np.frombuffer(small_bytes, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(small, cv2.imread(str(tmp_path / "small.png")))  # not resized, pixels kept


def test_seeds_are_parsed_strictly():
    assert demo.parse_seeds("0,1,2") == [0, 1, 2]
    for bad in ("", "a", "1,1", "-1", "0,,1", "0,1,"):
        with pytest.raises(InputError):
            demo.parse_seeds(bad)


def test_settings_pin_refuses_other_settings(tmp_path):
    demo_setup.check_settings(tmp_path, {"seed": 0, "iters": 3})
    demo_setup.check_settings(tmp_path, {"seed": 0, "iters": 3})  # same settings: accepted
    with pytest.raises(InputError, match="iters"):
        demo_setup.check_settings(tmp_path, {"seed": 0, "iters": 4})


def _rows(seed, rank, ft, scratch):
    return [{"seed": seed, "model": m, "srocc": v[0], "plcc": v[1], "krocc": 0.0, "n_images": 136,
             "within_reference_srocc": v[0] + 0.1, "within_reference_plcc": v[1] - 0.1}
            for m, v in zip(demo_report.MODEL_LABELS, (rank, ft, scratch), strict=True)]


def test_claim_checks_and_tables_follow_the_numbers():
    good = {"GN": 1.0, "JPEG": 0.5, "overall": 0.9}
    rows0 = _rows(0, (0.5, 0.8), (0.7, 0.9), (0.4, 0.6))
    rows1 = _rows(1, (0.5, 0.8), (0.45, 0.9), (0.6, 0.6))
    checks0 = demo_report.claim_checks(rows0, good)
    assert all(checks0.values())
    checks1 = demo_report.claim_checks(rows1, {"GN": 1.0, "JPEG": 0.4, "overall": 0.9})
    assert not checks1["RankIQA+FT > FT from scratch (SROCC)"]
    assert checks1["RankIQA+FT > FT from scratch (PLCC)"]
    assert not checks1["RankIQA+FT >= RankIQA (SROCC)"]
    assert not checks1["ranking accuracy of every type >= 0.5"]
    assert checks1["ranking accuracy overall >= 0.85"]
    text = demo_report.verdict(rows0 + rows1, {0: checks0, 1: checks1})
    assert "- RankIQA+FT > FT from scratch (SROCC): does NOT hold for seed(s) 1" in text
    values = {0: demo_report.claim_values(rows0, good),
              1: demo_report.claim_values(rows1, {"GN": 1.0, "JPEG": 0.4, "overall": 0.9})}
    text = demo_report.verdict(rows0 + rows1, {0: checks0, 1: checks1}, values)
    assert ("- RankIQA+FT > FT from scratch (SROCC): does NOT hold for seed(s) 1 (seed 1: 0.4500 against "
            "0.6000)") in text
    assert ("- ranking accuracy of every type >= 0.5: does NOT hold for seed(s) 1 (seed 1: lowest JPEG "
            "0.4000)") in text
    assert "- RankIQA+FT > FT from scratch (PLCC): holds for every seed" in text
    table = demo_report.table_markdown(rows0 + rows1)
    assert "| RankIQA+FT | 0.575 ± 0.177 | 0.900 ± 0.000 | 0.700 / 0.900 | 0.450 / 0.900 |" in table
    within = demo_report.table_markdown(rows0 + rows1, "within_reference_")
    assert "| RankIQA+FT | 0.675 ± 0.177 | 0.800 ± 0.000 | 0.800 / 0.800 | 0.550 / 0.800 |" in within
    one_seed = demo_report.table_markdown(rows1)
    assert "| model (seed 1) | SROCC | PLCC |" in one_seed and "±" not in one_seed
    assert "| RankIQA+FT | 0.450 | 0.900 |" in one_seed
    acc = demo_report.accuracy_markdown({"0": good, "1": {"GN": 0.8, "JPEG": 0.6, "overall": 0.7}})
    assert "| JPEG | 0.500 | 0.600 | 0.550 |" in acc
    assert acc.strip().endswith("| **overall** | 0.900 | 0.700 | 0.800 |")


def _per_image(folder: Path, rows: list[tuple[str, float, float]]) -> None:
    folder.mkdir(parents=True)
    lines = ["path,reference,type,level,ground_truth,pred_mean,pred_median"]
    lines += [f"{path},r,GN,1,{float(truth)!r},{float(pred)!r},{float(pred)!r}" for path, truth, pred in rows]
    (folder / "per_image.csv").write_text("\n".join(lines) + "\n")


def test_each_comparison_of_the_claim_gets_a_paired_bootstrap_interval(tmp_path):
    paths = demo_setup.Paths(data=tmp_path / "data", runs=tmp_path / "runs", out=tmp_path / "out")
    rng = np.random.default_rng(0)
    truth = rng.uniform(size=30)
    images = [f"/i/{k}.png" for k in range(30)]
    noise = {"rankiqa": 0.3, "rankiqa_ft": 0.05, "ft_scratch": 2.0}
    for key, scale in noise.items():  # written in another order for each model: matched by path
        rows = [(img, t, t + scale * rng.normal()) for img, t in zip(images, truth, strict=True)]
        _per_image(paths.evaluation(key), rows[::-1] if key == "rankiqa" else rows)
    intervals = demo_report.comparison_intervals(paths, seed=0)
    assert list(intervals) == [demo_report.comparison_name(*c) for c in demo_report.CLAIM_COMPARISONS]
    versus_scratch = intervals["RankIQA+FT > FT from scratch (SROCC)"]
    assert 0.0 < versus_scratch["low"] <= versus_scratch["difference"] <= versus_scratch["high"]
    table = demo_report.intervals_markdown({0: intervals})
    assert "| seed | difference | SROCC (95% interval) | PLCC (95% interval) |" in table
    row = next(line for line in table.splitlines() if line.startswith("| 0 | RankIQA+FT − FT from scratch |"))
    assert f"{versus_scratch['difference']:+.3f} ({versus_scratch['low']:+.3f} to " in row
    elsewhere = paths.evaluation("rankiqa") / "elsewhere"
    _per_image(elsewhere, [(f"/other{k}.png", 0.5, k) for k in range(3)])
    (paths.evaluation("rankiqa") / "per_image.csv").write_text((elsewhere / "per_image.csv").read_text())
    with pytest.raises(InputError, match="scored different images"):
        demo_report.comparison_intervals(paths, seed=0)
    relabelled = [(img, t + 1.0, t) for img, t in zip(images, truth, strict=True)]  # other labels
    _per_image(elsewhere / "relabelled", relabelled)
    (paths.evaluation("rankiqa") / "per_image.csv").write_text(
        (elsewhere / "relabelled" / "per_image.csv").read_text())
    with pytest.raises(InputError, match="or labels"):
        demo_report.comparison_intervals(paths, seed=0)
    _per_image(elsewhere / "twice", [("/other.png", 0.5, 0.5)] * 3)
    twice = (elsewhere / "twice" / "per_image.csv").read_text()
    (paths.evaluation("rankiqa") / "per_image.csv").write_text(twice)
    with pytest.raises(InputError, match="image listed twice: /other.png"):
        demo_report.comparison_intervals(paths, seed=0)


def _demo_paths(tmp_path: Path) -> demo_setup.Paths:
    return demo_setup.Paths(data=tmp_path / "data", runs=tmp_path / "runs", out=tmp_path / "out")


def _quick_profile() -> demo_setup.Profile:
    return demo_setup.quick_profile(demo_setup.default_names())


def _first_weights(model: Path) -> Path:
    """A stand-in model file at ``model`` (its bytes are all a stage's record looks at)."""
    model.parent.mkdir(parents=True)
    model.write_bytes(b"the first run's weights")
    return model


def test_an_evaluation_is_redone_when_what_it_was_made_from_changed(tmp_path):
    from rankiqa import evaluation
    from tools import evaluate

    paths, profile = _demo_paths(tmp_path), _quick_profile()
    model = _first_weights(paths.run("ft_rankiqa") / "snapshots" / "ft_iter_10.caffemodel")
    image = paths.synthetic / "i.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"pixels")
    table = paths.ft_lists / "test.csv"
    table.parent.mkdir(parents=True)
    table.write_text(f"reference,type,level,path,score,direction\nr,GN,1,{image},0.5,higher_better\n")
    argv = demo.evaluate_argv("rankiqa_ft", "ft_deploy.prototxt", model, profile, paths, seed=0)
    needs = ("within_reference",)
    assert not demo.evaluation_current(argv, needs)  # nothing there yet

    def write_report(**extra) -> None:  # as tools.evaluate would, with these arguments
        args = evaluate.build_parser().parse_args(argv)
        samples, _ = evaluation.read_samples(args.table)
        report = {"model": str(model), "crops": args.crops, "overall": {}, **extra,
                  "inputs": evaluation.evaluation_inputs(args.model, args.deploy, args.table, samples, args)}
        (paths.evaluation("rankiqa_ft") / "metrics.json").parent.mkdir(parents=True, exist_ok=True)
        (paths.evaluation("rankiqa_ft") / "metrics.json").write_text(json.dumps(report))

    write_report(within_reference={})
    assert demo.evaluation_current(argv, needs)
    # made before the toolkit reported the within-reference figures: redone, not read half
    write_report()
    assert demo.evaluation_current(argv) and not demo.evaluation_current(argv, needs)
    write_report(within_reference={})
    # the run folder deleted and trained again: the same path, other weights
    model.write_bytes(b"the second run's weights")
    assert not demo.evaluation_current(argv, needs)
    write_report(within_reference={})
    assert demo.evaluation_current(argv, needs)
    table.write_text(table.read_text().replace("0.5", "0.7"))  # other ground truth
    assert not demo.evaluation_current(argv, needs)
    write_report(within_reference={})
    # other crops, or a report that records no inputs (as before they were recorded)
    assert not demo.evaluation_current(
        demo.evaluate_argv("rankiqa_ft", "ft_deploy.prototxt", model, dataclasses.replace(
            profile, eval_crops=profile.eval_crops + 1), paths, seed=0), needs)
    report = json.loads((paths.evaluation("rankiqa_ft") / "metrics.json").read_text())
    del report["inputs"]
    (paths.evaluation("rankiqa_ft") / "metrics.json").write_text(json.dumps(report))
    assert not demo.evaluation_current(argv, needs)


def test_a_rank_accuracy_is_redone_when_the_ranking_model_was_trained_again(tmp_path):
    from tools import rank_accuracy

    paths, profile = _demo_paths(tmp_path), _quick_profile()
    model = _first_weights(paths.run("rank") / "snapshots" / "rank_iter_10.caffemodel")
    paths.heldout_ranks.parent.mkdir(parents=True)
    paths.heldout_ranks.write_text("reference,type,level,path,split\nr,GN,0,/r.png,heldout\n")
    argv = demo.rank_accuracy_argv(model, profile, paths, seed=0)
    assert not demo.rank_accuracy_current(argv)
    args = rank_accuracy.build_parser().parse_args(argv)
    inputs = rank_accuracy.run_inputs(args)
    record = {**inputs, "sha256": rank_accuracy.input_hashes(inputs), "accuracy": {}}
    paths.rank_accuracy.mkdir(parents=True)
    (paths.rank_accuracy / "rank_accuracy.json").write_text(json.dumps(record))
    assert demo.rank_accuracy_current(argv)
    model.write_bytes(b"the second run's weights")
    assert not demo.rank_accuracy_current(argv)
    model.write_bytes(b"the first run's weights")
    assert demo.rank_accuracy_current(argv)
    paths.heldout_ranks.write_text(paths.heldout_ranks.read_text() + "r,GN,1,/r1.png,heldout\n")
    assert not demo.rank_accuracy_current(argv)
    # a record of before the hashes were recorded is not reused
    del record["sha256"]
    (paths.rank_accuracy / "rank_accuracy.json").write_text(json.dumps(record))
    assert not demo.rank_accuracy_current(argv)


def test_the_held_out_rank_table_is_a_manifest_even_for_paths_with_commas(tmp_path):
    from rankiqa import rank_accuracy
    from rankiqa.manifest import MANIFEST_COLUMNS

    paths = _demo_paths(tmp_path)
    paths.pristine_ft.mkdir(parents=True)
    (paths.pristine_ft / "a.png").write_bytes(b"")
    paths.synthetic.mkdir(parents=True)
    images = [str(tmp_path / "odd, \"named\"" / f"a_GN_{level}.png") for level in (1, 2)]
    with open(paths.synthetic / "table.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("reference", "type", "level", "path", "score", "direction"))
        writer.writerows([("a", "GN", level, path, 0.5, "higher_better")
                          for level, path in zip((1, 2), images, strict=True)]
                         + [("a", "JPEG", 1, "/j.png", 0.5, "higher_better")])
    demo.write_heldout_ranks(paths, ["GN"])
    with open(paths.heldout_ranks, encoding="utf-8", newline="") as handle:
        assert tuple(next(csv.reader(handle))) == MANIFEST_COLUMNS
    rows = rank_accuracy.read_rank_table(paths.heldout_ranks, demo.HELDOUT_SPLIT)
    assert rows == [rank_accuracy.RankedImage("a", "GN", 0, str((paths.pristine_ft / "a.png").resolve())),
                    *[rank_accuracy.RankedImage("a", "GN", level, path)
                      for level, path in zip((1, 2), images, strict=True)]]


def test_stage_times_keep_the_seconds_of_the_run_that_did_the_work(tmp_path):
    times = demo_setup.StageTimes(tmp_path / "stages.json")
    times.record("ranks", 12.34, reused=False)
    again = demo_setup.StageTimes(tmp_path / "stages.json")
    again.record("ranks", 0.01, reused=True)
    assert json.loads((tmp_path / "stages.json").read_text())["ranks"] == {
        "seconds": 12.3, "reused": True, "blas_threads": demo_setup.stage_blas_threads()}


@pytest.mark.slow
@needs_caffe
def test_quick_demo_over_two_seeds_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["--quick", "--out", str(out), "--data-dir", str(tmp_path / "data"),
            "--runs-dir", str(tmp_path / "runs"), "--seeds", "0,1", "--jobs", "2"]
    assert demo.main(argv) == 0
    printed = capsys.readouterr().out
    summary_md = (out / "summary.md").read_text()
    summary = json.loads((out / "summary.json").read_text())

    assert demo_setup.STANDIN_LABEL in summary_md and summary["label"] == demo_setup.STANDIN_LABEL
    assert [(r["seed"], r["model"]) for r in summary["runs"]] == [
        (seed, model) for seed in (0, 1) for model in ("RankIQA", "RankIQA+FT", "FT from scratch")]
    for row in summary["runs"]:
        keys = ("srocc", "plcc", "within_reference_srocc", "within_reference_plcc")
        assert set(row) >= {"seed", "model", *keys}
        for key in keys:
            assert math.isfinite(row[key]) and -1.0 <= row[key] <= 1.0, row
        assert row["n_images"] == summary["runs"][0]["n_images"] >= 2 * 4 * 4  # 2 held-out refs, 4 types x 4
    for model in ("RankIQA", "RankIQA+FT", "FT from scratch"):
        assert f"| {model} |" in summary_md and f"| {model} |" in printed
        # pooled and within each photograph; the models table names the model once per seed
        assert summary_md.count(f"| {model} | `") == 2
        assert summary_md.count(f"| {model} |") - 2 == printed.count(f"| {model} |") == 2
    for row in summary["details"]:  # every trained model named, with its deploy net, for make predict
        assert Path(row["caffemodel"]).is_file() and f"`{row['caffemodel']}`" in summary_md
    assert summary["details"][0]["output_blob"] == "fc8_m"
    # pairwise ranking accuracy per seed: every type of the profile, overall, values in [0, 1]
    assert sorted(summary["rank_accuracy"]) == ["0", "1"]
    for accuracy in summary["rank_accuracy"].values():
        assert list(accuracy) == ["GN", "GB", "JPEG", "overall"]
        assert all(0.0 <= v <= 1.0 for v in accuracy.values())
    assert set(summary["claim"]) == {"0", "1"}
    assert set(summary["claim_intervals"]) == {"0", "1"}
    for seed, checks in summary["claim"].items():
        for name, interval in summary["claim_intervals"][seed].items():
            assert name in checks and interval["low"] <= interval["difference"] <= interval["high"]
    assert "| 1 | RankIQA+FT − RankIQA |" in summary_md and "| 1 | RankIQA+FT − RankIQA |" in printed
    # the held-out references were seen neither by the ranking stage nor by fine-tuning
    settings = summary["settings"]
    for refs in summary["references"].values():
        held_out = set(refs["ft"]["test"])
        assert len(held_out) >= 2 and not held_out & set(refs["ft"]["train"])
        assert not held_out & set(refs["rank"]) and set(refs["rank"]) == set(settings["rank_references"])
    for name in ("srocc_per_seed.png", "rank_accuracy.png", "seed0/loss_curves.png", "seed1/loss_curves.png",
                 "seed0/rank_accuracy/rank_accuracy.csv"):
        assert (out / name).stat().st_size > 0
    assert all(not stage["reused"] for stages in summary["stages"].values() for stage in stages.values())
    # both fine-tuning runs started from a calibrated head: the ranking head, or the filler from scratch
    logs = {run: next((tmp_path / "runs").glob(f"quick-default-net*-seed0/{run}/log.txt")).read_text()
            for run in ("ft_rankiqa", "ft_scratch")}
    assert "head fc8: the ranking head fc8_m, scale" in logs["ft_rankiqa"]
    assert "head fc8: the prototxt's filler, scale" in logs["ft_scratch"]
    # the rate each fine-tuning run trained at is the one its solver.prototxt holds, and the summary says it
    used = summary["settings"]["ft_base_lr_used"]["0"]
    assert set(used) == {"RankIQA+FT", "FT from scratch"}
    assert all(0 < lr <= settings["ft_lr"] for lr in used.values()), used
    assert f"RankIQA+FT {used['RankIQA+FT']:.3g}" in summary_md

    # a rerun reuses every finished stage and reports the same numbers
    assert demo.main(argv) == 0
    again = json.loads((out / "summary.json").read_text())
    assert all(stage["reused"] for stages in again["stages"].values() for stage in stages.values())
    assert again["runs"] == summary["runs"] and again["rank_accuracy"] == summary["rank_accuracy"]


def test_other_settings_in_the_same_folders_are_refused(tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    photos = demo_setup.resolve_photos("default")
    profile = demo_setup.quick_profile(list(photos.sources))
    folder = demo.seed_folder(profile, photos, 0)
    demo_setup.check_settings(data / folder, {"profile": {"changed": True}, "seed": 0})
    with pytest.raises(InputError, match="other settings"):
        demo.run_demo(profile, photos, tmp_path / "out", data, runs, seeds=[0])
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


class _RecordingPopen:
    """Stands in for subprocess.Popen: records the child's environment, exits 0."""

    def __init__(self) -> None:
        self.env: dict[str, str] | None = None

    def __call__(self, argv, cwd=None, env=None):
        self.env = env
        return _FakeProcess(0)(argv)


def test_every_stage_runs_with_the_demos_blas_thread_count_unless_the_user_set_one(monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    popen = _RecordingPopen()
    monkeypatch.setattr(demo.subprocess, "Popen", popen)
    demo._run("train_rank", ["python", "-m", "tools.train"])
    assert popen.env["OPENBLAS_NUM_THREADS"] == str(demo_setup.BLAS_THREADS) == "1"
    assert demo_setup.stage_blas_threads() == "1"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    demo._run("train_rank", ["python", "-m", "tools.train"])
    assert popen.env["OPENBLAS_NUM_THREADS"] == "4" == demo_setup.stage_blas_threads()
    # OpenBLAS also reads OMP_NUM_THREADS: a user's count there must reach the child, not be overridden by
    # the demo's OPENBLAS_NUM_THREADS (which OpenBLAS prefers).
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    demo._run("train_rank", ["python", "-m", "tools.train"])
    assert popen.env["OPENBLAS_NUM_THREADS"] == "3" == demo_setup.stage_blas_threads()


def test_the_summary_names_the_thread_counts_the_stages_ran_with(tmp_path, monkeypatch):
    # Stages of one demo run with 1 thread, a resumed one with 4: the summary must not report the count of
    # the invocation that writes it, but those each stage recorded.
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    times = demo_setup.StageTimes(tmp_path / "stages.json")
    times.record("train_rank", 10.0, reused=False)
    assert demo_setup.blas_threads_note(times.stages.values()).startswith("1 (fixed")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    times.record("ft_rankiqa", 5.0, reused=False)
    times.record("train_rank", 0.0, reused=True)  # reused: keeps the count of the run that did the work
    stages = json.loads((tmp_path / "stages.json").read_text())
    assert stages["train_rank"]["blas_threads"] == "1" and stages["ft_rankiqa"]["blas_threads"] == "4"
    note = demo_setup.blas_threads_note(stages.values())
    assert note.startswith("1, 4 (OPENBLAS_NUM_THREADS or OMP_NUM_THREADS set by the user")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    assert demo_setup.blas_threads_note([{"seconds": 3.0, "reused": True}]).startswith("not recorded")
