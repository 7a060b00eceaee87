"""Tiny IQA databases in the exact published layouts, for tests.

Each ``make_*`` builds a few references, types and levels with small images (``size`` pixels square;
pass ``size=256`` where a test needs to cut 224/227 crops) and returns the folder a user would pass
as ``DATA=``. The scores follow the ``*_score`` functions below, so tests can check parsed values
without re-reading the label files. Distorted images really degrade with the level (noise or blur
growing with it), so a net fine-tuned on them has something to learn.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

LIVE_REFNAMES = ("bikes.bmp", "buildings.bmp", "caps.bmp", "carnivaldolls.bmp", "cemetry.bmp",
                 "churchandcapitol.bmp", "coinsinfountain.bmp", "dancers.bmp")
CSIQ_REFS = ("1600", "aerial_city", "boston", "bridge", "butter_flower", "cactus")
# csiq.DMOS.xlsx names the types in words; the file names use the codes.
CSIQ_XLSX_WORDS = {"AWGN": "noise", "JPEG": "jpeg", "jpeg2000": "jpeg 2000", "fnoise": "fnoise",
                   "BLUR": "blur", "contrast": "contrast"}
CSIQ_FOLDERS = {"AWGN": "awgn", "JPEG": "jpeg", "jpeg2000": "jpeg2000", "fnoise": "fnoise",
                "BLUR": "blur", "contrast": "contrast"}


# ----------------------------------------------------------------------------------------------
# scores (the fixtures' ground truth)


def tid_score(ref_id: int, type_id: int, level: int) -> float:
    """MOS, higher = better: falls with the level."""
    return round(7.0 - 1.1 * level + 0.05 * ref_id + 0.01 * type_id, 5)


def live_score(ref_index: int, type_index: int, level: int, realigned: bool = False) -> float:
    """DMOS, higher = worse; reference copies (level 0) score 0 in both files."""
    if level == 0:
        return 0.0
    dmos = 20.0 * level + 2.0 * ref_index + type_index
    return round(dmos * 0.8 + 5.0, 4) if realigned else dmos


def csiq_score(ref_index: int, type_index: int, level: int) -> float:
    """DMOS in 0-1, higher = worse."""
    return round(0.15 * level + 0.01 * ref_index + 0.002 * type_index, 6)


def kadid_score(ref_id: int, type_id: int, level: int) -> float:
    """KADID's DMOS (an opinion score 1-5), higher = better."""
    return round(4.8 - 0.7 * level + 0.01 * ref_id + 0.001 * type_id, 4)


# ----------------------------------------------------------------------------------------------
# images


def _reference_image(seed: int, size: int) -> np.ndarray:
    """A smooth, textured BGR uint8 image, different per seed."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(6, 6, 3)).astype(np.float32)
    image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image += 30.0 * np.sin(xx / (3.0 + seed % 5))[..., None]  # fine texture for blur to remove
    return np.clip(image, 0, 255).astype(np.uint8)


def _distort(image: np.ndarray, kind: int, level: int, seed: int) -> np.ndarray:
    """Noise (even ``kind``) or blur (odd ``kind``) growing with ``level``; level 0 = a copy."""
    if level == 0:
        return image.copy()
    if kind % 2 == 0:
        rng = np.random.default_rng(seed)
        noisy = image.astype(np.float32) + rng.normal(0.0, 8.0 * level, image.shape)
        return np.clip(noisy, 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(image, (0, 0), sigmaX=0.6 * level)


def _write_image(path: Path, image: np.ndarray) -> None:
    """Write by the suffix's format whatever the case of the name (``.BMP`` too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix.lower(), image)
    assert ok, path
    path.write_bytes(data.tobytes())


# ----------------------------------------------------------------------------------------------
# TID2013


def tid_disk_name(ref_id: int, type_id: int, level: int) -> str:
    """Mixed case on disk, as in the release: I01_01_1.bmp, i01_08_1.BMP, i01_10_1.bmp ..."""
    style = (ref_id + type_id) % 3
    if style == 0:
        return f"I{ref_id:02d}_{type_id:02d}_{level}.bmp"
    if style == 1:
        return f"i{ref_id:02d}_{type_id:02d}_{level}.BMP"
    return f"i{ref_id:02d}_{type_id:02d}_{level}.bmp"


