"""Loaders for the IQA databases used to fine-tune and evaluate RankIQA.

Each loader reads one database in its published layout and returns a list of :class:`IQARow`
(reference, distortion type, level, absolute image path, subjective score, score direction).
``make_ft_lists`` turns that table into the fine-tuning lists; evaluation uses the per-dataset
type-code lists (``TID2013_TYPES`` ...) for per-type metrics.

Layouts read (the folder is what the user passes as ``DATA=``):

* TID2013: ``mos_with_names.txt`` (``<MOS> <name>``), ``distorted_images/iRR_DD_L.bmp``. File names
  come in mixed case on disk and in the list, so names are matched without regard to case.
  MOS: higher = better. Reference 25 is synthetic and, as in the original, excluded by default.
* LIVE Release 2: ``databaserelease2/`` (or that folder itself) with ``jp2k/ jpeg/ wn/ gblur/
  fastfading/`` holding ``img1.bmp ... imgN.bmp``, ``dmos.mat`` (``dmos``, ``orgs``),
  ``dmos_realigned.mat`` (``dmos_new``, ``dmos_std``, ``orgs``) and ``refnames_all.mat``. The
  score vectors concatenate the five folders in the order jp2k, jpeg, wn, gblur, fastfading.
  DMOS: lower = better.
* CSIQ: ``src_imgs/<ref>.png``, distorted ``<ref>.<TYPE>.<level>.png`` under ``dst_imgs/`` (per-type
  sub-folders) or ``dst_imgs_all/`` (flat), labels from ``csiq.DMOS.xlsx`` (sheet ``all_by_image``)
  or ``csiq_label.txt`` (``<name> <dmos>``). DMOS: lower = better.
* KADID-10k: ``dmos.csv`` (``dist_img,ref_img,dmos,var``) and ``images/``. DMOS: higher = better
  (KADID's "DMOS" is a 1-5 opinion score).
* LIVE Multiply Distorted (MLIVE): ``Part 1/`` (blur then JPEG) and ``Part 2/`` (blur then noise), each
  with ``Imagelists.mat``, ``Scores.mat`` and its image folder (``blurjpeg/``, ``blurnoise/``). DMOS:
  lower = better (see :func:`load_mlive`).
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rankiqa.errors import InputError
from rankiqa.fsutil import atomic_path
from rankiqa.lists import open_text
from rankiqa.manifest import checked_rows, row_path

HIGHER_BETTER = "higher_better"
LOWER_BETTER = "lower_better"
#: The columns of a table CSV (``write_table``, ``read_table``).
TABLE_COLUMNS = ("reference", "type", "level", "path", "score", "direction")

# Type codes as each database names them, with readable names for plots and reports.
TID2013_TYPE_NAMES: dict[str, str] = {
    "01": "additive Gaussian noise", "02": "additive noise in colour components",
    "03": "spatially correlated noise", "04": "masked noise", "05": "high-frequency noise",
    "06": "impulse noise", "07": "quantisation noise", "08": "Gaussian blur", "09": "image denoising",
    "10": "JPEG compression", "11": "JPEG2000 compression", "12": "JPEG transmission errors",
    "13": "JPEG2000 transmission errors", "14": "non-eccentricity pattern noise",
    "15": "local block-wise distortions", "16": "mean shift", "17": "contrast change",
    "18": "change of colour saturation", "19": "multiplicative Gaussian noise", "20": "comfort noise",
    "21": "lossy compression of noisy images", "22": "colour quantisation with dither",
    "23": "chromatic aberrations", "24": "sparse sampling and reconstruction",
}
LIVE_TYPE_NAMES: dict[str, str] = {
    "jp2k": "JPEG2000 compression", "jpeg": "JPEG compression", "wn": "white noise",
    "gblur": "Gaussian blur", "fastfading": "fast fading (JPEG2000 bit errors)",
}
CSIQ_TYPE_NAMES: dict[str, str] = {
    "AWGN": "additive white Gaussian noise", "JPEG": "JPEG compression",
    "jpeg2000": "JPEG2000 compression", "fnoise": "additive pink (1/f) noise",
    "BLUR": "Gaussian blur", "contrast": "global contrast decrement",
}
KADID_TYPE_NAMES: dict[str, str] = {
    "01": "Gaussian blur", "02": "lens blur", "03": "motion blur", "04": "colour diffusion",
    "05": "colour shift", "06": "colour quantisation", "07": "colour saturation 1",
    "08": "colour saturation 2", "09": "JPEG2000", "10": "JPEG", "11": "white noise",
    "12": "white noise in colour component", "13": "impulse noise", "14": "multiplicative noise",
    "15": "denoise", "16": "brighten", "17": "darken", "18": "mean shift", "19": "jitter",
    "20": "non-eccentricity patch", "21": "pixelate", "22": "quantisation", "23": "colour block",
    "24": "high sharpen", "25": "contrast change",
}
#: MLIVE's two parts by the name of their image folder (the database's own names).
MLIVE_TYPE_NAMES: dict[str, str] = {
    "blurjpeg": "Gaussian blur followed by JPEG compression (Part 1)",
    "blurnoise": "Gaussian blur followed by white Gaussian noise (Part 2)",
}
TID2013_TYPES: tuple[str, ...] = tuple(TID2013_TYPE_NAMES)
LIVE_TYPES: tuple[str, ...] = tuple(LIVE_TYPE_NAMES)  # also the order of the .mat score vectors
CSIQ_TYPES: tuple[str, ...] = tuple(CSIQ_TYPE_NAMES)
KADID_TYPES: tuple[str, ...] = tuple(KADID_TYPE_NAMES)
MLIVE_TYPES: tuple[str, ...] = tuple(MLIVE_TYPE_NAMES)
#: MLIVE's part folders, one per type, in the order of the release (``Part 1``, ``Part 2``).
MLIVE_PARTS: dict[str, str] = {"blurjpeg": "Part 1", "blurnoise": "Part 2"}
#: Levels of each of MLIVE's two distortions: 0 (absent) to 3.
MLIVE_MAX_LEVEL = 3

# The sizes of the published LIVE Release 2 folders (982 images in all); a subset is accepted too.
LIVE_PUBLISHED_COUNTS: dict[str, int] = {"jp2k": 227, "jpeg": 233, "wn": 174, "gblur": 174, "fastfading": 174}

# csiq.DMOS.xlsx names types in words; the file names use the codes.
_CSIQ_XLSX_TYPES: dict[str, str] = {
    "noise": "AWGN", "awgn": "AWGN", "jpeg": "JPEG", "jpeg 2000": "jpeg2000", "jpeg2000": "jpeg2000",
    "fnoise": "fnoise", "1/f noise": "fnoise", "blur": "BLUR", "contrast": "contrast",
}
_CSIQ_CODES_BY_LOWER: dict[str, str] = {code.lower(): code for code in CSIQ_TYPES}

_TID_NAME = re.compile(r"^i(\d{2})_(\d{2})_(\d)\.bmp$", re.IGNORECASE)
_KADID_NAME = re.compile(r"^I(\d{2})_(\d{2})_(\d{2})\.png$", re.IGNORECASE)
_LIVE_IMAGE = re.compile(r"^img(\d+)\.bmp$", re.IGNORECASE)


@dataclass(frozen=True)
class IQARow:
    """One rated image of an IQA database.

    ``type`` is the database's own type code (``TID2013_TYPES`` ...); ``type_name`` its readable
    name (not written to ``table.csv``). ``level`` is the database's distortion level (1 = mildest);
    LIVE has continuous distortion parameters, so there it is 0 for a reference copy, 1 otherwise.
    MLIVE's images carry two levels (blur, then JPEG or noise; each 0-3, 0 = not applied): ``level`` is
    ``10 * blur + second`` (``mlive_level``), so ``23`` is blur level 2 followed by JPEG/noise level 3.
    """

    reference: str
    type: str
    level: int
    path: str
    score: float
    direction: str
    type_name: str = ""
    #: The table line the row was read from (``read_table``; for messages), else None.
    line: int | None = field(default=None, compare=False)

    def as_table_row(self) -> dict[str, str]:
        """The ``table.csv`` columns of this row, as text."""
        return {"reference": self.reference, "type": self.type, "level": str(self.level),
                "path": self.path, "score": repr(float(self.score)), "direction": self.direction}


# ----------------------------------------------------------------------------------------------
# small helpers


def parse_number(text: object, path: Path, line: int | None, what: str = "score") -> float:
    """A finite float from a label file or table cell, or an ``InputError`` naming the place."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{what} {text!r} is not a number", path, line) from None
    if not math.isfinite(value):
        raise InputError(f"{what} {text!r} is not finite", path, line)
    return value


