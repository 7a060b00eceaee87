"""Tests of the GPU check (tools/gpu_check.py, gpu/check.sh).

There is no GPU here: ``--cpu-smoke`` runs every code path of the check on the CPU with tiny sizes (the
Shallow net, CPU against CPU). What is checked: the exit status, the JSON fields and their consistency
(losses recomputed from the record, the timings finite and positive, ``caffe time`` parsed), the Markdown,
that a failing check (a tolerance of 0) gives exit status 1, and the pure helpers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rankiqa.errors import InputError
from tests.caffe_marks import needs_caffe
from tools import gpu_check

REPO = Path(__file__).resolve().parents[1]




def _env() -> dict[str, str]:
    # One BLAS thread: the machine is shared, and the smoke sizes gain nothing from more.
    return dict(os.environ, OPENBLAS_NUM_THREADS="1")


def run_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.gpu_check", *args], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, str, Path]:
    """One full ``--cpu-smoke`` run shared by the tests below (a few seconds)."""
    root = tmp_path_factory.mktemp("gpu_check")
    out = root / "out" / "gpu_check.json"
    out.parent.mkdir()
    done = run_check("--cpu-smoke", "--out", str(out), "--work-dir", str(root / "work"))
    report = json.loads(out.read_text()) if out.is_file() else {}
    markdown = out.with_suffix(".md").read_text() if out.with_suffix(".md").is_file() else ""
    return done, report, markdown, root


@pytest.mark.slow
@needs_caffe
def test_cpu_smoke_passes_and_records_every_check(smoke):
    done, report, _markdown, _root = smoke
    assert done.returncode == 0, done.stderr[-3000:]
    assert report["ok"] is True and report["failures"] == []
    assert report["mode"] == "cpu-smoke" and report["device_id"] == -1
    assert report["steps"] == ["train", "compare", "time", "nccl"]
    assert set(report["checks"]) == {"train", "compare", "time", "nccl"}
    assert all(step["ok"] for step in report["checks"].values())
    device = report["device"]
    assert device["ok"] and device["build_mode"] in ("cpu", "cuda")
    assert "build_info" in device and "nvidia_smi" in device
    assert report["machine"]["Caffe mode"] == "cpu-smoke"


@pytest.mark.slow
@needs_caffe
def test_cpu_smoke_fixed_batch_loss_is_finite_and_falls(smoke):
    _done, report, _markdown, _root = smoke
    train = report["checks"]["train"]
    losses = train["losses"]
    assert len(losses) == report["settings"]["train_iters"] == len(train["iteration_s"])
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    # 2 types x 5 levels of the Shallow net; the hinge of untrained (near-equal) scores is close to
    # margin x pairs / N = 10 x (2 x 10) / 10 = 20.
    assert train["net"] == "shallow" and train["batch"] == 10
    assert abs(losses[0] - 20.0) < 1.0
    # The pass criterion: the same batch in the TEST phase (a second net sharing the weights).
    assert train["same_batch"] is True
    assert train["test_loss_after"] < train["test_loss_before"]
    assert train["test_loss_before"] == pytest.approx(losses[0], rel=1e-5)  # Shallow has no dropout


@pytest.mark.slow
@needs_caffe
def test_cpu_smoke_compare_is_exact_on_the_same_device(smoke):
    _done, report, _markdown, _root = smoke
    compare = report["checks"]["compare"]
    assert compare["against"] == "CPU" and compare["tolerance"] == 1e-4
    assert len(compare["scores_cpu"]) == len(compare["scores_other"]) == compare["batch"]
    recomputed = max(abs(a - b) for a, b in zip(compare["scores_cpu"], compare["scores_other"], strict=True))
    assert compare["max_abs_diff"] == pytest.approx(recomputed, abs=1e-12)
    assert compare["max_abs_diff"] <= 1e-6  # same weights, same input, same BLAS
    assert compare["max_abs_score"] > 0  # the net really produced scores (not all zeros)


@pytest.mark.slow
@needs_caffe
def test_cpu_smoke_times_three_ways_and_parses_caffe_time(smoke):
    _done, report, _markdown, _root = smoke
    timing = report["checks"]["time"]
    for key in ("python_layers_s", "caffe_layers_s", "caffe_time_s", "data_wait_s", "loss_layer_s"):
        assert math.isfinite(timing[key]) and timing[key] > 0, key
    assert timing["python_over_caffe"] == pytest.approx(timing["python_layers_s"] / timing["caffe_layers_s"])
    caffe_time = timing["caffe_time"]
    assert caffe_time["returncode"] == 0
    assert caffe_time["command"].split()[0].endswith("/bin/caffe") and "-gpu" not in caffe_time["command"]
    assert timing["caffe_time_s"] == pytest.approx(caffe_time["forward_backward_ms"] / 1000.0)


@pytest.mark.slow
@needs_caffe
def test_cpu_smoke_trains_through_the_driver_without_nccl(smoke):
    _done, report, _markdown, root = smoke
    nccl = report["checks"]["nccl"]
    # On the CPU the step runs tools/train.py with --gpu -1 (NCCL needs a GPU) and says so.
    assert nccl["nccl"] is False and "--gpu -1" in nccl["command"] and "--gpus" not in nccl["command"]
    assert nccl["returncode"] == 0 and nccl["gpus"] is None
    assert len(nccl["losses"]) == nccl["iterations"] == report["settings"]["nccl_iters"]
    assert all(math.isfinite(v) for v in nccl["losses"])
    run = root / "work" / "nets_cpu-smoke" / "nccl_run"
    assert (run / "snapshots" / nccl["snapshot"]).is_file()
    # The losses come from the driver's own log (what loss.csv shows).
    assert f"{nccl['losses'][-1]:.6g}" in (run / "loss.csv").read_text()


@pytest.mark.slow
@needs_caffe
def test_nccl_step_reports_a_driver_that_refuses_gpus(smoke):
    """``--gpus`` on a build without NCCL: tools/train.py refuses (exit 2) and the step fails, quoting why."""
    import caffe

    if caffe.has_nccl():
        pytest.skip("this pycaffe has NCCL: tools/train.py would not refuse --gpus for that reason")
    _done, _report, _markdown, root = smoke
    data_dir = root / "work" / "ranks_2refs_seed0"
    result = gpu_check.step_nccl(gpu_check.SMOKE, data_dir, root / "gpus", device=0, seed=0)
    assert result["ok"] is False and result["nccl"] is True and "--gpus 0" in result["command"]
    assert result["returncode"] == 2
    assert "--gpus needs a CUDA Caffe built with NCCL" in result["error"]


@pytest.mark.slow
@needs_caffe
def test_cpu_smoke_markdown_carries_the_figures_and_says_it_is_no_gpu_result(smoke):
    _done, report, markdown, _root = smoke
    assert markdown.startswith("## GPU check: CPU smoke run, NOT a GPU result")
    assert "Overall: **PASS**" in markdown
    assert "`caffe time` (Caffe layers only)" in markdown
    assert f"max abs diff {report['checks']['compare']['max_abs_diff']:.3g}" in markdown
    assert f"batch {report['checks']['time']['batch']}" in markdown
    assert f"snapshot {report['checks']['nccl']['snapshot']}" in markdown
    assert "`tools/train.py --gpu -1` (CPU smoke: no NCCL)" in markdown


@pytest.mark.slow
@needs_caffe
def test_a_failing_check_gives_exit_status_1(smoke):
    _done, _report, _markdown, root = smoke
    out = root / "fail" / "gpu_check.json"
    out.parent.mkdir()
    # CPU against CPU differs by 0, and the check is "difference < tolerance": a tolerance of 0 must fail.
    done = run_check("--cpu-smoke", "--steps", "compare", "--tolerance", "0", "--out", str(out),
                     "--work-dir", str(root / "work"))
    assert done.returncode == 1, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["ok"] is False and report["failures"] == ["compare"]
    assert report["checks"]["compare"]["ok"] is False
    assert "Overall: **FAIL**" in out.with_suffix(".md").read_text()


@pytest.mark.slow
@needs_caffe
def test_wrapper_writes_into_gpu_check_out_and_prints_the_markdown(smoke, tmp_path):
    _done, _report, _markdown, root = smoke
    env = dict(_env(), GPU_CHECK_OUT=str(tmp_path / "report"), PYTHON=sys.executable)
    done = subprocess.run(["bash", str(REPO / "gpu" / "check.sh"), "--cpu-smoke", "--steps", "compare",
                           "--work-dir", str(root / "work")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "gpu_check.json").read_text())
    assert report["ok"] and report["steps"] == ["compare"]
    assert "## GPU check" in done.stdout and "exit status 0" in done.stdout


@pytest.mark.slow
@needs_caffe
def test_caffe_only_net_has_no_python_layers_and_the_same_trunk(smoke):
    _done, _report, _markdown, root = smoke
    data_dir = root / "work" / "ranks_2refs_seed0"
    settings = gpu_check.GPU
    net_param = gpu_check.train_net_param(settings, data_dir, seed=0, workers=0)
    plain = gpu_check.caffe_only_net_param(net_param, batch=15, crop=224)
    assert not [layer for layer in plain.layer if layer.type == "Python"]
    data = plain.layer[0]
    assert data.type == "Input" and list(data.top) == ["data", "target"]
    assert [list(shape.dim) for shape in data.input_param.shape] == [[15, 3, 224, 224], [15, 1]]
    assert plain.layer[-1].type == "EuclideanLoss" and list(plain.layer[-1].bottom) == ["fc8_m", "target"]
    trunk = [layer.name for layer in net_param.layer if layer.type != "Python"]
    assert [layer.name for layer in plain.layer[1:-1]] == trunk


def test_loss_falls_needs_finite_losses_and_a_lower_last():
    assert gpu_check.loss_falls([20.0, 21.0, 19.5])
    assert not gpu_check.loss_falls([20.0, 19.0, 20.0])
    assert not gpu_check.loss_falls([20.0, float("nan"), 10.0])
    assert not gpu_check.loss_falls([20.0, float("inf")])
    assert not gpu_check.loss_falls([20.0])


def test_parse_steps_keeps_run_order_and_rejects_unknown_names():
    assert gpu_check.parse_steps("time,train") == ["train", "time"]
    with pytest.raises(InputError):
        gpu_check.parse_steps("train,fast")
    with pytest.raises(InputError):
        gpu_check.parse_steps(",")


@needs_caffe
def test_bad_command_line_exits_2(tmp_path):
    done = run_check("--cpu-smoke", "--out", str(tmp_path), "--steps", "compare")
    assert done.returncode == 2 and "--out is a folder" in done.stderr
    done = run_check("--cpu-smoke", "--out", str(tmp_path / "g.json"), "--base-lr", "-1")
    assert done.returncode == 2 and "--base-lr" in done.stderr
