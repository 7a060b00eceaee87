"""rankiqa.runlog: log.txt when the disk refuses a line."""

from __future__ import annotations

import errno

import pytest

from rankiqa import runlog
from rankiqa.fsutil import StorageError


def test_a_log_line_the_disk_refuses_names_the_log_and_the_next_run_starts_a_new_line(tmp_path):
    class FullDisk:  # a file whose buffer the disk will not take
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

        close = flush

    log = runlog.RunLog(tmp_path, echo=False)
    log.note("first")
    real = log._handle
    log._handle = FullDisk()
    with pytest.raises(StorageError) as caught:
        log.event("train", 20, loss=1.5)
    assert caught.value.path == str(tmp_path / "log.txt") and caught.value.needed is not None
    log.close()  # what could not be written is dropped, without a second error
    real.close()
    with open(tmp_path / "log.txt", "a") as handle:
        handle.write("2024-01-01 00:00:00 train iter=2")  # a line cut short by the full disk
    log = runlog.RunLog(tmp_path, echo=False)
    log.event("start", 0)
    log.close()
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert lines[-2] == "2024-01-01 00:00:00 train iter=2" and lines[-1].endswith(" start iter=0")