def tid_list_name(ref_id: int, type_id: int, level: int) -> str:
    """The list's own spelling, which does not always agree with the disk's."""
    if ref_id % 2:
        return f"i{ref_id:02d}_{type_id:02d}_{level}.bmp"
    return f"I{ref_id:02d}_{type_id:02d}_{level}.BMP"


def make_tid2013(root: str | Path, n_refs: int = 3, types: tuple[int, ...] = (1, 8, 10),
                 levels: int = 5, size: int = 48, include_ref25: bool = True) -> Path:
    """TID2013 layout: ``mos_with_names.txt``, ``distorted_images/``, ``reference_images/``.

    References 1..n_refs, plus the synthetic reference 25 when ``include_ref25``; returns ``root``.
    """
    root = Path(root)
    ref_ids = list(range(1, n_refs + 1)) + ([25] if include_ref25 else [])
    lines = []
    for ref_id in ref_ids:
        reference = _reference_image(ref_id, size)
        ref_name = f"i{ref_id:02d}.bmp" if ref_id == 25 else f"I{ref_id:02d}.BMP"
        _write_image(root / "reference_images" / ref_name, reference)
        for type_id in types:
            for level in range(1, levels + 1):
                image = _distort(reference, type_id, level, seed=1000 * ref_id + 10 * type_id + level)
                _write_image(root / "distorted_images" / tid_disk_name(ref_id, type_id, level), image)
                score = tid_score(ref_id, type_id, level)
                lines.append(f"{score:.5f} {tid_list_name(ref_id, type_id, level)}")
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "mos.txt").write_text("\n".join(line.split()[0] for line in lines) + "\n", encoding="utf-8")
    return root


# ----------------------------------------------------------------------------------------------
# LIVE Release 2


LIVE_FOLDERS = ("jp2k", "jpeg", "wn", "gblur", "fastfading")


def make_live(root: str | Path, n_refs: int = 3, distorted_per_ref: int = 2, size: int = 48) -> Path:
    """LIVE Release 2 layout under ``root/databaserelease2/``; returns ``root``.

    Each type folder holds, per reference, one reference copy (``orgs == 1``, DMOS 0) and
    ``distorted_per_ref`` distorted images (levels 1..), numbered img1.bmp.. in an interleaved order
    as in the release. ``info.txt`` per folder, ``refimgs/``, ``dmos.mat``, ``dmos_realigned.mat``
    and ``refnames_all.mat`` (score vectors in the order jp2k, jpeg, wn, gblur, fastfading).
    """
    import scipy.io

    base = Path(root) / "databaserelease2"
    refnames = LIVE_REFNAMES[:n_refs]
    references = [_reference_image(100 + i, size) for i in range(n_refs)]
    for name, image in zip(refnames, references, strict=True):
        _write_image(base / "refimgs" / name, image)
    dmos, dmos_new, orgs, names_all = [], [], [], []
    for type_index, folder in enumerate(LIVE_FOLDERS):
        entries = [(r, level) for r in range(n_refs) for level in range(distorted_per_ref + 1)]
        order = np.random.default_rng(type_index).permutation(len(entries))
        info_lines = []
        for number, k in enumerate(order, start=1):
            ref_index, level = entries[k]
            image = _distort(references[ref_index], type_index, level, seed=10 * number + type_index)
            _write_image(base / folder / f"img{number}.bmp", image)
            info_lines.append(f"{refnames[ref_index]} img{number}.bmp {0.5 * (level + 1):.3f}")
            dmos.append(live_score(ref_index, type_index, level))
            dmos_new.append(live_score(ref_index, type_index, level, realigned=True))
            orgs.append(1.0 if level == 0 else 0.0)
            names_all.append(refnames[ref_index])
        (base / folder / "info.txt").write_text("\n".join(info_lines) + "\n", encoding="utf-8")
    row = np.array(dmos, dtype=np.float64)[None, :]
    orgs_row = np.array(orgs, dtype=np.float64)[None, :]
    scipy.io.savemat(base / "dmos.mat", {"dmos": row, "orgs": orgs_row})
    scipy.io.savemat(base / "dmos_realigned.mat", {"dmos_new": np.array(dmos_new)[None, :],
                                                    "dmos_std": np.full_like(row, 5.0), "orgs": orgs_row})
    cell = np.empty((1, len(names_all)), dtype=object)
    for i, name in enumerate(names_all):
        cell[0, i] = name
    scipy.io.savemat(base / "refnames_all.mat", {"refnames_all": cell})
    (base / "readme.txt").write_text("LIVE Image Quality Assessment Database Release 2 (test fixture)\n")
    return Path(root)


