"""The original RankIQA list format: one ``<path> <value>`` per line (space or tab between them).

Rank lists carry a distortion level (0 = pristine, higher = more distorted); fine-tuning lists carry
a quality score. Relative paths are resolved against ``root`` (default: the list file's folder).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from rankiqa.errors import InputError
from rankiqa.fsutil import atomic_write_text

#: Hand-made text files (lists, label files, tables, manifests, prototxts) may start with a UTF-8 byte-order
#: mark (Windows editors, spreadsheet exports): every reader opens them with this encoding, so that all
#: treat it alike (it is dropped when present).
TEXT_ENCODING = "utf-8-sig"

_PATH_VALUE = re.compile(r"^(.*\S)\s+(\S+)$")


def open_text(path: str | os.PathLike, newline: str | None = None, errors: str = "strict") -> TextIO:
    """Open a hand-made text file for reading (UTF-8, a byte-order mark dropped)."""
    return open(path, encoding=TEXT_ENCODING, newline=newline, errors=errors)


def split_path_value(line: str) -> tuple[str, str] | None:
    """``(path, value)`` of a ``<path> <value>`` line: the value is the last field, the path everything
    before the whitespace (spaces or tabs) ahead of it, so paths may hold spaces; None without two fields."""
    match = _PATH_VALUE.match(line.strip())
    return (match.group(1), match.group(2)) if match else None


def read_list(list_path: str | os.PathLike, root: str | os.PathLike | None = None,
              check_files: bool = True) -> list[tuple[str, float]]:
    """Read a ``<path> <value>`` list; return (resolved path, value) pairs.

    Raises ``InputError`` naming the file and line for a malformed line, a value that is not a
    finite number, or (with ``check_files``) an image that does not exist.
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise InputError("list file not found", list_path)
    base = Path(root) if root is not None else list_path.parent
    rows: list[tuple[str, float]] = []
    with open_text(list_path) as handle:
        for lineno, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = split_path_value(line)
            if fields is None:
                raise InputError(f"expected '<path> <value>', got {line!r}", list_path, lineno)
            path_text, value_text = fields
            try:
                value = float(value_text)
            except ValueError:
                raise InputError(f"value {value_text!r} is not a number", list_path, lineno) from None
            if not math.isfinite(value):
                raise InputError(f"value {value_text!r} is not finite", list_path, lineno)
            path = Path(path_text)
            if not path.is_absolute():
                path = base / path
            if check_files and not path.is_file():
                raise InputError(f"image not found: {path}", list_path, lineno)
            rows.append((str(path), value))
    if not rows:
        raise InputError("list is empty", list_path)
    return rows


def write_list(list_path: str | os.PathLike, rows: Iterable[tuple[str, float]],
               decimals: int | None = None) -> None:
    """Write ``<path> <value>`` lines atomically.

    With ``decimals`` every value is written with that many (``%.2f`` for 2, as the original's fine-tuning
    lists); without, integral values are written without decimals and others in full (``repr``).
    """
    lines = []
    for path, value in rows:
        if "\n" in str(path):
            raise ValueError(f"path cannot hold a newline: {path!r}")
        if decimals is not None:
            text = f"{float(value):.{decimals}f}"
        else:
            text = str(int(value)) if float(value).is_integer() else repr(float(value))
        lines.append(f"{path} {text}\n")
    atomic_write_text(list_path, "".join(lines))


def count_list_lines(path: Path) -> int:
    """Non-empty, non-comment lines of a ``<path> <value>`` list (0 when the file is absent)."""
    if not path.is_file():
        return 0
    with open_text(path) as handle:
        return sum(1 for line in handle if line.strip() and not line.lstrip().startswith("#"))