def parse_level(text: object, path: Path, line: int | None) -> int:
    """A table's distortion ``level``: a whole number >= 0 (``1.0`` is 1), or an ``InputError`` naming the
    table and line (a wrong level would pass for data in every file made from the table)."""
    level = parse_number(text, path, line, "level")
    if not level.is_integer():
        raise InputError(f"level {text!r} is not a whole number", path, line)
    if level < 0:
        raise InputError(f"level {int(level)} is negative", path, line)
    return int(level)


def _folder_index(folder: Path, recursive: bool = False) -> dict[str, list[Path]]:
    """Map lower-cased file names in ``folder`` to the files, for case-insensitive lookups."""
    index: dict[str, list[Path]] = {}
    entries = folder.rglob("*") if recursive else folder.iterdir()
    for entry in sorted(entries):
        if entry.is_file():
            index.setdefault(entry.name.lower(), []).append(entry)
    return index


def _find(index: dict[str, list[Path]], name: str, label_path: Path, line: int | None,
          where: str) -> str:
    """Resolve ``name`` (any case) in an index built by ``_folder_index``; the absolute path."""
    found = index.get(name.lower(), [])
    if not found:
        raise InputError(f"image {name!r} listed here is missing from {where}", label_path, line)
    if len(found) > 1:
        names = ", ".join(str(p) for p in found)
        raise InputError(f"image {name!r} matches more than one file: {names}", label_path, line)
    return str(found[0].resolve())