# ----------------------------------------------------------------------------------------------
# CSIQ


def make_csiq(root: str | Path, n_refs: int = 3, types: tuple[str, ...] = tuple(CSIQ_FOLDERS),
              levels: int = 3, size: int = 48, labels: str = "xlsx", layout: str = "subfolders") -> Path:
    """CSIQ layout: ``src_imgs/``, distorted images, labels; returns ``root``.

    ``labels``: ``xlsx`` (``csiq.DMOS.xlsx``, sheet ``all_by_image`` with the header on row 4 from
    column D, reference ``1600`` stored as a number, blank rows between references), ``txt``
    (``csiq_label.txt``, ``<name> <dmos>`` with names without the ``.png``) or ``both``.
    ``layout``: ``subfolders`` (``dst_imgs/<type>/``) or ``flat`` (``dst_imgs_all/``).
    """
    root = Path(root)
    refs = CSIQ_REFS[:n_refs]
    records = []
    for ref_index, ref in enumerate(refs):
        reference = _reference_image(200 + ref_index, size)
        _write_image(root / "src_imgs" / f"{ref}.png", reference)
        for type_code in types:
            type_index = list(CSIQ_FOLDERS).index(type_code)
            for level in range(1, levels + 1):
                name = f"{ref}.{type_code}.{level}.png"
                folder = root / "dst_imgs" / CSIQ_FOLDERS[type_code] if layout == "subfolders" \
                    else root / "dst_imgs_all"
                image = _distort(reference, type_index, level, seed=ref_index * 97 + level)
                _write_image(folder / name, image)
                records.append((ref, type_code, type_index, level, csiq_score(ref_index, type_index, level)))
    if labels in ("xlsx", "both"):
        import openpyxl

        book = openpyxl.Workbook()
        sheet = book.active
        sheet.title = "all_by_image"
        sheet["A1"] = "CSIQ DMOS (test fixture)"
        header = ["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"]
        for j, name in enumerate(header):
            sheet.cell(row=4, column=4 + j, value=name)
        row = 5
        previous = None
        for ref, type_code, type_index, level, score in records:
            if previous is not None and ref != previous:
                row += 1  # a blank row between references
            previous = ref
            image_cell: object = int(ref) if ref.isdigit() else ref
            values = [image_cell, type_index + 1, CSIQ_XLSX_WORDS[type_code], level, 0.05, score]
            for j, value in enumerate(values):
                sheet.cell(row=row, column=4 + j, value=value)
            row += 1
        book.create_sheet("all_by_distortion")
        book.save(root / "csiq.DMOS.xlsx")
    if labels in ("txt", "both"):
        text = "".join(f"{ref}.{code}.{level} {score}\n" for ref, code, _, level, score in records)
        (root / "csiq_label.txt").write_text(text, encoding="utf-8")
    return root


# ----------------------------------------------------------------------------------------------
# KADID-10k


