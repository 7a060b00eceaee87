"""The rank-set manifest: ``manifest.csv`` of ``make ranks``, its columns, writer, reader and levels.

Layout (``docs/DESIGN.md``, "Ranking data"): one row per image and distortion type with the columns
``reference,type,level,path,split``; ``path`` is relative to the manifest's folder, level 0 is the pristine
image (it appears once per type), levels 1..L are ever more distorted, ``split`` is ``train`` or ``test``.
Beside it, ``images.lmdb/`` may hold the same images (key: the relative path). Written by
``data_prep.make_ranks``, read by the ranking data layers (``pylayers.rank_data``, ``pylayers.pair_data``)
and by the run preparation (``rankiqa.runprep``).

The ranking batch make-up is also stated here: a batch is ``types_per_batch`` groups, a group is one
distortion type of ``images_per_group`` references over all levels 0..L (:func:`group_size`,
:func:`batch_size`). So are the checks of a CSV row that every table reader shares: its field count
(:func:`checked_rows`: this manifest's, the rank tables of ``rankiqa.rank_accuracy``, the test tables of
``data_prep.datasets``) and its image path (:func:`row_path`: the latter two; this manifest keeps its paths
relative to its folder).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rankiqa.errors import InputError
from rankiqa.lists import open_text

#: The manifest's file name in a rank-set folder.
MANIFEST_NAME = "manifest.csv"
#: The LMDB beside it (``make ranks LMDB=1``).
LMDB_NAME = "images.lmdb"
#: Its columns, in this order.
MANIFEST_COLUMNS = ("reference", "type", "level", "path", "split")


def checked_rows(reader: csv.DictReader, path: str | os.PathLike) -> Iterator[tuple[int, dict[str, str]]]:
    """Each row of ``reader`` (default ``restkey`` and ``restval``) with the line it ends on.

    A row with fewer or more fields than the header is an ``InputError`` naming ``path`` and the line, e.g.
    ``3 fields, expected 6 (reference,type,level,path,score,direction)``: left to the caller, a short row
    would surface as a confusing message about its first absent column's ``None``, and a long one would be
    read with its extra fields silently dropped.
    """
    header = list(reader.fieldnames or [])
    for row in reader:
        # reader.line_num, not a count of rows: a quoted field may span lines
        line = reader.line_num
        # csv.DictReader leaves a short row's absent columns None and files a long row's extra fields
        # under the key None
        extra = row.get(None) or []
        count = sum(row[column] is not None for column in header) + len(extra)
        if count != len(header):
            raise InputError(f"{count} fields, expected {len(header)} ({','.join(header)})", path, line)
        yield line, row


def group_size(images_per_group: int, max_level: int) -> int:
    """Images in one group: ``images_per_group`` references x levels 0..``max_level``."""
    return images_per_group * (max_level + 1)


def batch_size(types_per_batch: int, images_per_group: int, max_level: int) -> int:
    """Images in one ranking batch: ``types_per_batch`` groups (:func:`group_size`)."""
    return types_per_batch * group_size(images_per_group, max_level)


def manifest_text(rows: Iterable[tuple[str, str, int, str, str]]) -> str:
    """The manifest as text: the header, then one line per ``(reference, type, level, path, split)``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue()


@dataclass
class RankSet:
    """The (reference x type x level) grid of one split of a manifest."""

    manifest: Path
    references: list[str]
    types: list[str]
    levels: list[int]
    paths: dict[tuple[str, str, int], str] = field(repr=False)
    lines: dict[tuple[str, str, int], int] = field(repr=False)

    @property
    def max_level(self) -> int:
        """L: the highest distortion level."""
        return self.levels[-1]