def _check_duplicate(seen: dict[str, int], key: str, label_path: Path, line: int | None) -> None:
    """Refuse a second label for the same image (compared without case, as file systems may)."""
    lowered = key.lower()
    if lowered in seen:
        first = seen[lowered]
        where = f" (first on line {first})" if first else ""
        raise InputError(f"duplicate image name {key!r}{where}", label_path, line)
    seen[lowered] = line or 0


def _require(root: Path, names: Iterable[str], dataset: str) -> None:
    """The named dataset's marker files must exist, else the folder is not that dataset."""
    if not root.is_dir():
        raise InputError(f"{dataset} folder not found", root)
    missing = [name for name in names if not (root / name).exists()]
    if missing:
        raise InputError(f"not a {dataset} folder: missing {', '.join(missing)}", root)


# ----------------------------------------------------------------------------------------------
# TID2013


def _two_field_lines(label_path: Path, form: str) -> Iterator[tuple[int, str, str]]:
    """(line number, first, second) of a whitespace-separated two-column label file; blank lines skipped,
    any other line that is not two fields names the file and line."""
    with open_text(label_path, errors="replace") as handle:
        for lineno, raw in enumerate(handle, start=1):
            fields = raw.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise InputError(f"expected {form}, got {raw.strip()!r}", label_path, lineno)
            yield lineno, fields[0], fields[1]


def load_tid2013(root: str | os.PathLike, include_synthetic_ref: bool = False) -> list[IQARow]:
    """Read TID2013 (3,000 images; 2,880 without the synthetic reference 25, the faithful default).

    ``include_synthetic_ref`` keeps the 120 images of reference 25, which the original excluded.
    """
    root = Path(root)
    _require(root, ["mos_with_names.txt", "distorted_images"], "TID2013")
    label_path = root / "mos_with_names.txt"
    index = _folder_index(root / "distorted_images")
    rows: list[IQARow] = []
    seen: dict[str, int] = {}
    for lineno, score_text, name in _two_field_lines(label_path, "'<MOS> <name>'"):
        match = _TID_NAME.match(name)
        if not match:
            raise InputError(f"{name!r} is not a TID2013 name (iRR_DD_L.bmp)", label_path, lineno)
        ref_id, type_id, level = (int(g) for g in match.groups())
        if not (1 <= ref_id <= 25 and 1 <= type_id <= 24 and 1 <= level <= 5):
            raise InputError(f"{name!r}: reference 01-25, type 01-24, level 1-5 expected",
                             label_path, lineno)
        score = parse_number(score_text, label_path, lineno, "MOS")
        _check_duplicate(seen, name, label_path, lineno)
        if ref_id == 25 and not include_synthetic_ref:
            continue
        path = _find(index, name, label_path, lineno, "distorted_images/")
        code = f"{type_id:02d}"
        rows.append(IQARow(f"I{ref_id:02d}", code, level, path, score, HIGHER_BETTER,
                           TID2013_TYPE_NAMES[code]))
    if not rows:
        raise InputError("no images listed", label_path)
    return rows


# ----------------------------------------------------------------------------------------------
# LIVE Release 2


def _live_root(root: Path) -> Path:
    """Accept the folder holding ``databaserelease2/`` as well as that folder itself."""
    inner = root / "databaserelease2"
    return inner if inner.is_dir() else root


