"""Small file systems for the tests of full-disk handling: a tmpfs of a given size, mounted in the test's
own folder and unmounted after it (``mount`` needs root or CAP_SYS_ADMIN). Where mounting is refused, the
test is skipped with that reason; the same behaviours are also tested with an injected ``ENOSPC``.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_fs(folder: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes (rounded up to whole pages) mounted on ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)
        if folder.is_mount():  # still busy (an open file): detach it, the kernel frees it when closed
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def remount(folder: Path, *options: str) -> None:
    """Change a mounted ``small_fs``: ``"size=8M"`` (more room, the data kept), ``"ro"``, ``"rw"``."""
    subprocess.run(["mount", "-o", ",".join(["remount", *options]), str(folder)], check=True)