def make_kadid(root: str | Path, n_refs: int = 3, types: tuple[int, ...] = (1, 2, 11), levels: int = 5,
               size: int = 48) -> Path:
    """KADID-10k layout: ``dmos.csv`` (``dist_img,ref_img,dmos,var``) and ``images/``; returns ``root``."""
    root = Path(root)
    lines = ["dist_img,ref_img,dmos,var"]
    for ref_id in range(1, n_refs + 1):
        reference = _reference_image(300 + ref_id, size)
        _write_image(root / "images" / f"I{ref_id:02d}.png", reference)
        for type_id in types:
            for level in range(1, levels + 1):
                name = f"I{ref_id:02d}_{type_id:02d}_{level:02d}.png"
                _write_image(root / "images" / name, _distort(reference, type_id, level, seed=ref_id + level))
                lines.append(f"{name},I{ref_id:02d}.png,{kadid_score(ref_id, type_id, level)},0.25")
    (root / "dmos.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


# ----------------------------------------------------------------------------------------------
# LIVE Multiply Distorted (MLIVE)


MLIVE_REFNAMES = ("babygirl.bmp", "bikes.bmp", "lighthouse.bmp", "parrots.bmp", "sailing.bmp")
MLIVE_PARTS = (("Part 1", "blurjpeg"), ("Part 2", "blurnoise"))


def mlive_score(ref_index: int, part_index: int, blur: int, second: int) -> float:
    """DMOS, higher = worse: grows with both levels."""
    return round(9.0 * blur + 7.0 * second + 1.5 * ref_index + 0.25 * part_index, 4)


def mlive_cells() -> list[tuple[int, int]]:
    """The 15 (blur, second) level pairs of each reference in each part: every pair of 0-3 but (0, 0)."""
    return [(b, s) for b in range(4) for s in range(4) if (b, s) != (0, 0)]


def make_mlive(root: str | Path, n_refs: int = 3, size: int = 48, wrapper: str = "To_Release") -> Path:
    """MLIVE layout under ``root/<wrapper>/`` (``wrapper`` "" for none); returns ``root``.

    ``Part 1/blurjpeg/`` and ``Part 2/blurnoise/`` hold the references (``<name>.bmp``) and the distorted
    images (``<name>_<b>_<s>.bmp``, some with an upper-case ``.BMP`` on disk, names read from ``distimgs``);
    each part has ``Imagelists.mat`` (``refimgs``, ``distimgs``, ``ref4dist``, ``distimgdistlevels``, listed
    in a shuffled order, ``refimgs`` in reverse name order so that ``ref4dist`` must be followed) and
    ``Scores.mat`` (``DMOSscores``, ``Zscores``).
    """
    import scipy.io

    base = Path(root) / wrapper if wrapper else Path(root)
    refnames = MLIVE_REFNAMES[:n_refs]
    references = [_reference_image(400 + i, size) for i in range(n_refs)]
    listed_refs = list(reversed(refnames))
    for part_index, (part, folder) in enumerate(MLIVE_PARTS):
        entries = [(r, b, s) for r in range(n_refs) for b, s in mlive_cells()]
        order = np.random.default_rng(50 + part_index).permutation(len(entries))
        names, ref4dist, levels, dmos = [], [], [], []
        for number, k in enumerate(order):
            ref_index, blur, second = entries[k]
            image = references[ref_index] if blur == 0 else \
                cv2.GaussianBlur(references[ref_index], (0, 0), sigmaX=0.8 * blur)
            if second and folder == "blurjpeg":
                ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 60 - 18 * second])
                image = cv2.imdecode(data, cv2.IMREAD_COLOR)
            elif second:
                noise = np.random.default_rng(number).normal(0.0, 8.0 * second, image.shape)
                image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
            stem = Path(refnames[ref_index]).stem
            name = f"{stem}_{blur}_{second}.bmp"
            _write_image(base / part / folder / (name.upper() if number % 7 == 0 else name), image)
            names.append(name)
            ref4dist.append(listed_refs.index(refnames[ref_index]) + 1)
            levels.append((blur, second))
            dmos.append(mlive_score(ref_index, part_index, blur, second))
        for name, image in zip(refnames, references, strict=True):
            _write_image(base / part / folder / name, image)
        cells = np.empty((len(names), 1), dtype=object)
        for i, name in enumerate(names):
            cells[i, 0] = name
        ref_cells = np.empty((len(listed_refs), 1), dtype=object)
        for i, name in enumerate(listed_refs):
            ref_cells[i, 0] = name
        scipy.io.savemat(base / part / "Imagelists.mat", {
            "distimgs": cells, "refimgs": ref_cells,
            "ref4dist": np.array(ref4dist, dtype=np.float64)[:, None],
            "distimgdistlevels": np.array(levels, dtype=np.float64)})
        row = np.array(dmos, dtype=np.float64)[None, :]
        scipy.io.savemat(base / part / "Scores.mat",
                         {"DMOSscores": row, "Zscores": (row - row.mean()) / row.std()})
    return Path(root)