def _mat_vector(mat: dict, key: str, mat_path: Path) -> list[float]:
    """A numeric vector from a loaded .mat file, every entry finite."""
    import numpy as np

    if key not in mat:
        raise InputError(f"variable {key!r} not found in the .mat file", mat_path)
    try:
        values = np.asarray(mat[key], dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InputError(f"variable {key!r} is not numeric", mat_path) from None
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise InputError(f"{key}({bad[0] + 1}) is not a finite number", mat_path)
    return values.tolist()


def _mat_strings(mat: dict, key: str, mat_path: Path) -> list[str]:
    """A MATLAB cell array of strings (as scipy loads it: object array of 1-element arrays)."""
    import numpy as np

    if key not in mat:
        raise InputError(f"variable {key!r} not found in the .mat file", mat_path)
    out = []
    for k, cell in enumerate(np.asarray(mat[key], dtype=object).ravel(), start=1):
        value = cell
        while isinstance(value, np.ndarray):  # unwrap the cell's char array
            if value.size != 1:
                raise InputError(f"{key}{{{k}}} is not a string", mat_path)
            value = value.ravel()[0]
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{key}{{{k}}} is not a string", mat_path)
        out.append(value.strip())
    return out


def _load_mat(path: Path) -> dict:
    import scipy.io

    try:
        return scipy.io.loadmat(str(path))
    except Exception as err:  # scipy raises several types for a file that is not MATLAB v5
        raise InputError(f"cannot read as a MATLAB .mat file: {err}", path) from None


def _live_folder_images(folder: Path) -> dict[int, Path]:
    """``imgN.bmp`` files of one LIVE type folder, by N."""
    images: dict[int, Path] = {}
    for entry in folder.iterdir():
        match = _LIVE_IMAGE.match(entry.name)
        if match and entry.is_file():
            images[int(match.group(1))] = entry
    return images


def _check_live_info(folder: Path, images: dict[int, Path]) -> None:
    """Every image that ``info.txt`` lists must exist (the file is optional)."""
    info = folder / "info.txt"
    if not info.is_file():
        return
    with open_text(info, errors="replace") as handle:
        for lineno, raw in enumerate(handle, start=1):
            fields = raw.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise InputError(f"expected '<refname> <imgN.bmp> <param>', got {raw.strip()!r}",
                                 info, lineno)
            match = _LIVE_IMAGE.match(fields[1])
            if not match:
                raise InputError(f"{fields[1]!r} is not an imgN.bmp name", info, lineno)
            if int(match.group(1)) not in images:
                raise InputError(f"image {fields[1]!r} listed here is missing from {folder.name}/",
                                 info, lineno)


def load_live(root: str | os.PathLike, realigned: bool = False, drop_refs: bool = False) -> list[IQARow]:
    """Read LIVE Release 2 (982 images, 779 distorted + 203 reference copies).

    Defaults are the original's: DMOS from ``dmos.mat`` and the reference copies (``orgs == 1``)
    kept, since the original's LIVE fine-tuning lists contain them. ``realigned`` reads
    ``dmos_new`` from ``dmos_realigned.mat`` instead; ``drop_refs`` leaves the copies out (the
    usual protocol of later work: the copies are easy to score and raise the correlations).
    """
    root = _live_root(Path(root))
    mat_name = "dmos_realigned.mat" if realigned else "dmos.mat"
    _require(root, [*LIVE_TYPES, mat_name, "refnames_all.mat"], "LIVE Release 2")
    mat_path = root / mat_name
    mat = _load_mat(mat_path)
    scores = _mat_vector(mat, "dmos_new" if realigned else "dmos", mat_path)
    orgs = _mat_vector(mat, "orgs", mat_path)
    names_path = root / "refnames_all.mat"
    refnames = _mat_strings(_load_mat(names_path), "refnames_all", names_path)
    if not (len(scores) == len(orgs) == len(refnames)):
        raise InputError(f"lengths differ: {len(scores)} scores, {len(orgs)} orgs, "
                         f"{len(refnames)} reference names ({names_path.name})", mat_path)

    # The score vectors index the five folders one after the other; a folder's size is its
    # highest imgN, and every img1..imgN must be there, else the indices would shift silently.
    counts: dict[str, int] = {}
    folder_images: dict[str, dict[int, Path]] = {}
    for dtype in LIVE_TYPES:
        folder = root / dtype
        images = _live_folder_images(folder)
        count = max(images, default=0)
        missing = [n for n in range(1, count + 1) if n not in images]
        if missing:
            raise InputError(f"img{missing[0]}.bmp is missing ({mat_name} indexes img1..img{count})",
                             folder)
        _check_live_info(folder, images)
        counts[dtype], folder_images[dtype] = count, images
    total = sum(counts.values())
    if total != len(scores):
        listing = ", ".join(f"{t} {n}" for t, n in counts.items())
        raise InputError(f"{len(scores)} scores but the type folders hold {total} images ({listing}; "
                         f"the published release has {sum(LIVE_PUBLISHED_COUNTS.values())})", mat_path)

    rows: list[IQARow] = []
    position = 0
    for dtype in LIVE_TYPES:
        for number in range(1, counts[dtype] + 1):
            is_copy = orgs[position] == 1
            if not (is_copy and drop_refs):
                reference = Path(refnames[position]).stem
                path = str(folder_images[dtype][number].resolve())
                rows.append(IQARow(reference, dtype, 0 if is_copy else 1, path, scores[position],
                                   LOWER_BETTER, LIVE_TYPE_NAMES[dtype]))
            position += 1
    if not rows:
        raise InputError("no images left", mat_path)
    return rows


# ----------------------------------------------------------------------------------------------
# CSIQ


def _csiq_image_folder(root: Path) -> Path:
    """``dst_imgs/`` (per-type folders or flat) as released, else the common flat ``dst_imgs_all/``.

    Only one is searched: setups that keep both usually hold the same images twice.
    """
    for name in ("dst_imgs", "dst_imgs_all"):
        if (root / name).is_dir():
            return root / name
    raise InputError("not a CSIQ folder: missing dst_imgs/ (or dst_imgs_all/)", root)


def _csiq_split_name(name: str, label_path: Path, line: int | None) -> tuple[str, str, int]:
    """``<ref>.<TYPE>.<level>[.png]`` -> (ref, type code, level)."""
    stem = name[:-4] if name.lower().endswith(".png") else name
    parts = stem.split(".")
    if len(parts) < 3 or not parts[-1].isdigit():
        raise InputError(f"{name!r} is not a CSIQ name (<ref>.<TYPE>.<level>.png)", label_path, line)
    code = _CSIQ_CODES_BY_LOWER.get(parts[-2].lower())
    if code is None:
        raise InputError(f"{name!r}: unknown CSIQ type {parts[-2]!r} (expected one of "
                         f"{', '.join(CSIQ_TYPES)})", label_path, line)
    return ".".join(parts[:-2]), code, int(parts[-1])


def _csiq_labels_txt(label_path: Path) -> list[tuple[str, str, int, float, int]]:
    """``csiq_label.txt``: (ref, type, level, dmos, line) per line."""
    out = []
    for lineno, name, dmos_text in _two_field_lines(label_path, "'<name> <dmos>'"):
        ref, code, level = _csiq_split_name(name, label_path, lineno)
        out.append((ref, code, level, parse_number(dmos_text, label_path, lineno, "DMOS"), lineno))
    return out


def _csiq_cell_text(value: object) -> str:
    """Excel cells: the reference ``1600`` is stored as a number."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _csiq_labels_xlsx(label_path: Path) -> list[tuple[str, str, int, float, int]]:
    """``csiq.DMOS.xlsx``: the header row (image, dst_type, dst_lev, dmos ...) is found by name."""
    import openpyxl

    try:
        book = openpyxl.load_workbook(label_path, read_only=True, data_only=True)
    except Exception as err:  # zipfile / openpyxl raise several types for a damaged workbook
        raise InputError(f"cannot read as an .xlsx workbook: {err}", label_path) from None
    try:
        sheet_names = book.sheetnames
        ordered = (["all_by_image"] if "all_by_image" in sheet_names else []) + \
            [s for s in sheet_names if s != "all_by_image"]
        for sheet_name in ordered:
            rows = list(book[sheet_name].iter_rows(values_only=True))
            for header_at, header in enumerate(rows):
                cells = [str(c).strip().lower() if c is not None else "" for c in header]
                if {"image", "dst_type", "dst_lev", "dmos"} <= set(cells):
                    col = {name: cells.index(name) for name in ("image", "dst_type", "dst_lev", "dmos")}
                    return _csiq_xlsx_rows(rows[header_at + 1:], header_at + 2, col, label_path)
    finally:
        book.close()
    raise InputError("no sheet with the columns image, dst_type, dst_lev, dmos", label_path)


def _csiq_xlsx_rows(rows: list[tuple], first_row: int, col: dict[str, int],
                    label_path: Path) -> list[tuple[str, str, int, float, int]]:
    """The data rows under the header: (ref, type code, level, dmos, Excel row number)."""
    out = []
    for row_number, row in enumerate(rows, start=first_row):
        cells = list(row) + [None] * (max(col.values()) + 1 - len(row))
        if all(cells[col[key]] is None or str(cells[col[key]]).strip() == "" for key in ("image", "dmos")):
            continue  # blank rows between blocks, notes below the table
        if cells[col["image"]] is None or str(cells[col["image"]]).strip() == "":
            raise InputError("the image column is empty", label_path, row_number)
        ref = _csiq_cell_text(cells[col["image"]])
        type_text = _csiq_cell_text(cells[col["dst_type"]]).lower()
        code = _CSIQ_XLSX_TYPES.get(type_text)
        if code is None:
            raise InputError(f"unknown dst_type {type_text!r}", label_path, row_number)
        level_value = parse_number(cells[col["dst_lev"]], label_path, row_number, "dst_lev")
        if not level_value.is_integer():
            raise InputError(f"dst_lev {level_value!r} is not a whole number", label_path, row_number)
        dmos = parse_number(cells[col["dmos"]], label_path, row_number, "dmos")
        out.append((ref, code, int(level_value), dmos, row_number))
    return out


def load_csiq(root: str | os.PathLike) -> list[IQARow]:
    """Read CSIQ (866 distorted images of 30 references). ``csiq.DMOS.xlsx`` is preferred over
    ``csiq_label.txt`` when both exist; line numbers in errors are Excel row numbers for the former.
    """
    root = Path(root)
    _require(root, ["src_imgs"], "CSIQ")
    xlsx, txt = root / "csiq.DMOS.xlsx", root / "csiq_label.txt"
    if xlsx.is_file():
        label_path, labels = xlsx, _csiq_labels_xlsx(xlsx)
    elif txt.is_file():
        label_path, labels = txt, _csiq_labels_txt(txt)
    else:
        raise InputError("not a CSIQ folder: missing csiq.DMOS.xlsx (or csiq_label.txt)", root)
    image_folder = _csiq_image_folder(root)
    index = _folder_index(image_folder, recursive=True)
    rows: list[IQARow] = []
    seen: dict[str, int] = {}
    for ref, code, level, dmos, line in labels:
        name = f"{ref}.{code}.{level}.png"
        _check_duplicate(seen, name, label_path, line)
        path = _find(index, name, label_path, line, f"{image_folder.name}/")
        rows.append(IQARow(ref, code, level, path, dmos, LOWER_BETTER, CSIQ_TYPE_NAMES[code]))
    if not rows:
        raise InputError("no images listed", label_path)
    return rows


# ----------------------------------------------------------------------------------------------
# KADID-10k


def load_kadid(root: str | os.PathLike) -> list[IQARow]:
    """Read KADID-10k (10,125 images: 81 references x 25 types x 5 levels)."""
    root = Path(root)
    _require(root, ["dmos.csv", "images"], "KADID-10k")
    label_path = root / "dmos.csv"
    index = _folder_index(root / "images")
    rows: list[IQARow] = []
    seen: dict[str, int] = {}
    with open_text(label_path, newline="", errors="replace") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if not {"dist_img", "ref_img", "dmos"} <= set(header):
            raise InputError(f"not a KADID-10k dmos.csv: header {header} lacks dist_img,ref_img,dmos",
                             label_path, 1)
        reader.fieldnames = header
        for record in reader:
            lineno = reader.line_num
            name = (record.get("dist_img") or "").strip()
            match = _KADID_NAME.match(name)
            if not match:
                raise InputError(f"{name!r} is not a KADID-10k name (Iaa_tt_ll.png)", label_path, lineno)
            ref_id, type_id, level = (int(g) for g in match.groups())
            if not (1 <= type_id <= 25 and 1 <= level <= 5):
                raise InputError(f"{name!r}: type 01-25 and level 01-05 expected", label_path, lineno)
            reference = f"I{ref_id:02d}"
            ref_img = (record.get("ref_img") or "").strip()
            if Path(ref_img).stem.upper() != reference:
                raise InputError(f"ref_img {ref_img!r} does not match dist_img {name!r}", label_path, lineno)
            score = parse_number(record.get("dmos"), label_path, lineno, "dmos")
            _check_duplicate(seen, name, label_path, lineno)
            path = _find(index, name, label_path, lineno, "images/")
            code = f"{type_id:02d}"
            rows.append(IQARow(reference, code, level, path, score, HIGHER_BETTER, KADID_TYPE_NAMES[code]))
    if not rows:
        raise InputError("no images listed", label_path)
    return rows


# ----------------------------------------------------------------------------------------------
# LIVE Multiply Distorted (MLIVE)


def mlive_level(blur: int, second: int) -> int:
    """The ``IQARow.level`` of an MLIVE image: ``10 * blur + second`` (two digits, each level 0-3)."""
    return 10 * blur + second


def _mlive_root(root: Path) -> Path:
    """The folder holding ``Part 1/`` and ``Part 2/``: ``root`` itself, or the release's ``To_Release/``
    and ``LIVEmultidistortiondatabase/`` folders under it."""
    for candidate in (root, root / "To_Release", root / "LIVEmultidistortiondatabase",
                      root / "LIVEmultidistortiondatabase" / "To_Release"):
        if any((candidate / name).is_dir() for name in _mlive_part_names("Part 1")):
            return candidate
    return root


def _mlive_part_names(part: str) -> tuple[str, str]:
    """``Part 1`` as released, and ``Part1``, as some unpacked copies name it."""
    return part, part.replace(" ", "")


def _mlive_part(root: Path, dtype: str) -> Path:
    for name in _mlive_part_names(MLIVE_PARTS[dtype]):
        if (root / name).is_dir():
            return root / name
    raise InputError(f"not an MLIVE folder: missing {MLIVE_PARTS[dtype]}/ ({MLIVE_TYPE_NAMES[dtype]})", root)


def _mlive_levels(mat: dict, count: int, mat_path: Path) -> list[tuple[int, int]]:
    """``distimgdistlevels``: one (blur, second) pair of whole levels 0-3 per distorted image."""
    import numpy as np

    if "distimgdistlevels" not in mat:
        raise InputError("variable 'distimgdistlevels' not found in the .mat file", mat_path)
    try:
        values = np.asarray(mat["distimgdistlevels"], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("variable 'distimgdistlevels' is not numeric", mat_path) from None
    if values.shape != (count, 2):
        raise InputError(f"distimgdistlevels is {'x'.join(map(str, values.shape))}, expected {count}x2 "
                         "(one blur and one second level per distorted image)", mat_path)
    bad = np.flatnonzero(~(np.isin(values, np.arange(MLIVE_MAX_LEVEL + 1))).all(axis=1))
    if bad.size:
        raise InputError(f"distimgdistlevels({bad[0] + 1},:) = {values[bad[0]].tolist()}: levels must be "
                         f"whole numbers 0-{MLIVE_MAX_LEVEL}", mat_path)
    return [(int(b), int(s)) for b, s in values]


def _load_mlive_part(root: Path, dtype: str) -> list[IQARow]:
    """The rows of one MLIVE part (``dtype`` = its image folder's name)."""
    part = _mlive_part(root, dtype)
    _require(part, ["Imagelists.mat", "Scores.mat", dtype], f"MLIVE {MLIVE_PARTS[dtype]}")
    lists_path, scores_path = part / "Imagelists.mat", part / "Scores.mat"
    lists = _load_mat(lists_path)
    names = _mat_strings(lists, "distimgs", lists_path)
    refnames = _mat_strings(lists, "refimgs", lists_path)
    ref_index = _mat_vector(lists, "ref4dist", lists_path)
    levels = _mlive_levels(lists, len(names), lists_path)
    scores = _mat_vector(_load_mat(scores_path), "DMOSscores", scores_path)
    if not (len(scores) == len(names) == len(ref_index)):
        raise InputError(f"lengths differ: {len(scores)} DMOSscores ({scores_path.name}), {len(names)} "
                         f"distimgs, {len(ref_index)} ref4dist", lists_path)
    index = _folder_index(part / dtype)
    rows: list[IQARow] = []
    seen: dict[str, int] = {}
    for k, (name, ref_k, (blur, second), score) in enumerate(zip(names, ref_index, levels, scores,
                                                                  strict=True), start=1):
        if not (ref_k.is_integer() and 1 <= ref_k <= len(refnames)):
            raise InputError(f"ref4dist({k}) = {ref_k!r} is not an index of refimgs (1-{len(refnames)})",
                             lists_path)
        # the k-th entry of the .mat vectors stands in for a line number
        _check_duplicate(seen, name, lists_path, k)
        path = _find(index, name, lists_path, k, f"{part.name}/{dtype}/")
        rows.append(IQARow(Path(refnames[int(ref_k) - 1]).stem, dtype, mlive_level(blur, second), path, score,
                           LOWER_BETTER, MLIVE_TYPE_NAMES[dtype]))
    if not rows:
        raise InputError("no images listed (distimgs is empty)", lists_path)
    return rows


def load_mlive(root: str | os.PathLike) -> list[IQARow]:
    """Read the LIVE Multiply Distorted Image Quality Database (450 images: 2 parts x 225 distorted
    images of the same 15 references).

    Layout and variables as released (Jayaraman, Mittal, Moorthy, Bovik, "Objective quality assessment of
    multiply distorted images", Asilomar 2012; the release's ``LIVEmultidistortiondatabase/To_Release/``)
    and as public IQA toolboxes read them (pyiqa, ``chaofengc/IQA-PyTorch`` ``scripts/process_livemd.py``:
    ``Part 1/blurjpeg``, ``Part 2/blurnoise``, ``Imagelists.mat`` ``distimgs``, ``Scores.mat``
    ``DMOSscores``, random splits by reference image):

    * ``Part 1/`` (blur followed by JPEG) and ``Part 2/`` (blur followed by white noise), each with
      ``Imagelists.mat`` (``refimgs``: the 15 reference names; ``distimgs``: the 225 distorted image
      names; ``ref4dist``: the 1-based index into ``refimgs`` of each; ``distimgdistlevels``: 225x2,
      the blur level and the JPEG or noise level of each, 0-3, 0 = that distortion not applied),
      ``Scores.mat`` (``DMOSscores``: 1x225, in the order of ``distimgs``) and the image folder
      (``blurjpeg/``, ``blurnoise/``: the distorted images and the references, ``.bmp``).
    * DMOS from difference scores, as LIVE Release 2: higher = worse (``lower_better``).

    The two parts share their 15 references (and rate the blur-only images in each part): ``reference``
    is the reference's name without ``.bmp``, the same in both parts, so a split by reference keeps every
    image of a reference, from both parts, on one side. ``type`` is the part's folder name, ``level``
    ``mlive_level(blur, second)``. The folder given may be the one holding ``Part 1/`` and ``Part 2/``,
    or one holding ``To_Release/`` or ``LIVEmultidistortiondatabase/``.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("MLIVE folder not found", root)
    base = _mlive_root(root)
    return [row for dtype in MLIVE_TYPES for row in _load_mlive_part(base, dtype)]


# ----------------------------------------------------------------------------------------------
# registry and table files


@dataclass(frozen=True)
class DatasetInfo:
    """What evaluation and the list writer need to know about one database."""

    name: str
    title: str
    load: Callable[..., list[IQARow]]
    types: tuple[str, ...]
    type_names: dict[str, str]
    direction: str
    score_name: str


DATASETS: dict[str, DatasetInfo] = {
    "tid2013": DatasetInfo("tid2013", "TID2013", load_tid2013, TID2013_TYPES, TID2013_TYPE_NAMES,
                           HIGHER_BETTER, "MOS"),
    "live": DatasetInfo("live", "LIVE Release 2", load_live, LIVE_TYPES, LIVE_TYPE_NAMES,
                        LOWER_BETTER, "DMOS"),
    "csiq": DatasetInfo("csiq", "CSIQ", load_csiq, CSIQ_TYPES, CSIQ_TYPE_NAMES, LOWER_BETTER, "DMOS"),
    "kadid": DatasetInfo("kadid", "KADID-10k", load_kadid, KADID_TYPES, KADID_TYPE_NAMES,
                         HIGHER_BETTER, "DMOS"),
    "mlive": DatasetInfo("mlive", "LIVE Multiply Distorted", load_mlive, MLIVE_TYPES, MLIVE_TYPE_NAMES,
                         LOWER_BETTER, "DMOS"),
}
TYPE_CODES: dict[str, tuple[str, ...]] = {name: info.types for name, info in DATASETS.items()}


def load_dataset(name: str, root: str | os.PathLike, **options: bool) -> list[IQARow]:
    """Load database ``name`` (a key of ``DATASETS``) with the loader's keyword options."""
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r} (expected one of {', '.join(DATASETS)})")
    return DATASETS[name].load(root, **options)


def write_table(path: str | os.PathLike, rows: Iterable[IQARow]) -> None:
    """Write rows as CSV with ``TABLE_COLUMNS``, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=TABLE_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow(row.as_table_row())


def read_table(path: str | os.PathLike, check_files: bool = False) -> list[IQARow]:
    """Read a table CSV: ``table.csv`` / ``test.csv`` of ``write_table``, or one a user made in that format.

    The header names at least ``TABLE_COLUMNS`` (others are ignored); spaces around a cell's value are
    dropped. A relative image path is taken from the table's folder. ``type_name`` is filled in when the
    type code is known to exactly one registry entry's names for the row's direction; otherwise it is left
    empty; ``line`` is the row's line. Every problem is an ``InputError`` naming the table (and line): no
    file, a missing column, no rows, a row with more or fewer fields than the header, a score that is not a
    finite number, a level that is not a whole number >= 0 (``parse_level``), a direction other than
    ``higher_better`` / ``lower_better``, an empty path, and with ``check_files`` an image that is not there.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("table file not found", path)
    rows: list[IQARow] = []
    with open_text(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in TABLE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"missing column(s) {missing}; expected {','.join(TABLE_COLUMNS)}", path, 1)
        for line, record in checked_rows(reader, path):
            direction = record["direction"].strip()
            if direction not in (HIGHER_BETTER, LOWER_BETTER):
                raise InputError(f"direction {direction!r} is not {HIGHER_BETTER} or {LOWER_BETTER}",
                                 path, line)
            level = parse_level(record["level"], path, line)
            score = parse_number(record["score"], path, line)
            # cells as a person types them ("r, 01, 1, imgs/a.png, ..."): the spaces are not part of the value
            reference, kind, image_text = (record[c].strip() for c in ("reference", "type", "path"))
            image = row_path(image_text, path, line)
            if check_files and not Path(image).is_file():
                raise InputError(f"image not found: {image}", path, line)
            names = {info.type_names[kind] for info in DATASETS.values()
                     if info.direction == direction and kind in info.type_names}
            rows.append(IQARow(reference, kind, level, image, score, direction,
                               names.pop() if len(names) == 1 else "", line))
    if not rows:
        raise InputError("table has no rows", path)
    return rows
