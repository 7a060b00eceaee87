"""Paths and file names: the repository root, the nets and solvers under it (``prototxts/``), and the
suffixes of the image files the pipeline reads."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root (this file is ``<root>/rankiqa/paths.py``).
REPO_ROOT = Path(__file__).resolve().parents[1]
#: Nets (``<net>/*.prototxt``) and solvers (``solvers/*.prototxt``).
PROTOTXT_DIR = REPO_ROOT / "prototxts"
#: File name suffixes (lower case) of image files: what ``cv2.imread`` decodes. The dataset loaders, the
#: pristine folder of ``make ranks`` and ``make predict``'s folders take files by these.
IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jp2")


def repo_relative(path: str | os.PathLike) -> str:
    """``path`` relative to the repository root when it lies under it (for records and file headers that
    should read the same on every machine), else as given."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
