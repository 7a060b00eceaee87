"""Files that are either complete or absent: write to a temporary name, then rename.

A write the file system refuses (full disk, quota, read-only file system, a folder without write permission)
becomes a :class:`StorageError` naming the file and, where known, how much space the write needed and how
much was free: the user's to fix, reported without a traceback by ``rankiqa.errors.cli_main``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rankiqa.errors import InputError

#: errno values with which a file system refuses a write. ``EACCES``/``EPERM`` are left out: a read raises
#: them too, and the converters below only see what they wrap.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
#: The same plus a folder the user may not write in: for code that knows it was writing.
WRITE_ERRNOS = STORAGE_ERRNOS | {errno.EACCES, errno.EPERM}

#: What a user can do about a refused write; every writer of the project keeps finished work, so the same
#: command carries on from it.
STORAGE_ADVICE = ("free some space (or choose another output folder) and run the same command again: "
                  "finished work is kept")
READ_ONLY_ADVICE = ("make the folder writable (or choose another output folder) and run the same command "
                    "again: finished work is kept")


def format_bytes(size: int) -> str:
    """``1536`` -> ``'1.5 KiB'``: binary units, one decimal from KiB up."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class StorageError(InputError):
    """A write refused by the file system: ``path: reason (needs N, M free); note; advice``.

    ``needed`` and ``free`` are bytes (``None`` where unknown); ``note`` says what the caller did about it
    (e.g. which snapshot a rerun resumes from). A subclass of ``InputError``, so command-line ``main``s
    exit with status 2 and a one-line message.
    """

    def __init__(self, reason: str, path: str | os.PathLike | None = None, needed: int | None = None,
                 free: int | None = None, note: str | None = None, advice: str = STORAGE_ADVICE) -> None:
        self.reason = reason
        self.needed = needed
        self.free = free
        self.note = note
        self.advice = advice
        sizes = []
        if needed is not None:
            sizes.append(f"needs {format_bytes(needed)}")
        if free is not None:
            sizes.append(f"{format_bytes(free)} free")
        text = reason + (f" ({', '.join(sizes)})" if sizes else "")
        super().__init__("; ".join([text, *([note] if note else []), advice]), path)

    def with_note(self, note: str) -> StorageError:
        """The same error with ``note`` added."""
        return StorageError(self.reason, self.path, self.needed, self.free, note, self.advice)

    def __reduce__(self):  # keep the fields through pickling (worker processes of a pool)
        return (type(self), (self.reason, self.path, self.needed, self.free, self.note, self.advice))


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes an unprivileged user may still write on the file system holding ``path`` (or its nearest
    existing parent); ``None`` when no parent can be examined."""
    candidate = Path(os.path.abspath(path))
    for folder in (candidate, *candidate.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def storage_error(err: OSError, path: str | os.PathLike | None = None, needed: int | None = None,
                  errnos: frozenset[int] = STORAGE_ERRNOS) -> StorageError | None:
    """The :class:`StorageError` for ``err`` when its errno is one of ``errnos``, else ``None``.

    ``path`` names the file being written (default: the one the error names); ``needed`` is the size of the
    write in bytes, when known. The free space is read from the file system at the time of the call.
    """
    if err.errno not in errnos:
        return None
    where = path if path is not None else (err.filename or None)
    reason = f"cannot write: {os.strerror(err.errno)}"
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        free = free_bytes(where) if where is not None else None
        return StorageError(reason, where, needed=needed, free=free)
    return StorageError(reason, where, advice=READ_ONLY_ADVICE)


@contextlib.contextmanager
def storage_errors(path: str | os.PathLike, needed: int | None = None,
                   errnos: frozenset[int] = WRITE_ERRNOS) -> Iterator[None]:
    """Turn a refused write inside the block into a :class:`StorageError` naming ``path``.

    The default ``errnos`` include "permission denied": for blocks that only write. A block that also reads
    passes ``STORAGE_ERRNOS``, so that an unreadable input keeps its own error.
    """
    try:
        yield
    except OSError as err:
        converted = storage_error(err, path, needed, errnos)
        if converted is None:
            raise
        raise converted from None


def require_free_space(path: str | os.PathLike, needed: int, what: str) -> None:
    """Raise :class:`StorageError` when the file system of ``path`` has fewer than ``needed`` bytes free.

    For long writes whose size is known beforehand (a snapshot, an LMDB): refusing at the start beats
    failing at the end. ``what`` names the write in the message.
    """
    free = free_bytes(path)
    if free is not None and free < needed:
        raise StorageError(f"not enough free space for {what}", path, needed=needed, free=free)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On an exception (or Ctrl-C) the temporary file is removed and ``path`` is left as it was,
    so an interrupted job never leaves a half-written output behind. A write the file system refuses
    raises :class:`StorageError` naming ``path`` (``needed``: the size of the write in bytes, when known).
    """
    final = Path(path)
    with storage_errors(final, needed):
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + final.suffix,
                                        dir=final.parent)
        os.close(fd)
    tmp = Path(tmp_name)
    # The block may read other files too: only a full or read-only file system is blamed on ``path``.
    with storage_errors(final, needed, STORAGE_ERRNOS):
        try:
            yield tmp
            # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
            umask = os.umask(0)
            os.umask(umask)
            if tmp.exists():
                tmp.chmod(0o666 & ~umask)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    data = text.encode("utf-8")
    with atomic_path(path, len(data)) as tmp:
        tmp.write_bytes(data)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, len(data)) as tmp:
        tmp.write_bytes(data)
