"""Pristine (reference) images for the ranking data: a user folder, or the photographs inside scikit-image.

The embedded default needs no download: scikit-image's wheel ships a few colour photographs in its
``data`` folder (``DEFAULT_NAMES``; the others there are grey, synthetic, RGBA, tiny or near-duplicates).

Bad-input policy (also in ``DISTORTIONS.md``): a missing or empty folder and two files with the same name
stem are errors (``InputError``: the run cannot be meaningful or the outputs would collide); a single bad
image (unreadable or corrupt, grayscale, RGBA, not 8-bit, smaller than the crop) is reported by
``load_pristine`` with an ``InputError`` that the generator turns into a warning and a skip.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np

from rankiqa.errors import InputError
from rankiqa.paths import IMAGE_SUFFIXES

# Colour photographs shipped in scikit-image's wheel, all at least 300x300 (6 references: 4 train, 2 test).
# Left out: grey images (camera, brick, coins, ...), synthetic ones (color wheel, phantom, chessboard_RGB,
# logo), RGBA (horse, logo), tiny files, motorcycle_right (the stereo twin of motorcycle_left: it would
# leak across the train/test split), and hubble_deep_field / retina (mostly black frames; retina's 2
# megapixels alone would double the BM3D time of the ID type).
DEFAULT_NAMES = (
    "astronaut.png",          # 512x512 portrait
    "chelsea.png",            # 451x300 cat
    "coffee.png",             # 600x400 cup of coffee
    "ihc.png",                # 512x512 microscopy (immunohistochemistry) photograph
    "motorcycle_left.png",    # 741x500 indoor scene
    "rocket.jpg",             # 640x427 launch photograph
)


def skimage_data_dir() -> Path:
    """The ``data`` folder inside the installed scikit-image package (found without importing it)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise InputError("scikit-image is not installed: the default pristine set needs it "
                         "(or give a folder)")
    return Path(spec.origin).parent / "data"


def default_sources() -> list[Path]:
    """The embedded default pristine images that exist on disk, sorted by name."""
    data_dir = skimage_data_dir()
    found = [data_dir / name for name in DEFAULT_NAMES if (data_dir / name).is_file()]
    if not found:
        raise InputError(f"none of the default pristine images ({', '.join(DEFAULT_NAMES)}) found", data_dir)
    return found


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (png/jpg/jpeg/bmp/tif/tiff, any case) directly inside ``folder``, sorted by name.

    Raises ``InputError`` when the folder does not exist, holds no image, or two images share a name
    stem (``a.png`` and ``a.jpg`` would both become ``pristine/a.png``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("pristine folder not found", folder)
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise InputError(f"no images ({'/'.join(e[1:] for e in IMAGE_SUFFIXES)}) in the pristine folder",
                         folder)
    check_unique_names(files)
    return files


def resolve_sources(pristine: str | os.PathLike) -> list[Path]:
    """``"default"`` -> the embedded scikit-image photographs; anything else -> ``list_images(folder)``."""
    if str(pristine) == "default":
        return default_sources()
    return list_images(pristine)


def reference_name(path: str | os.PathLike) -> str:
    """The reference name of an image: its file name without extension."""
    return Path(path).stem


def check_unique_names(files: list[Path]) -> None:
    """Raise ``InputError`` when two files map to the same reference name (their outputs would collide)."""
    seen: dict[str, Path] = {}
    for path in files:
        name = reference_name(path)
        if name in seen:
            raise InputError(f"same reference name {name!r} as {seen[name]}: rename one of them", path)
        seen[name] = path


def check_name(path: str | os.PathLike) -> None:
    """Raise ``InputError`` when a file's reference name cannot go into the lists and the manifest.

    ``<path> <level>`` lines allow inner spaces but not a newline or leading/trailing spaces; commas and
    quotes are refused too so that a naive CSV reader of the manifest cannot be misled.
    """
    name = reference_name(path)
    if any(ch in name for ch in "\n\r,\"") or name != name.strip() or not name:
        raise InputError(f"reference name {name!r} cannot go into a list (newline, comma, quote or "
                         "leading/trailing space): rename the file", path)


def load_pristine(path: str | os.PathLike, min_size: int) -> np.ndarray:
    """Read one pristine image as BGR uint8 HxWx3, or raise ``InputError`` naming the file.

    Rejected: names that cannot be listed (``check_name``), unreadable or corrupt files, grayscale (one
    channel, or three equal channels), images with an alpha channel, other than 8-bit, and images with a
    side shorter than ``min_size`` (the crop).
    """
    path = Path(path)
    check_name(path)
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise InputError("image not found", path)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise InputError("unreadable or corrupt image", path)
    if image.dtype != np.uint8:
        raise InputError(f"{image.dtype} image: only 8-bit images are supported", path)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise InputError("grayscale image: the distortions need a colour image", path)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputError(f"unsupported image layout {image.shape}", path)
    if image.shape[2] == 4:
        raise InputError("image has an alpha channel (RGBA): save it as RGB", path)
    if np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 1], image[:, :, 2]):
        raise InputError("grayscale image (three equal channels): the distortions need a colour image", path)
    height, width = image.shape[:2]
    if min(height, width) < min_size:
        raise InputError(f"image is {width}x{height}, smaller than the {min_size}x{min_size} crop", path)
    return np.ascontiguousarray(image)