def read_manifest(manifest: str | os.PathLike, split: str) -> RankSet:
    """Read the rows of ``split`` and check that they form a complete grid of groups.

    Every (reference, type) must have the same levels 0..L and every reference every type, because a
    batch takes the same reference(s) across its types: an incomplete grid is an InputError naming
    the manifest (and line where one is at fault).
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise InputError("manifest not found (run `make ranks` first)", manifest)
    paths: dict[tuple[str, str, int], str] = {}
    lines: dict[tuple[str, str, int], int] = {}
    with open_text(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        absent = [column for column in MANIFEST_COLUMNS if column not in header]
        if absent:
            raise InputError(f"missing column(s) {absent}; expected {list(MANIFEST_COLUMNS)}", manifest, 1)
        for lineno, row in checked_rows(reader, manifest):
            if row["split"] != split:
                continue
            level = row_level(row["level"], manifest, lineno)
            if not row["path"]:
                raise InputError("empty path", manifest, lineno)
            key = (row["reference"], row["type"], level)
            if key in paths:
                raise InputError(f"duplicate row for reference {key[0]!r}, type {key[1]!r}, level {level} "
                                 f"(first at line {lines[key]})", manifest, lineno)
            paths[key] = row["path"]
            lines[key] = lineno
    if not paths:
        raise InputError(f"no rows with split {split!r}", manifest)
    references = sorted({key[0] for key in paths})
    types = sorted({key[1] for key in paths})
    levels = sorted({key[2] for key in paths})
    if levels != list(range(levels[-1] + 1)) or len(levels) < 2:
        raise InputError(f"split {split!r} levels must be 0..L with L >= 1, got {levels}", manifest)
    for reference in references:
        for distortion in types:
            for level in levels:
                if (reference, distortion, level) not in paths:
                    raise InputError(f"split {split!r}: reference {reference!r} has no image for type "
                                     f"{distortion!r} level {level} (every reference needs every type and "
                                     "level)", manifest)
    return RankSet(manifest, references, types, levels, paths, lines)


def manifest_levels(manifest: Path) -> tuple[int, dict[str, int]]:
    """(highest level L, references per split) of a ranking ``manifest.csv``; bad rows name file and line."""
    if not manifest.is_file():
        raise InputError("ranking manifest not found (run `make ranks` first)", manifest)
    top = -1
    references: dict[str, set[str]] = {}
    with open_text(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(MANIFEST_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"manifest lacks column(s) {sorted(missing)}", manifest, 1)
        for lineno, row in checked_rows(reader, manifest):
            top = max(top, row_level(row["level"], manifest, lineno))
            references.setdefault(row["split"], set()).add(row["reference"])
    if top < 1:
        raise InputError("manifest has no distorted levels", manifest)
    return top, {split: len(refs) for split, refs in references.items()}


def row_level(text: str, manifest: str | os.PathLike, line: int) -> int:
    """A rank table row's level (this manifest's, and the tables ``rankiqa.rank_accuracy`` reads): an
    integer >= 0 (0 = pristine), or an ``InputError`` naming file and line."""
    try:
        level = int(text)
    except ValueError:
        raise InputError(f"level {text!r} is not an integer", manifest, line) from None
    if level < 0:
        raise InputError(f"level {level} is negative", manifest, line)
    return level


def row_path(text: str, table: str | os.PathLike, line: int) -> str:
    """A table row's image path (the rank tables here and in ``rankiqa.rank_accuracy``, the test tables of
    ``data_prep.datasets``): an empty or blank one is an ``InputError`` naming file and line; a relative one
    is taken from the table's folder."""
    if not text.strip():
        raise InputError("empty path", table, line)
    image = Path(text)
    return str(image if image.is_absolute() else Path(table).parent / image)


def manifest_images(data_dir: Path) -> list[Path]:
    """The image files a ranking run reads: every path of ``manifest.csv`` (or the LMDB holding them)."""
    lmdb_file = data_dir / LMDB_NAME / "data.mdb"
    if lmdb_file.is_file():
        return [lmdb_file]
    with open_text(data_dir / MANIFEST_NAME, newline="") as handle:
        return sorted({data_dir / row["path"] for row in csv.DictReader(handle)})
