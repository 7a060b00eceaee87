"""Turn a training log into a loss table (CSV) and a loss curve (PNG).

Two log formats are understood:

* the driver's own ``log.txt`` (``tools/train.py``), whose event lines read
  ``<time> train iter=20 loss=1.25 lr=0.0001`` / ``<time> test iter=100 loss=0.9 srocc=0.61 plcc=0.64`` /
  ``<time> start iter=0 ...``;
* a plain Caffe (glog) log of ``caffe train``: ``Iteration 20 (...), loss = 1.25``,
  ``Iteration 20, lr = 1e-4``, ``Iteration 100, Testing net (#0)`` then ``Test net output #0: loss = 0.9``.

A ``start iter=K`` line (written whenever a run starts or resumes at iteration K) drops the rows above K,
because those iterations are about to be trained again: the table of a resumed run therefore equals the table
of an uninterrupted one. The trainer feeds its lines through the same :class:`LossTable` while it trains, so
``python -m tools.logparse runs/<name>/log.txt`` reproduces ``loss.csv`` exactly.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from pathlib import Path

from rankiqa.errors import InputError
from rankiqa.fsutil import atomic_path, atomic_write_text

_EVENT = re.compile(r"\b(train|test|start) iter=(\d+)((?:\s+[A-Za-z_][\w.]*=\S+)*)\s*$")
_PAIR = re.compile(r"([A-Za-z_][\w.]*)=(\S+)")
_CAFFE_LOSS = re.compile(r"\bIteration (\d+)(?: \([^)]*\))?, loss = (\S+)")
_CAFFE_LR = re.compile(r"\bIteration (\d+), lr = (\S+)")
_CAFFE_TESTING = re.compile(r"\bIteration (\d+), Testing net")
_CAFFE_TEST_OUT = re.compile(r"\bTest net output #\d+: (\S+) = (\S+)")

#: Test columns shown first, in this order; any other test output follows alphabetically.
_PREFERRED_TEST_KEYS = ("loss", "srocc", "plcc")


def _number(text: str) -> float | None:
    """Parse a float; ``None`` for text that is not a number (keeps a stray line from aborting a parse)."""
    try:
        return float(text)
    except ValueError:
        return None


class LossTable:
    """Rows keyed by iteration: ``train_loss``, ``lr`` and ``test_<name>`` values."""

    def __init__(self) -> None:
        self._rows: dict[int, dict[str, float]] = {}
        self._caffe_test_iter: int | None = None

    def _set(self, iteration: int, key: str, value: float | None) -> None:
        if value is None:
            return
        self._rows.setdefault(iteration, {})[key] = value

    def truncate(self, iteration: int) -> None:
        """Forget rows above ``iteration`` (they are about to be trained again after a resume)."""
        self._rows = {it: row for it, row in self._rows.items() if it <= iteration}

    def add_train(self, iteration: int, loss: float, lr: float | None = None) -> None:
        """Record the (window-averaged) training loss at ``iteration``."""
        self._set(iteration, "train_loss", loss)
        self._set(iteration, "lr", lr)

    def add_test(self, iteration: int, values: dict[str, float]) -> None:
        """Record test-net outputs at ``iteration`` (keys become ``test_<key>`` columns)."""
        for key, value in values.items():
            self._set(iteration, f"test_{key}", value)

    def feed(self, line: str) -> None:
        """Take one log line; lines that are not events are ignored."""
        match = _EVENT.search(line)
        if match:
            kind, iteration = match.group(1), int(match.group(2))
            pairs = {k: v for k, v in _PAIR.findall(match.group(3))}
            if kind == "start":
                self.truncate(iteration)
            elif kind == "train":
                loss = _number(pairs.get("loss", ""))
                if loss is not None:
                    self.add_train(iteration, loss, _number(pairs.get("lr", "")))
            else:
                values = {k: _number(v) for k, v in pairs.items()}
                self.add_test(iteration, {k: v for k, v in values.items() if v is not None})
            return
        self._feed_caffe(line)

    def _feed_caffe(self, line: str) -> None:
        match = _CAFFE_TESTING.search(line)
        if match:
            self._caffe_test_iter = int(match.group(1))
            return
        match = _CAFFE_TEST_OUT.search(line)
        if match and self._caffe_test_iter is not None:
            self._set(self._caffe_test_iter, f"test_{match.group(1)}", _number(match.group(2)))
            return
        match = _CAFFE_LOSS.search(line)
        if match:
            self._set(int(match.group(1)), "train_loss", _number(match.group(2)))
            return
        match = _CAFFE_LR.search(line)
        if match:
            self._set(int(match.group(1)), "lr", _number(match.group(2)))

    def columns(self) -> list[str]:
        """Column names: ``iteration, train_loss, lr`` then the test columns present."""
        keys = {key for row in self._rows.values() for key in row}
        test_keys = sorted(k for k in keys if k.startswith("test_"))
        preferred = [f"test_{k}" for k in _PREFERRED_TEST_KEYS if f"test_{k}" in keys]
        rest = [k for k in test_keys if k not in preferred]
        return ["iteration", "train_loss", "lr", *preferred, *rest]

    def rows(self) -> list[dict[str, float]]:
        """Rows sorted by iteration, each with an ``iteration`` key."""
        return [{"iteration": it, **self._rows[it]} for it in sorted(self._rows)]

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(iterations, values) of one column, skipping rows without it."""
        pairs = [(it, row[key]) for it, row in sorted(self._rows.items()) if key in row]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def to_csv(self) -> str:
        """The table as CSV text (empty cells where a row lacks a column)."""
        buffer = io.StringIO()
        columns = self.columns()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in self.rows():
            cells = []
            for column in columns:
                value = row.get(column)
                if value is None:
                    cells.append("")
                elif column == "iteration":
                    cells.append(str(int(value)))
                else:
                    cells.append(f"{value:.6g}")
            writer.writerow(cells)
        return buffer.getvalue()


def parse_log(path: str | os.PathLike) -> LossTable:
    """Read a log file (driver or Caffe format) into a :class:`LossTable`."""
    path = Path(path)
    if not path.is_file():
        raise InputError("log file not found", path)
    table = LossTable()
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            table.feed(line)
    return table


def write_csv(table: LossTable, path: str | os.PathLike) -> None:
    """Write the table as CSV, atomically."""
    atomic_write_text(path, table.to_csv())


def plot(table: LossTable, path: str | os.PathLike, title: str = "") -> None:
    """Draw the loss curve(s) (and SROCC/PLCC when present) to a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")  # no display: CI, ssh, make
    import matplotlib.pyplot as plt

    columns = table.columns()
    corr_keys = [c for c in columns if c in ("test_srocc", "test_plcc")]
    n_axes = 2 if corr_keys else 1
    fig, axes = plt.subplots(n_axes, 1, figsize=(7, 3.2 * n_axes), squeeze=False)
    ax = axes[0][0]
    for key, label in (("train_loss", "train loss"), ("test_loss", "test loss")):
        xs, ys = table.series(key)
        finite = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
        if finite:
            ax.plot([p[0] for p in finite], [p[1] for p in finite], label=label,
                    marker="o" if key == "test_loss" else None, markersize=3)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    if title:
        ax.set_title(title)
    if corr_keys:
        ax2 = axes[1][0]
        for key in corr_keys:
            xs, ys = table.series(key)
            ax2.plot(xs, ys, marker="o", markersize=3, label=key.removeprefix("test_").upper())
        ax2.set_xlabel("iteration")
        ax2.set_ylabel("correlation (test)")
        ax2.grid(alpha=0.3)
        ax2.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
