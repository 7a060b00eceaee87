"""Tests of rankiqa/caffe_time.py: running Caffe's own ``caffe time`` on our nets and reading its log."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rankiqa import caffe_time
from tests.caffe_marks import needs_caffe

# A trimmed ``caffe time`` log of the Shallow training net (glog lines as the binary writes them).
LOG = """I1129 20:24:23.517381 26490 caffe.cpp:366] Testing for 3 iterations.
I1129 20:24:26.922663 26490 caffe.cpp:394] Iteration: 1 forward-backward time: 3405 ms.
I1129 20:24:30.677415 26490 caffe.cpp:394] Iteration: 2 forward-backward time: 3754 ms.
I1129 20:24:34.045945 26490 caffe.cpp:394] Iteration: 3 forward-backward time: 3368.5 ms.
I1129 20:24:39.597280 26490 caffe.cpp:397] Average time per layer:
I1129 20:24:39.597285 26490 caffe.cpp:400]       data\tforward: 47.1292 ms.
I1129 20:24:39.597291 26490 caffe.cpp:403]       data\tbackward: 0.8324 ms.
I1129 20:24:39.597304 26490 caffe.cpp:400]      conv1\tforward: 632.097 ms.
I1129 20:24:39.597308 26490 caffe.cpp:403]      conv1\tbackward: 768.544 ms.
I1129 20:24:39.597395 26490 caffe.cpp:400]       loss\tforward: 1.7912 ms.
I1129 20:24:39.597399 26490 caffe.cpp:403]       loss\tbackward: 0.03 ms.
I1129 20:24:39.597411 26490 caffe.cpp:408] Average Forward pass: 78.85 ms.
I1129 20:24:39.597415 26490 caffe.cpp:410] Average Backward pass: 104.5 ms.
I1129 20:24:39.597419 26490 caffe.cpp:412] Average Forward-Backward: 184 ms.
"""


def test_parse_caffe_time_reads_the_averages():
    assert caffe_time.parse_caffe_time(LOG) == {"forward_ms": 78.85, "backward_ms": 104.5,
                                                "forward_backward_ms": 184.0}
    assert caffe_time.parse_caffe_time("F1126 Check failed: error == cudaSuccess") == {}


def test_parse_iterations_and_the_per_layer_table():
    assert caffe_time.parse_iterations(LOG) == [3405.0, 3754.0, 3368.5]
    assert caffe_time.parse_layers(LOG) == [
        {"layer": "data", "forward_ms": 47.1292, "backward_ms": 0.8324},
        {"layer": "conv1", "forward_ms": 632.097, "backward_ms": 768.544},
        {"layer": "loss", "forward_ms": 1.7912, "backward_ms": 0.03}]
    # Lines before the table (the net's set-up log names layers too) are not taken for it.
    assert caffe_time.parse_layers("I1 net.cpp:200] conv1\tforward: 1 ms.\n") == []


def test_caffe_env_carries_this_sys_path_and_extras(monkeypatch, tmp_path):
    monkeypatch.setattr("sys.path", [str(tmp_path), "", str(tmp_path / "absent"), str(tmp_path)])
    env = caffe_time.caffe_env({"OPENBLAS_NUM_THREADS": "1"})
    assert env["PYTHONPATH"] == str(tmp_path)  # existing folders only, once each
    assert env["OPENBLAS_NUM_THREADS"] == "1" and env["GLOG_logtostderr"] == "1"


def test_run_command_timeout_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "child.pid"
    # The shell starts a background child (as tools/train.py starts its GPU workers) and waits for it.
    result = caffe_time.run_command(["bash", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], timeout=1)
    assert result["returncode"] is None and result["error"] == "timed out after 1 s"
    child = int(pid_file.read_text())
    # Reaped by init once killed; a zombie for a moment at most.
    for _ in range(50):
        try:
            state = Path(f"/proc/{child}/stat").read_text().split()[2]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the background child {child} survived the timeout")


def test_run_command_reports_a_missing_program_and_the_exit_status(tmp_path):
    assert caffe_time.run_command(["/nonexistent/program"], timeout=5)["error"] == "not found"
    done = caffe_time.run_command(["bash", "-c", "echo out; pwd >&2; exit 3"], timeout=5, cwd=tmp_path)
    assert done["returncode"] == 3 and "out" in done["output"] and str(tmp_path) in done["output"]


@pytest.mark.slow
@needs_caffe
def test_caffe_time_runs_a_net_with_our_python_loss_layer(tmp_path):
    from rankiqa.caffe_io import import_caffe

    net = tmp_path / "net.prototxt"
    net.write_text("""
layer { name: 'x' type: 'Input' top: 'x' top: 'label'
  input_param { shape { dim: 6 dim: 4 } shape { dim: 6 } } }
layer { name: 'score' type: 'InnerProduct' bottom: 'x' top: 'score'
  inner_product_param { num_output: 1 weight_filler { type: 'gaussian' std: 1 } } }
layer { name: 'loss' type: 'Python' bottom: 'score' bottom: 'label' top: 'loss' loss_weight: 1
  python_param { module: 'pylayers.rank_loss' layer: 'AllPairsHingeLossLayer' param_str: '{group_size: 3}' } }
""")
    result = caffe_time.caffe_time(import_caffe(), net, iterations=3, cwd=tmp_path)
    assert result["ok"], result.get("output_tail")
    assert len(result["iterations_ms"]) == 3
    assert [layer["layer"] for layer in result["layers"]] == ["x", "score", "loss"]
    assert result["forward_backward_ms"] >= 0 and result["command"].endswith("-iterations 3")
    broken = tmp_path / "broken.prototxt"
    broken.write_text(net.read_text().replace("pylayers.rank_loss", "pylayers.no_such_module"))
    failed = caffe_time.caffe_time(import_caffe(), broken, iterations=1, cwd=tmp_path)
    assert not failed["ok"] and "no 'Average Forward-Backward'" in failed["error"]
    assert "no_such_module" in failed["output_tail"]
