"""The run log: ``log.txt`` (appended, flushed per line), and the loss table behind ``loss.csv`` and
``loss.png`` (``rankiqa.logparse``)."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from rankiqa.fsutil import StorageError, storage_errors
from rankiqa.logparse import LossTable, plot, write_csv

#: ``loss.png`` is drawn again at most this often (seconds) unless forced.
PLOT_EVERY_S = 30.0


class RunLog:
    """``log.txt`` (appended, flushed per line) and the loss table behind ``loss.csv``/``loss.png``.

    A line the file system refuses raises ``StorageError`` naming ``log.txt``; a line cut short that way
    is ended before the next run appends to the log, so that no two lines run together.
    """

    def __init__(self, run_dir: Path, echo: bool = True) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "log.txt"
        self.table = LossTable()
        complete = True
        if self.path.is_file():  # a resumed run continues the same table
            with open(self.path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    self.table.feed(line)
                    complete = line.endswith("\n")
        self._broken = False
        with storage_errors(self.path):
            self._handle = open(self.path, "a", encoding="utf-8")
        if not complete:
            self._append("\n")
        self.echo = echo
        self._last_plot = 0.0

    def _append(self, text: str) -> None:
        try:
            with storage_errors(self.path, len(text.encode("utf-8"))):
                self._handle.write(text)
                self._handle.flush()
        except StorageError:
            self._broken = True  # the unwritten rest stays in the buffer: close() must not retry it
            raise

    def _write(self, text: str, show: bool) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}"
        self._append(line + "\n")
        self.table.feed(line)
        if show and self.echo:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)

    def note(self, text: str, show: bool = True) -> None:
        """A free-text line (ignored by the parser)."""
        self._write(text.replace("\n", " "), show)

    def event(self, kind: str, iteration: int, show: bool = False, **values: Any) -> None:
        """A parsed event line: ``<kind> iter=<N> key=value ...``."""
        parts = [f"{kind} iter={iteration}"]
        for key, value in values.items():
            parts.append(f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={value}")
        self._write(" ".join(parts), show)

    def flush_outputs(self, force_plot: bool = False) -> None:
        """Rewrite ``loss.csv`` (atomically) and, at most every 30 s unless forced, ``loss.png``."""
        if not self.table.rows():
            return
        write_csv(self.table, self.run_dir / "loss.csv")
        now = time.monotonic()
        if force_plot or now - self._last_plot >= PLOT_EVERY_S:
            plot(self.table, self.run_dir / "loss.png", title=self.run_dir.name)
            self._last_plot = now

    def close(self) -> None:
        """Close the log file (after a refused write, dropping what could not be written)."""
        if self._broken:
            with contextlib.suppress(OSError):
                self._handle.close()
        else:
            with storage_errors(self.path):
                self._handle.close()

