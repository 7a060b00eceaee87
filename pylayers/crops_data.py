"""A data layer that feeds a deploy net saved crops, for ``make bench``'s evaluation limit: ``caffe time``
runs the deploy net on the crops the scorer scores (``tools/bench.py``), not on an ``Input`` blob of zeros,
which the Shallow net processes faster than images (seen on the CPU)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pylayers import Blobs, LayerBase
from pylayers.params import param_int, parse_params
from rankiqa.errors import InputError


def load_crops(path: str | Path) -> np.ndarray:
    """The (K, 3, H, W) crops of a ``.npy`` file, memory-mapped; InputError naming the file when it is
    missing, not a ``.npy`` file, or not K >= 1 crops of 3 channels."""
    try:
        crops = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the crops: {err}", path) from None
    if crops.ndim != 4 or crops.shape[0] < 1 or crops.shape[1] != 3:
        raise InputError(f"crops must be (K, 3, H, W) with K >= 1, got {crops.shape}", path)
    return crops


class CropsDataLayer(LayerBase):
    """Caffe data layer: one top, ``batch`` crops per forward from the ``.npy`` file ``crops`` (cycling),
    copied into the top as the scorer copies its crops into the input blob.

    param_str keys (both required): ``crops`` (path of a (K, 3, H, W) float32 ``.npy`` file), ``batch``.
    Top: (batch, 3, H, W).
    """

    @classmethod
    def _checked(cls, param_str: str | None, n_bottoms: int, n_tops: int) -> tuple[np.ndarray, int]:
        """(crops, batch) from param_str, with the blob counts checked."""
        name = cls.__name__
        params = parse_params(param_str, name, {}, required=("crops", "batch"))
        batch = param_int(params, "batch", name, 1)
        if n_bottoms != 0 or n_tops != 1:
            raise InputError(f"needs no bottoms and 1 top; got {n_bottoms}/{n_tops}", name)
        return load_crops(str(params["crops"])), batch

    @classmethod
    def static_tops(cls, param_str: str | None, bottoms: list, n_tops: int) -> list[tuple[int, ...]]:
        """The top's shape before the net is built (``rankiqa.netcheck``): the checks of ``setup``."""
        crops, batch = cls._checked(param_str, len(bottoms), n_tops)
        return [(batch, *crops.shape[1:])]

    def setup(self, bottom: Blobs, top: Blobs) -> None:
        self.crops, self.batch = self._checked(self.param_str, len(bottom), len(top))
        self.next = 0

    def reshape(self, bottom: Blobs, top: Blobs) -> None:
        top[0].reshape(self.batch, *self.crops.shape[1:])

    def forward(self, bottom: Blobs, top: Blobs) -> None:
        index = (self.next + np.arange(self.batch)) % len(self.crops)
        top[0].data[...] = self.crops[index]
        self.next = int(index[-1] + 1) % len(self.crops)

    def backward(self, top: Blobs, propagate_down: Sequence[bool], bottom: Blobs) -> None:
        """A data layer has nothing to propagate."""
