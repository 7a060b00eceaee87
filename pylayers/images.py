"""Where the data layers' images come from and how they are cut: files or an LMDB, random crops, and the
per-batch random generators that make every batch a pure function of (seed, global batch index).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rankiqa.errors import InputError

# One LMDB environment per file and process: py-lmdb refuses to open the same environment twice in a
# process, and a handle inherited through fork must not be used (LMDB's rule), so a forked worker closes
# the inherited handles and opens its own.
_LMDB_ENVS: dict[str, Any] = {}
_LMDB_PID = os.getpid()


def _lmdb_env(path: Path) -> Any:
    """The process's read-only environment of the LMDB at ``path``."""
    global _LMDB_PID
    import lmdb

    if _LMDB_PID != os.getpid():
        for env in _LMDB_ENVS.values():
            try:
                env.close()
            except lmdb.Error:
                pass
        _LMDB_ENVS.clear()
        _LMDB_PID = os.getpid()
    key = str(path.resolve())
    if key not in _LMDB_ENVS:
        try:
            _LMDB_ENVS[key] = lmdb.open(key, readonly=True, lock=False, readahead=False,
                                        subdir=path.is_dir(), max_readers=512)
        except lmdb.Error as err:
            raise InputError(f"cannot open LMDB: {err}", path) from None
    return _LMDB_ENVS[key]


class ImageSource:
    """Reads BGR uint8 images by path: from files under ``root`` or from an LMDB.

    The LMDB (``make ranks LMDB=1``) maps the relative path (UTF-8 key) to the encoded PNG bytes.
    """

    def __init__(self, root: str | os.PathLike | None = None, lmdb_path: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else None
        self.lmdb_path = Path(lmdb_path) if lmdb_path is not None else None
        if self.lmdb_path is not None and not self.lmdb_path.exists():
            raise InputError("LMDB not found", self.lmdb_path)

    def _lmdb(self) -> Any:
        assert self.lmdb_path is not None
        return _lmdb_env(self.lmdb_path)

    def describe(self, path: str) -> str:
        """Where ``path`` is read from, for messages."""
        if self.lmdb_path is not None:
            return f"{self.lmdb_path}[{path}]"
        return str(self.root / path) if self.root is not None else path

    def missing(self, paths: Iterable[str]) -> list[str]:
        """The paths (in order) that cannot be found."""
        if self.lmdb_path is not None:
            with self._lmdb().begin(buffers=True) as txn:
                return [path for path in paths if txn.get(path.encode("utf-8")) is None]
        base = self.root
        return [path for path in paths if not (Path(path) if base is None else base / path).is_file()]

    def read(self, path: str) -> np.ndarray:
        """Decode one image as BGR uint8 (H, W, 3); InputError naming it when unreadable."""
        if self.lmdb_path is not None:
            with self._lmdb().begin() as txn:
                data = txn.get(path.encode("utf-8"))
            if data is None:
                raise InputError(f"key not in LMDB: {path}", self.lmdb_path)
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        else:
            full = Path(path) if self.root is None else self.root / path
            image = cv2.imread(str(full), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError("image missing or not decodable", self.describe(path))
        return image


def random_crop(image: np.ndarray, crop: int, rng: np.random.Generator, where: str = "") -> np.ndarray:
    """A uniformly placed ``crop`` x ``crop`` window of an HWC image, returned CHW (no copy of pixels)."""
    height, width = image.shape[:2]
    if height < crop or width < crop:
        raise InputError(f"image {width}x{height} is smaller than the {crop}x{crop} crop", where or None)
    top = int(rng.integers(0, height - crop + 1))
    left = int(rng.integers(0, width - crop + 1))
    return image[top:top + crop, left:left + crop].transpose(2, 0, 1)


def batch_rng(seed: int, batch_index: int, stream: int = 0) -> np.random.Generator:
    """The generator of one batch: independent streams per (seed, batch, purpose)."""
    return np.random.default_rng([int(seed), int(batch_index), int(stream)])
