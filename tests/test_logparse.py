"""rankiqa.logparse (the driver's log and a Caffe log to a loss table) and its command, tools/logparse.py."""

from __future__ import annotations

from rankiqa import logparse
from tools import logparse as logparse_command


def test_logparse_driver_log_resume_truncates_and_caffe_log(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("\n".join([
        "2024-01-01 00:00:00 start iter=0 max_iter=60",
        "2024-01-01 00:00:01 test iter=0 loss=9.5 srocc=0.1 plcc=0.2",
        "2024-01-01 00:00:02 train iter=20 loss=8 lr=0.001",
        "2024-01-01 00:00:03 train iter=40 loss=7 lr=0.001",
        "2024-01-01 00:00:04 some free text iter=3 that is not an event",
        "2024-01-01 00:00:05 start iter=20 max_iter=60",   # resumed from the iteration-20 snapshot
        "2024-01-01 00:00:06 train iter=40 loss=6.5 lr=0.001",
        "2024-01-01 00:00:07 test iter=40 loss=5 srocc=0.5 plcc=0.6",
    ]) + "\n")
    table = logparse.parse_log(log)
    assert table.columns() == ["iteration", "train_loss", "lr", "test_loss", "test_srocc", "test_plcc"]
    rows = table.rows()
    assert [r["iteration"] for r in rows] == [0, 20, 40]
    assert rows[2]["train_loss"] == 6.5 and rows[2]["test_srocc"] == 0.5
    lines = table.to_csv().splitlines()
    assert lines[0] == "iteration,train_loss,lr,test_loss,test_srocc,test_plcc"
    assert lines[1] == "0,,,9.5,0.1,0.2"

    caffe_log = tmp_path / "caffe.log"
    caffe_log.write_text(
        "I0101 solver.cpp:330] Iteration 0, Testing net (#0)\n"
        "I0101 solver.cpp:397]     Test net output #0: loss = 3.5 (* 1 = 3.5 loss)\n"
        "I0101 solver.cpp:218] Iteration 100 (2.1 iter/s, 47s/100 iters), loss = 2.25\n"
        "I0101 sgd_solver.cpp:105] Iteration 100, lr = 0.0001\n")
    caffe_rows = logparse.parse_log(caffe_log).rows()
    assert caffe_rows == [{"iteration": 0, "test_loss": 3.5},
                          {"iteration": 100, "train_loss": 2.25, "lr": 1e-4}]


def test_logparse_cli_writes_csv_png_and_rejects_bad_logs(tmp_path, capsys):
    log = tmp_path / "log.txt"
    log.write_text("t train iter=20 loss=2 lr=0.1\nt train iter=40 loss=1 lr=0.1\n")
    assert logparse_command.main([str(log)]) == 0
    assert (tmp_path / "loss.csv").read_text().splitlines()[1:] == ["20,2,0.1", "40,1,0.1"]
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    empty = tmp_path / "empty.txt"
    empty.write_text("nothing here\n")
    assert logparse_command.main([str(empty)]) == 2
    assert logparse_command.main([str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err
