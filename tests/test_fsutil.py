"""rankiqa.fsutil and the full-disk path of rankiqa.errors: a write the file system refuses (full, read-only)
is one clear error naming the file and the space involved, the file it replaces is kept, and nothing
half-written is left; cli_main turns such an error into a one-line message and exit status 2."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
from pathlib import Path

import pytest

from rankiqa import fsutil
from rankiqa.errors import InputError, cli_main
from rankiqa.fsutil import StorageError


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_a_write_that_does_not_fit_names_the_file_and_keeps_the_old_one(small_fs):
    fs = small_fs(64 << 10)
    target = fs / "out" / "data.bin"
    fsutil.atomic_write_bytes(target, b"old")
    data = b"x" * (200 << 10)
    with pytest.raises(StorageError) as caught:
        fsutil.atomic_write_bytes(target, data)
    err = caught.value
    assert err.path == str(target) and err.needed == len(data)
    assert err.free is not None and err.free < len(data)
    assert str(err).startswith(f"{target}: cannot write: {os.strerror(errno.ENOSPC)} (needs 200.0 KiB, ")
    assert "run the same command again" in str(err)
    assert target.read_bytes() == b"old" and _leftovers(target.parent) == []


def test_a_read_only_file_system_is_named_too(small_fs):
    fs = small_fs(64 << 10)
    (fs / "out").mkdir()
    small_fs.remount(fs, "ro")
    with pytest.raises(StorageError) as caught:
        fsutil.atomic_write_text(fs / "out" / "table.csv", "a,b\n")
    assert caught.value.path == str(fs / "out" / "table.csv")
    assert str(caught.value) == (f"{fs / 'out' / 'table.csv'}: cannot write: {os.strerror(errno.EROFS)}; "
                                 + fsutil.READ_ONLY_ADVICE)
    with pytest.raises(StorageError) as caught:  # a folder that cannot be made: the same error
        fsutil.atomic_write_text(fs / "new" / "table.csv", "a,b\n")
    assert caught.value.path == str(fs / "new" / "table.csv")


def test_an_injected_enospc_becomes_a_storage_error_and_leaves_no_temporary(tmp_path, monkeypatch):
    def full(self, data):
        self.write_text("half")  # a part got written before the disk filled
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(StorageError) as caught:
        fsutil.atomic_write_bytes(tmp_path / "x.png", b"0123456789")
    assert caught.value.path == str(tmp_path / "x.png") and caught.value.needed == 10
    assert caught.value.free is not None  # read from the file system when the error was raised
    assert list(tmp_path.iterdir()) == []


def test_other_errors_inside_an_atomic_write_keep_their_own_type(tmp_path):
    # Reading an input inside the block fails with "permission denied": not the output's fault.
    with pytest.raises(PermissionError), fsutil.atomic_path(tmp_path / "out.tar"):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/some/input")
    assert list(tmp_path.iterdir()) == []


def test_require_free_space_refuses_with_the_figures(small_fs):
    fs = small_fs(256 << 10)
    free = fsutil.free_bytes(fs / "not" / "yet" / "made")  # measured on the nearest existing parent
    assert free == shutil.disk_usage(fs).free and 0 < free <= 256 << 10
    fsutil.require_free_space(fs, free, "a snapshot")  # exactly enough is enough
    with pytest.raises(StorageError) as caught:
        fsutil.require_free_space(fs, free + 1, "a snapshot")
    assert (caught.value.needed, caught.value.free, caught.value.path) == (free + 1, free, str(fs))
    assert "not enough free space for a snapshot" in str(caught.value)


def test_storage_error_is_an_input_error_and_survives_pickling():
    err = StorageError("cannot write: full", "/x/y.png", needed=3 << 20, free=1536, note="resume from z",
                       advice="try again")
    assert isinstance(err, InputError)
    assert str(err) == "/x/y.png: cannot write: full (needs 3.0 MiB, 1.5 KiB free); resume from z; try again"
    copy = pickle.loads(pickle.dumps(err))  # as a worker process of a pool hands it back
    assert type(copy) is StorageError and str(copy) == str(err)
    assert (copy.path, copy.needed, copy.free, copy.note) == ("/x/y.png", 3 << 20, 1536, "resume from z")
    assert str(err.with_note("later")) == str(err).replace("resume from z", "later")
    plain = pickle.loads(pickle.dumps(InputError("bad", "/a.txt", 3)))
    assert (plain.path, plain.line, str(plain)) == ("/a.txt", 3, "/a.txt:3: bad")


def test_format_bytes():
    assert [fsutil.format_bytes(n) for n in (0, 1023, 1024, 1536, 5 << 20, 3 << 30)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 MiB", "3.0 GiB"]


def test_cli_main_turns_a_stray_full_disk_error_into_one_line(capsys):
    @cli_main
    def full() -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out.csv")

    @cli_main
    def missing() -> int:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/data/in.csv")

    assert full() == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: /data/out.csv: cannot write: {os.strerror(errno.ENOSPC)}")
    assert err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(FileNotFoundError):  # not a refused write: a bug or a missing check, shown as such
        missing()
