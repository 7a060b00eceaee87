"""rankiqa.trainer: the learning rate it logs, a diverged loss (real nets: tests/test_train.py)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from rankiqa import runlog, trainer
from rankiqa.errors import TrainingError
from tests.caffe_marks import needs_caffe


def test_learning_rate_follows_caffe_policies():
    param = types.SimpleNamespace(lr_policy="step", base_lr=1e-4, gamma=0.1, stepsize=10000, stepvalue=[],
                                  power=0.0, max_iter=50000)
    assert trainer.learning_rate(param, 0) == pytest.approx(1e-4)
    assert trainer.learning_rate(param, 9999) == pytest.approx(1e-4)
    assert trainer.learning_rate(param, 10000) == pytest.approx(1e-5)
    assert trainer.learning_rate(param, 49999) == pytest.approx(1e-8)
    param.lr_policy, param.stepvalue = "multistep", [5, 8]
    assert [trainer.learning_rate(param, i) for i in (4, 5, 8)] == pytest.approx([1e-4, 1e-5, 1e-6])


class _DivergingSolver:
    """A stand-in for a Caffe solver whose loss turns to NaN at its second iteration."""

    def __init__(self) -> None:
        self.iter = 0
        self.test_nets: list = []
        loss = types.SimpleNamespace(data=np.array(1.0))
        self.net = types.SimpleNamespace(blob_loss_weights={"loss": 1.0}, outputs=["loss"],
                                         blobs={"loss": loss}, layers=[])

    def step(self, count: int) -> None:
        self.iter += count
        self.net.blobs["loss"].data = np.array(float("nan") if self.iter >= 2 else 1.0)


@needs_caffe
def test_a_diverged_loss_stops_training_with_a_training_error(tmp_path):
    (tmp_path / "train.prototxt").write_text('name: "tiny"\n')
    (tmp_path / "solver.prototxt").write_text("base_lr: 0.1\nmax_iter: 10\n")
    run = trainer.PreparedRun(kind="rank", run_dir=tmp_path, solver_path=tmp_path / "solver.prototxt",
                              train_net=tmp_path / "train.prototxt", snapshot_dir=tmp_path / "snapshots",
                              max_iter=10, snapshot_every=0, display=1, test_interval=0, test_iters=0,
                              test_items=None, weights=None, resume=None)
    (tmp_path / "snapshots").mkdir()
    log = runlog.RunLog(tmp_path, echo=False)
    with pytest.raises(TrainingError, match=r"solver\.prototxt: the loss is nan at iteration 2: training "
                                            r"diverged; lower --lr"):
        trainer._loop(None, _DivergingSolver(), run, log, None)
    log.close()
    assert "error: the loss is nan at iteration 2" in (tmp_path / "log.txt").read_text()
    assert not any((tmp_path / "snapshots").glob("*_iter_*"))  # no snapshot of diverged weights
