"""What derived data were made from: file fingerprints, their differences, and the messages that name them.

Every derived artefact of the pipeline (rank sets, fine-tuning lists, run folders, evaluation results)
records the identity of its inputs, not only their paths, and compares it on the next run: a difference is
rebuilt or refused with a message naming what changed, never silently reused.

A file's identity is its size and modification time (``[size, mtime_ns]``), plus, where reading it is
cheap enough to be worth it, the SHA-256 of its content (``[size, mtime_ns, sha256]``). With a hash
recorded, a file whose modification time moved but whose content did not (a copy, a restored backup) still
counts as unchanged: the hash is computed again only for the files whose size or time changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A file's record: [size, mtime_ns] or [size, mtime_ns, sha256]; a missing file is [-1, -1].
Record = list
MISSING: Record = [-1, -1]
#: How many file names a message lists before "and N more".
SHOWN = 5


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """SHA-256 (hex) of a JSON value written with sorted keys: a digest of a definition."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_record(path: str | os.PathLike, with_hash: bool = False) -> Record:
    """``[size, mtime_ns]`` (``+ [sha256]`` with ``with_hash``) of a file; :data:`MISSING` when absent."""
    try:
        stat = os.stat(path)
    except OSError:
        return list(MISSING)
    record = [int(stat.st_size), int(stat.st_mtime_ns)]
    if with_hash:
        record.append(sha256_file(path))
    return record


def fingerprint(files: Mapping[str, str | os.PathLike], hash_below: int = 0) -> dict[str, Record]:
    """Name -> record of every file in ``files`` (name -> path); files smaller than ``hash_below`` bytes
    also get their SHA-256."""
    out: dict[str, Record] = {}
    for name, path in files.items():
        record = file_record(path)
        if record != MISSING and record[0] < hash_below:
            record.append(sha256_file(path))
        out[name] = record
    return out


def folder_files(folder: str | os.PathLike) -> dict[str, Path]:
    """Every regular file under ``folder`` (recursive, hidden ones left out), by its path relative to it."""
    root = Path(folder)
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        found[relative.as_posix()] = path
    return found


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


@dataclass
class Changes:
    """How a set of files differs from its records (names sorted)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    records: dict[str, Record] = field(default_factory=dict)  # the current records, hashes refreshed

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def describe(self) -> str:
        """``2 modified (a.png, b.png), 1 added (c.png)``; empty when nothing changed."""
        parts = [f"{len(names)} {kind} ({_names(names)})"
                 for kind, names in (("modified", self.modified), ("added", self.added),
                                     ("removed", self.removed)) if names]
        return ", ".join(parts)


def compare(old: Mapping[str, Record], files: Mapping[str, str | os.PathLike]) -> Changes:
    """The differences between the records ``old`` and the files ``files`` (name -> path) now.

    A name in both counts as modified when its size differs, or its modification time differs and either
    no hash was recorded or the content's hash differs; a file that disappeared counts as removed.
    """
    changes = Changes()
    for name in sorted(set(old) | set(files)):
        if name not in files:
            changes.removed.append(name)
            continue
        now = file_record(files[name])
        if now == MISSING:
            changes.removed.append(name)
            continue
        if name not in old:
            changes.added.append(name)
            changes.records[name] = now
            continue
        before = list(old[name])
        if now[:2] == before[:2]:
            changes.records[name] = before
            continue
        if now[0] == before[0] and len(before) > 2:
            digest = sha256_file(files[name])
            if digest == before[2]:  # touched, not changed
                changes.records[name] = [*now, digest]
                continue
        changes.modified.append(name)
        changes.records[name] = now + ([sha256_file(files[name])] if len(before) > 2 else [])
    return changes


def diff_records(old: Mapping[str, Record], new: Mapping[str, Record]) -> Changes:
    """How two sets of records differ by size and modification time (no file is read)."""
    changes = Changes(records=dict(new))
    for name in sorted(set(old) | set(new)):
        before = list(old[name])[:2] if name in old else None
        after = list(new[name])[:2] if name in new else None
        if before == after:
            continue
        if after is None or (after == MISSING and before is not None):
            changes.removed.append(name)
        elif before is None or before == MISSING:
            changes.added.append(name)
        else:
            changes.modified.append(name)
    return changes


def content(files: Mapping[str, str | os.PathLike]) -> dict[str, str]:
    """Name -> SHA-256 of every file that exists in ``files``: the identity of outputs that are small and
    must be byte-for-byte what was written (the same inputs give the same record)."""
    return {name: sha256_file(path) for name, path in files.items() if Path(path).is_file()}


def compare_content(old: Mapping[str, str], files: Mapping[str, str | os.PathLike]) -> Changes:
    """How the files recorded by :func:`content` differ now (only the recorded names are looked at)."""
    now = content({name: files[name] for name in old if name in files})
    return Changes(removed=sorted(name for name in old if name not in now),
                   modified=sorted(name for name in old if name in now and now[name] != old[name]))


def differences(old: Mapping[str, Any], new: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """``key: old -> new`` for each of ``keys`` whose values differ (a key absent from ``old`` is not
    compared: records written before the key existed stay usable)."""
    return [f"{key}: {old[key]!r} -> {new.get(key)!r}" for key in keys
            if key in old and old[key] != new.get(key)]


def read_json(path: str | os.PathLike) -> dict | None:
    """A JSON object from ``path``; None when the file is absent, unreadable or not an object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
