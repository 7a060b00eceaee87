"""Tests of ``make bench`` (tools/bench.py).

Speed is never asserted: the numbers depend on the machine and its load. What is checked: the helpers
measure what they say, and a ``--quick`` run writes a BENCHMARKS.md with every section holding finite
positive figures, the plot it links to, and a GPU section that does not invent GPU figures.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pylayers import timed
from rankiqa import blas, measure
from tests.caffe_marks import needs_caffe
from tools import bench

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("## 1. Loss layer", "## 2. Efficient vs standard Siamese", "## 3. Data layer", "## 4. Evaluation",
            "## 5. Training step", "## 6. GPU")
ONLINE_SECTION = "## Online ranked batches"  # between sections 5 and 6
# A number that does not continue a word (so "9x5x1" gives 9 and "3.7x" gives 3.7).
NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\d.])", re.IGNORECASE)




def test_layout_arrays_follow_the_data_layers_order_and_pair_counts():
    levels, groups = bench.layout_arrays(9, 5, 1)
    assert levels.size == 45
    assert list(levels[:5]) == [0, 1, 2, 3, 4] and list(groups[:6]) == [0, 0, 0, 0, 0, 1]
    from pylayers.rank_loss import pair_count

    assert pair_count(levels, groups) == 90                    # the paper's 90 pairs of a 45-image batch
    assert pair_count(*bench.layout_arrays(4, 6, 2)) == 240    # and 240 of a 48-image LIVE batch


def test_time_calls_returns_positive_seconds_per_call():
    calls = []
    seconds = measure.time_calls(lambda: calls.append(1), repeats=3, warmup=2, min_seconds=0.001)
    assert seconds > 0 and math.isfinite(seconds)
    assert len(calls) >= 2 + 1 + 3  # warm-up, calibration and at least one call per round


@pytest.mark.slow
def test_bench_loss_compares_equal_results_per_layout():
    rows = bench.bench_loss(bench.QUICK, seed=0)
    assert [row["layout"] for row in rows] == ["9x5x1", "4x6x2", "9x5x4", "4x6x8", "9x5x16"]
    assert [row["pairs"] for row in rows] == [90, 240, 1440, 3840, 23040]
    assert [row["group_size"] for row in rows] == [5, 12, 20, 48, 80]
    for row in rows:
        assert row["built_s"] > 0 and row["reused_s"] > 0 and row["loop_s"] > 0
        assert row["speedup_built"] == pytest.approx(row["loop_s"] / row["built_s"])
        assert row["speedup_reused"] == pytest.approx(row["loop_s"] / row["reused_s"])


def test_loglog_slope_fits_the_upper_half_of_a_power_law():
    sizes = [1, 2, 4, 8, 16, 32]
    assert bench.loglog_slope(sizes, [3 * x ** 1.5 for x in sizes]) == pytest.approx(1.5)
    # A fixed cost that swamps the small sizes bends the lower half only; the fit ignores it.
    seconds = [1e-3 if x < 8 else 2e-5 * x ** 2 for x in sizes]
    assert bench.loglog_slope(sizes, seconds) == pytest.approx(2.0)
    assert bench.loglog_slope([10, 20, 40], [5.0, 1.0, 2.0]) == pytest.approx(1.0)  # at least the last two


@pytest.mark.slow
def test_loss_scaling_keeps_n_or_the_group_size_fixed():
    scaling = bench.loss_scaling(bench.QUICK, seed=0)
    assert [row["n"] for row in scaling["by_n"]] == [45, 90, 180]
    assert {row["group_size"] for row in scaling["by_n"]} == {5}
    # The loop only up to loop_max_n (90 in --quick); the vectorised loss at every size.
    assert [row["loop_s"] is not None for row in scaling["by_n"]] == [True, True, False]
    assert all(row["built_s"] > 0 and row["reused_s"] > 0 for row in scaling["by_n"])
    assert {row["n"] for row in scaling["by_size"]} == {180}
    assert [row["group_size"] for row in scaling["by_size"]] == [5, 20, 180]
    # 180 / (5 m) groups of C(5, 2) m^2 pairs each: 2 x 180 x m.
    assert [row["pairs"] for row in scaling["by_size"]] == [360, 1440, 12960]
    assert set(scaling["slopes"]) == {(axis, kind) for axis in ("n", "group_size")
                                      for kind in ("built", "reused", "loop")}
    assert all(math.isfinite(value) for value in scaling["slopes"].values())


@pytest.mark.slow
def test_files_view_lists_the_same_png_files_without_the_lmdb(work_dir, tmp_path):
    from pylayers.rank_data import RankBatchBuilder, open_source, read_manifest

    data_dir = bench.make_rankset(work_dir, bench.QUICK, seed=0)
    assert (data_dir / "images.lmdb").exists()
    view = bench.files_view(data_dir, tmp_path / "view", max_level=1)
    assert not (view / "images.lmdb").exists()
    original, viewed = read_manifest(data_dir / "manifest.csv", "train"), read_manifest(view / "manifest.csv",
                                                                                         "train")
    assert viewed.levels == [0, 1] and viewed.types == original.types
    for key, path in viewed.paths.items():
        assert (view / path).resolve() == (data_dir / original.paths[key]).resolve()
    builder = RankBatchBuilder(viewed, open_source(viewed, None, "test"), 1, 1, bench.CROP, 0)
    batch = builder(0)
    assert batch["data"].shape == (2, 3, bench.CROP, bench.CROP) and list(batch["label"]) == [0, 1]


def test_step_nets_make_the_demo_batch_and_vgg16_at_batch_2():
    assert [(spec.net, spec.batch()) for spec in bench.FULL.step_nets] == [("shallow", 45), ("vgg16", 2)]
    assert [(spec.net, spec.batch()) for spec in bench.FULL.gpu_step_nets] == [("shallow", 45), ("vgg16", 45)]


@pytest.mark.caffe
def test_default_workers_are_the_train_prototxts(monkeypatch, tmp_path):
    net_dir = tmp_path / "prototxts" / "shallow"
    net_dir.mkdir(parents=True)
    source = (REPO / "prototxts" / "shallow" / "rank_train.prototxt").read_text(encoding="utf-8")
    (net_dir / "rank_train.prototxt").write_text(source.replace("workers: 2", "workers: 3"), encoding="utf-8")
    monkeypatch.setattr(bench, "REPO_ROOT", tmp_path)
    assert bench.default_workers("shallow") == 3


@needs_caffe
def test_deploy_on_crops_feeds_the_scorers_crops_cycling(tmp_path):
    import caffe

    from rankiqa import netconfig, scoring

    deploy = REPO / "prototxts" / "shallow" / "rank_deploy.prototxt"
    info = scoring.read_deploy(deploy)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(240, 300, 3), dtype=np.uint8) for _ in range(2)]
    crops_file = bench.save_crops(images, info, crops=2, seed=5, limit=3, out=tmp_path / "crops.npy")
    crops = np.load(crops_file)
    assert crops.shape == (3, 3, 227, 227) and crops.dtype == np.float32
    y, x = scoring.crop_positions(240, 300, 227, 227, 2, 5, 1)[0]  # image 1's first crop is the third
    np.testing.assert_array_equal(crops[2], images[1][y:y + 227, x:x + 227].transpose(2, 0, 1))
    out = bench.deploy_on_crops(deploy, 2, crops_file, tmp_path / "d.prototxt")
    written, original = netconfig.read_net_param(out), netconfig.read_net_param(deploy)
    assert written.layer[0].type == "Python" and list(written.layer[0].top) == list(original.layer[0].top)
    assert written.layer[0].python_param.module == "pylayers.crops_data"
    assert [layer.name for layer in written.layer[1:]] == [layer.name for layer in original.layer[1:]]
    caffe.set_mode_cpu()
    net = caffe.Net(str(out), caffe.TEST)
    for expected in ([0, 1], [2, 0], [1, 2]):
        net.forward()
        np.testing.assert_array_equal(net.blobs["data"].data, crops[expected])
    with pytest.raises(bench.InputError, match="no Input layer"):
        bench.deploy_on_crops(REPO / "prototxts" / "shallow" / "rank_train.prototxt", 2, crops_file,
                              tmp_path / "x.txt")


def test_machine_description_names_the_cpu(monkeypatch):
    assert measure.cpu_model()
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert measure.blas_threads().startswith("3 (OPENBLAS_NUM_THREADS)")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert measure.blas_threads().startswith(f"{blas.usable_cores()} (OpenBLAS default")


def section_text(markdown: str, heading: str) -> str:
    start = markdown.index(heading)
    following = [markdown.index(h) for h in (*SECTIONS, ONLINE_SECTION)
                 if h in markdown and markdown.index(h) > start]
    return markdown[start:min(following) if following else len(markdown)]


def table_numbers(section: str) -> list[float]:
    """The numbers inside the section's Markdown table cells (not the prose)."""
    values = []
    for line in section.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            for cell in line.strip("|").split("|"):
                values += [float(match) for match in NUMBER.findall(cell.replace("**", ""))]
    return values


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    """A work folder holding the quick run's generated ranking set (made once for this module)."""
    folder = tmp_path_factory.mktemp("bench_work")
    bench.make_rankset(folder, bench.QUICK, seed=0)
    return folder


