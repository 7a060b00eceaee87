"""The original RankIQA list format: one ``<path> <value>`` per line.

Rank lists carry a distortion level (0 = pristine, higher = more distorted); fine-tuning lists carry
a quality score. Relative paths are resolved against ``root`` (default: the list file's folder).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

from rankiqa.errors import InputError
from rankiqa.fsutil import atomic_write_text


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
    with open(list_path, encoding="utf-8") as handle:
        for lineno, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            path_text, sep, value_text = line.rpartition(" ")
            if not sep or not path_text.strip():
                raise InputError(f"expected '<path> <value>', got {line!r}", list_path, lineno)
            try:
                value = float(value_text)
            except ValueError:
                raise InputError(f"value {value_text!r} is not a number", list_path, lineno) from None
            if not math.isfinite(value):
                raise InputError(f"value {value_text!r} is not finite", list_path, lineno)
            path = Path(path_text.strip())
            if not path.is_absolute():
                path = base / path
            if check_files and not path.is_file():
                raise InputError(f"image not found: {path}", list_path, lineno)
            rows.append((str(path), value))
    if not rows:
        raise InputError("list is empty", list_path)
    return rows


def write_list(list_path: str | os.PathLike, rows: Iterable[tuple[str, float]]) -> None:
    """Write ``<path> <value>`` lines atomically; integral values are written without decimals."""
    lines = []
    for path, value in rows:
        if "\n" in str(path):
            raise ValueError(f"path cannot hold a newline: {path!r}")
        text = str(int(value)) if float(value).is_integer() else repr(float(value))
        lines.append(f"{path} {text}\n")
    atomic_write_text(list_path, "".join(lines))
