"""rankiqa.devices: GPU lists, the data share of each GPU process, NCCL ids, one process per GPU."""

from __future__ import annotations

import sys

import pytest

from rankiqa import devices, trainer
from rankiqa.errors import InputError, TrainingError


def test_parse_gpus_accepts_lists_and_rejects_junk():
    assert devices.parse_gpus("0,1, 3") == [0, 1, 3]
    for bad in ("", "a,b", "0,0", "-1,2"):
        with pytest.raises(InputError):
            devices.parse_gpus(bad)


def test_gpu_shares_give_disjoint_data_shards_that_cover_the_stream():
    from pylayers.prefetch import Prefetcher

    shares = devices.gpu_shares([2, 5, 7])
    assert [(s.index, s.device, s.shard_index, s.shard_count) for s in shares] == [
        (0, 2, 0, 3), (1, 5, 1, 3), (2, 7, 2, 3)]
    seen: list[set[int]] = []
    for share in shares:
        # The data layers' prefetcher, fed the share exactly as the driver writes it into param_str.
        prefetcher = Prefetcher(lambda index: index, workers=0, shard_index=share.shard_index,
                                shard_count=share.shard_count)
        batches = [prefetcher.next() for _ in range(10)]
        assert batches == list(devices.shard_of(30, share.shard_index, share.shard_count))
        seen.append(set(batches))
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert set().union(*seen) == set(range(30))
    # A resumed GPU process continues its own share where it stopped.
    resumed = Prefetcher(lambda index: index, workers=0, shard_index=1, shard_count=3, start_batch=4)
    assert resumed.next() == list(devices.shard_of(30, 1, 3))[4]
    with pytest.raises(ValueError):
        devices.shard_of(10, 3, 3)


class _FakeNccl:
    """A pycaffe stand-in whose NCCL.new_uid returns ``uid`` (the id itself needs a CUDA build)."""

    def __init__(self, uid: bytes):
        self.NCCL = type("NCCL", (), {"new_uid": staticmethod(lambda: uid)})


def test_nccl_uid_refuses_an_id_cut_at_a_zero_byte():
    # Unpatched pycaffe's bytes stop at the id's first zero byte (9 bytes seen from such a build).
    with pytest.raises(InputError, match=r"returned 9 bytes, not 128 \(BVLC/caffe#6600\)"):
        devices.nccl_uid(_FakeNccl(b"\xc4\x08>bj\xd4\xc4\x7f\x02"))
    full = bytes(range(128))
    assert devices.nccl_uid(_FakeNccl(full)) == full


def _first_fails_second_waits(run, share, uid):
    """A stand-in for a multi-GPU process: process 0 stops with an error (a full disk at its snapshot),
    process 1 waits for it as it would inside NCCL's all-reduce."""
    import time

    if share.index == 0:
        print("error: no room for the snapshot", file=sys.stderr)
        sys.exit(2)
    time.sleep(60)
    (run.run_dir / "second_went_on").touch()  # only when nobody stopped it


def test_a_multi_gpu_run_whose_process_fails_stops_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "import_caffe", lambda: None)
    monkeypatch.setattr(devices, "require_nccl", lambda caffe: None)
    monkeypatch.setattr(devices, "nccl_uid", lambda caffe: bytes(128))
    run = trainer.PreparedRun(kind="rank", run_dir=tmp_path, solver_path=tmp_path / "solver.prototxt",
                            train_net=tmp_path / "train.prototxt", snapshot_dir=tmp_path / "snapshots",
                            max_iter=4, snapshot_every=2, display=1, test_interval=0, test_iters=0,
                            test_items=None, weights=None, resume=None)
    with pytest.raises(TrainingError, match=r"^multi-GPU training failed in process 0 \(GPU 3\) \(see "):
        trainer.train_multi_gpu(run, devices.gpu_shares([3, 1]), worker=_first_fails_second_waits)
    assert not (tmp_path / "second_went_on").exists()