@pytest.mark.slow
@needs_caffe
def test_timed_layers_record_one_data_wait_and_one_loss_pass_per_iteration(work_dir, tmp_path):
    data_dir = bench.make_rankset(work_dir, bench.QUICK, seed=0)  # already there: only checked
    spec = bench.NetSpec("t", "efficient", types_per_batch=2, workers=0)
    with bench.solver_for(spec, data_dir, tmp_path, bench.QUICK, seed=0, device=-1) as solver:
        assert solver.net.blobs["data"].num == 2 * 5
        steps = bench.timed_steps(solver, warmup=1, steps=2)
        recorded = timed.TIMINGS
        assert len(steps) == 2
        assert len(recorded["data"]) == 2 and len(recorded["loss_forward"]) == 2
        assert len(recorded["loss_backward"]) == 2
        # the waits and the loss passes happen inside the timed iterations
        assert sum(recorded["data"]) + sum(recorded["loss_forward"]) < sum(steps)
        layers = list(timed.DATA_LAYERS)
        assert len(layers) == 1
        written = (tmp_path / "t_train.prototxt").read_text(encoding="utf-8")
        assert set(re.findall(r'module: "([\w.]+)"', written)) == {"pylayers.timed"}
    # leaving the block stops the loader (no worker keeps loading while the next configuration is timed)
    assert layers[0].prefetcher._closed and not timed.DATA_LAYERS


@pytest.mark.slow
@needs_caffe
def test_quick_run_writes_every_section_with_finite_positive_figures(work_dir, tmp_path):
    out = tmp_path / "BENCH.md"
    plots = tmp_path / "plots"
    # Step runs left by a benchmark of other nets (their identity names another train net) are made afresh.
    batch = bench.QUICK.step_nets[0].batch()
    for name in (f"step_cpu_shallow_{batch}", f"step_cpu_shallow_{batch}_w{bench.QUICK.step_workers[0]}"):
        stale = work_dir / "nets_quick" / name
        stale.mkdir(parents=True, exist_ok=True)
        (stale / "run.json").write_text(json.dumps({"kind": "rank", "net_definition": "another net"}))
    result = subprocess.run(
        [sys.executable, "-m", "tools.bench", "--quick", "--out", str(out), "--plots-dir", str(plots),
         "--work-dir", str(work_dir), "--gpu", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    markdown = out.read_text(encoding="utf-8")
    for heading in SECTIONS[:5]:
        numbers = table_numbers(section_text(markdown, heading))
        assert numbers, heading
        assert all(math.isfinite(v) for v in numbers), heading
        # Every figure is a time, a rate, a count, a share or a loss; the test curve starts at iteration 0,
        # and `caffe time` logs a layer that takes under a microsecond as 0.
        assert all(v > 0 for v in numbers if heading.startswith(("## 1.", "## 3.", "## 4."))), heading
        assert all(v >= 0 for v in numbers), heading
    # Section 2: the time and pairs ratios are in the prose, bold.
    ratios = re.findall(r"\*\*([0-9.e+-]+)x\*\*", section_text(markdown, SECTIONS[1]))
    assert len(ratios) == 2 and all(float(r) > 0 for r in ratios)
    # Section 5: the Shallow step against `caffe time`, Caffe's per-layer table, the worker/BLAS table.
    steps = section_text(markdown, SECTIONS[4])
    header = next(line for line in steps.splitlines() if line.startswith("| net |"))
    row = next(line for line in steps.splitlines() if line.startswith("| shallow | 10 | 2 |"))
    cells = dict(zip(header.split("|"), row.split("|"), strict=True))
    step_s, limit_s, ratio = (_seconds(cells[f" {name} "]) for name in (
        "step (`solver.step`)", "`caffe time` forward+backward", "step / `caffe time`"))
    # --quick has one round, whose ratio is that of the two medians shown (3 digits).
    assert ratio == pytest.approx(step_s / limit_s, rel=0.01)
    assert _seconds(cells[" rounds' ratios "]) == ratio
    clear_s, update_s = (_seconds(part) for part in
                         cells[" solver's own work: gradients zeroed + weights updated "].split("+"))
    with_work = _seconds(cells[" step / (`caffe time` + solver's own work) "])
    assert with_work == pytest.approx(step_s / (limit_s + clear_s + update_s), rel=0.02)
    assert int(cells[" BLAS threads "]) == blas.training_threads(2)  # the training default, 2 workers
    layers = [line.split("|")[1].strip() for line in steps.splitlines() if line.startswith("| ")]
    assert {"data", "conv1", "pool1", "fc8_m", "loss"} <= set(layers)
    choices = [line for line in steps.splitlines() if re.match(r"\| 2 \| \d+ \|", line)]
    assert len(choices) == 2 and sum("default" in line for line in choices) == 1
    assert sum("fastest step" in line for line in choices) == 1
    # Section 4: the scorers against `caffe time`'s forward limit, the CPU default in bold.
    assert re.search(r"one crop per forward.*`make eval`'s default here \| 1 \|.*\*\*[0-9.]+%\*\* \|",
                     section_text(markdown, SECTIONS[3]))
    # Online batches: per-worker rates against the PNG files, workers to feed each measured net.
    online = section_text(markdown, ONLINE_SECTION)
    assert table_numbers(online) and all(math.isfinite(v) and v > 0 for v in table_numbers(online))
    assert re.search(r"\| shallow, 10 \(CPU\) \| .* \| \d+ / \d+ \|", online)
    # The plots the report links to exist and are PNGs.
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    pngs = [(out.parent / link).resolve() for link in links]
    assert pngs == [(plots / "loss_scaling.png").resolve(), (plots / "siamese_test_loss.png").resolve()]
    assert all(png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for png in pngs)
    # This CPU build has no GPU: --gpu 0 must say so and report no GPU figure.
    gpu = section_text(markdown, SECTIONS[5])
    assert "No GPU was available in this run" in gpu and "`--gpu 0` was given" in gpu
    assert not table_numbers(gpu)
    # The machine is named, with its load.
    assert measure.cpu_model() in markdown
    assert "load average" in markdown
    # No temporary file is left beside the outputs.
    assert not list(tmp_path.glob(".*.tmp*")) and not list(plots.glob(".*.tmp*"))


def test_bad_arguments_exit_2_with_a_message(tmp_path):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    result = subprocess.run([sys.executable, "-m", "tools.bench", "--quick", "--out", str(folder)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and str(folder) in result.stderr


def _seconds(cell: str) -> float:
    """A duration or ratio cell of the report (``1.2 s``, ``340 ms``, ``12 µs``, ``**1.05x**``) as a number
    (seconds for a duration)."""
    text = cell.replace("*", "").strip()
    value = float(NUMBER.findall(text)[0])
    scale = {"s": 1.0, "ms": 1e-3, "µs": 1e-6}
    unit = text.split()[-1] if " " in text else ""
    return value * scale.get(unit, 1.0)


def test_render_without_gpu_never_shows_gpu_figures():
    report = _fake_report()
    text = bench.render(report, "plots")
    gpu = section_text(text, SECTIONS[5])
    assert "No GPU was available in this run" in gpu and "no GPU was requested" in gpu
    assert "load average" in text and "machine was shared" in text  # load 9.0 on this machine's cores


def _fake_report() -> dict:
    """A report of made-up measurements (rendering only; no number here is presented as a result)."""
    curve = [(0, 20.0, 0.5), (2, 10.0, 0.8)]
    rows = [{"batch": 8, "images_per_s": 2.0, "speedup": 2.0, "limit_images_per_s": 2.5, "of_limit": 0.8,
             "repeat_ratios": [0.8]},
            {"batch": 1, "images_per_s": 1.0, "speedup": 1.0, "limit_images_per_s": 1.25, "of_limit": 0.8,
             "repeat_ratios": [0.7, 0.8, 0.9]}]
    net = {"images": 10, "pairs": 20, "iteration_s": 0.5, "timed_steps": 1, "pairs_per_s": 40.0,
           "curve": curve}
    data_row = {"source": "PNG files", "workers": 2, "batch": 45, "loader_images_per_s": 100.0,
                "iteration_s": 1.0, "wait_s": 0.01, "wait_share": 0.01, "train_images_per_s": 45.0,
                "loss_layer_s": 0.001}
    loss_row = {"layout": "9x5x1", "n": 45, "group_size": 5, "pairs": 90, "built_s": 2e-5, "reused_s": 1e-5,
                "loop_s": 1e-4, "speedup_built": 5.0, "speedup_reused": 10.0}
    slopes = {(axis, kind): 1.0 for axis in ("n", "group_size") for kind in ("built", "reused", "loop")}
    layers = [{"layer": "conv1", "forward_s": 0.2, "backward_s": 0.3},
              {"layer": "loss", "forward_s": 0.0, "backward_s": 0.0}]
    step = {"net": "shallow", "batch": 45, "workers": 2, "blas_threads": 1, "step_s": 1.1,
            "caffe_time_s": 1.0, "ratio": 1.1, "round_ratios": [1.0, 1.2], "clear_s": 0.002, "update_s": 0.01,
            "with_solver_work": 1.08,
            "images_per_s": 40.9, "caffe_time_mean_s": 0.5, "layers": layers}
    choices = [dict(step, blas_threads=threads, step_s=1.0 + threads) for threads in (1, 2)]
    return {
        "command": "python -m tools.bench --quick", "date": "today", "quick": True, "settings": bench.QUICK,
        "machine": {"CPU": "test CPU"}, "load_before": (9.0, 1.0, 1.0), "load_after": (1.0, 1.0, 1.0),
        "loads": [2.0, 3.0], "loss": [loss_row],
        "loss_scaling": {"group_size": 5, "n": 180, "by_n": [loss_row], "by_size": [loss_row],
                         "slopes": slopes},
        "data": [dict(data_row, workers=0), data_row], "siamese": {
            "images": 10, "base_lr": 1e-4,
            "nets": {"efficient": net, "pair": dict(net, pairs=5, pairs_per_s=10.0)},
            "time_ratio": 1.0, "pairs_ratio": 4.0},
        "eval": {"images": 2, "crops": 4, "sizes": [(300, 400)], "rows": rows, "batched": rows[0],
                 "one_crop": rows[-1], "speedup": 2.0},
        "steps": {"nets": [step], "choices": choices, "cores": 2, "openblas_default": 2,
                  "default": {"workers": 2, "blas_threads": 2}},
        "gpu": None, "gpu_reason": "no GPU was requested", "wall_s": 1.0,
    }


def test_render_marks_the_default_and_the_fastest_configuration_and_the_layers_shares():
    text = bench.render(_fake_report(), "plots")
    steps = section_text(text, SECTIONS[4])
    assert "| 2 | 1 | 2 s |" in steps and "fastest step" in steps.split("| 2 | 1 | 2 s |")[1].split("\n")[0]
    assert "default" in steps.split("| 2 | 2 | 3 s |")[1].split("\n")[0]
    assert "| conv1 | 200 ms | 300 ms | 100% |" in steps and "| loss | 0 µs | 0 µs | 0% |" in steps
    assert "1x to 1.2x" in steps  # the rounds' ratios
    assert "| 2 ms + 10 ms | 1.08x |" in steps  # the solver's own work; the step against the limit with it
    assert "| **80%** | 70% to 90% |" in section_text(text, SECTIONS[3])  # the CPU default's share, repeats


def test_render_with_a_gpu_names_it_and_shows_its_steps_and_evaluation():
    report = _fake_report()
    report["gpu"] = {"device": 0, "name": "NVIDIA H200", "steps": {"nets": [dict(report["steps"]["nets"][0],
                                                                                  net="vgg16")]},
                     "eval": report["eval"]}
    gpu = section_text(bench.render(report, "plots"), SECTIONS[5])
    assert "**NVIDIA H200**" in gpu and "| vgg16 | 45 | 2 |" in gpu
    assert "| batched, `make eval`'s default here | 60 |" not in gpu  # the fake GPU rows have no batch 60
    assert "scorer (GPU)" in gpu


def test_table_numbers_parses_markdown_tables():
    # the table parser used above must see the numbers of a table row, or the quick-run test proves nothing
    assert table_numbers("| a | 1.5 | 2e-3 ms | **3x** | 9x5x1 | 4% |\n|---|---|") == [1.5, 0.002, 3, 9, 4]
    assert np.isfinite(table_numbers("| 7 |")).all()


def test_gpu_check_section_shows_the_recorded_report_or_says_there_is_none(tmp_path, monkeypatch):
    record = tmp_path / "docs" / "bench" / "gpu_check.md"
    monkeypatch.setattr(bench, "GPU_CHECK_RECORD", record)
    missing = "\n".join(bench.gpu_check_section())
    assert "Not measured: no run of the GPU check on a GPU is recorded" in missing
    record.parent.mkdir(parents=True)
    record.write_text("| device | NVIDIA H200 |\n", encoding="utf-8")
    shown = "\n".join(bench.gpu_check_section())
    assert "| device | NVIDIA H200 |" in shown and "docs/bench/gpu_check.md" in shown
    assert "Not measured" not in shown


def test_record_gpu_check_keeps_a_gpu_report_and_refuses_a_smoke_run(tmp_path, monkeypatch):
    record = tmp_path / "docs" / "bench" / "gpu_check.md"
    monkeypatch.setattr(bench, "GPU_CHECK_RECORD", record)
    benchmarks = tmp_path / "BENCHMARKS.md"
    before = "# Benchmarks\n\n## 5. GPU\n\nno GPU\n\n" + "\n".join(bench.gpu_check_section())
    benchmarks.write_text(before, encoding="utf-8")
    smoke = tmp_path / "smoke.md"
    smoke.write_text("## GPU check: CPU smoke run, NOT a GPU result\n", encoding="utf-8")
    with pytest.raises(bench.InputError, match="not the report of a GPU run"):
        bench.record_gpu_check(smoke, benchmarks)
    with pytest.raises(bench.InputError, match="no such report"):
        bench.record_gpu_check(tmp_path / "missing.md", benchmarks)
    assert benchmarks.read_text(encoding="utf-8") == before and not record.exists()
    cpu_full = tmp_path / "cpu_full.md"  # `--gpu -1` at full sizes: a CPU reference, not a GPU result
    cpu_full.write_text("## GPU check\n\nMeasured ... on **CPU: Xeon**; Caffe build: cpu (/x)\n",
                        encoding="utf-8")
    with pytest.raises(bench.InputError, match="not the report of a GPU run"):
        bench.record_gpu_check(cpu_full, benchmarks)
    gpu = tmp_path / "gpu_check.md"
    gpu.write_text("## GPU check\n\nMeasured ... on **NVIDIA H200** (device 0); Caffe build: cuda "
                   "(/tmp/b)\n\n| device | NVIDIA H200 |\n", encoding="utf-8")
    assert bench.main(["--out", str(benchmarks), "--record-gpu-check", str(gpu)]) == 0
    after = benchmarks.read_text(encoding="utf-8")
    assert after.startswith("# Benchmarks\n\n## 5. GPU\n\nno GPU\n\n")  # the measured sections are kept
    assert "| device | NVIDIA H200 |" in after and "Not measured" not in after
    assert record.read_text(encoding="utf-8") == gpu.read_text(encoding="utf-8")



def test_render_online_counts_the_workers_each_measured_pass_needs():
    report = _fake_report()
    # made-up rates: 45 images per 1 s pass; 10 and 5.5 images/s per worker online, 20 from PNG files
    report["online"] = {"files": 20.0, "online": 10.0, "online_all": 5.5, "types_all": ["GN", "GB"],
                        "offline": ["ID"]}
    report["gpu"] = {"device": 0, "name": "GPU", "eval": report["eval"],
                     "steps": {"nets": [dict(report["steps"]["nets"][0], net="vgg16", caffe_time_s=0.1)]}}
    online = section_text(bench.render(report, "plots"), ONLINE_SECTION)
    assert "| made online, the same batches (9 types) | 10 | 0.5x |" in online
    assert "| made online, 2 types (GN, GB) | 5.5 | 0.275x |" in online
    assert "| shallow, 45 (CPU) | 1 s | 45 | 5 / 9 |" in online
    assert "| vgg16, 45 (GPU) | 100 ms | 450 | 45 / 82 |" in online
    assert "but ID (too slow online" in online
    assert ONLINE_SECTION not in bench.render(_fake_report(), "plots")  # a report without the section


@pytest.mark.caffe
def test_every_step_net_of_the_full_run_gets_its_run_folder_without_imagenet_weights(work_dir, tmp_path):
    data_dir = bench.make_rankset(work_dir, bench.QUICK, seed=0)
    for spec in {*bench.FULL.step_nets, *bench.FULL.gpu_step_nets}:
        run_dir = tmp_path / f"{spec.net}_{spec.types_per_batch}"
        run = bench.prepare_step_run(data_dir, run_dir, spec, device=-1)
        assert run.train_net.is_file() and run.solver_path.is_file() and run.weights is None
