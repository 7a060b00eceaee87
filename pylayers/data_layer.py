"""The data layers' common part: a Caffe layer whose tops are filled from a batch builder behind a
``pylayers.prefetch.Prefetcher``; the builder declares its tops (``Top``), so the layer knows their shapes
before any data are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pylayers import Blobs, LayerBase
from pylayers.params import loader_params, parse_params
from pylayers.prefetch import Prefetcher
from rankiqa.errors import InputError


@dataclass(frozen=True)
class Top:
    """One top of a data layer, as its batch builder declares it (a builder's ``TOPS``, in top order).

    ``name`` is the top's name and the key of the builder's batch dict; ``image`` says the blob is images,
    (N, 3, crop, crop), else it holds one value per image, (N,).
    """

    name: str
    image: bool = False

    def shape(self, batch: int | None, crop: int) -> tuple[int | None, ...]:
        """The blob shape for ``batch`` images (None: not known before data are read) of side ``crop``."""
        return (batch, 3, crop, crop) if self.image else (batch,)


class PrefetchDataLayer(LayerBase):
    """Base of the data layers: tops filled from a batch builder behind a Prefetcher.

    A subclass sets ``BUILDER`` (its batch builder class, whose ``TOPS`` declares the tops: names, in top
    order, and shapes) and implements ``make_builder(params, common, name)``, returning a ``BUILDER`` with
    ``batch_size``, ``crop`` and ``__call__(global_batch_index) -> dict`` (one array per top, by name).
    ``DEFAULTS`` and ``REQUIRED`` describe its param_str.
    """

    BUILDER: Any = None
    DEFAULTS: dict[str, Any] = {}
    REQUIRED: tuple[str, ...] = ()

    def make_builder(self, params: dict[str, Any], common: dict[str, int], name: str) -> Any:
        raise NotImplementedError

    @classmethod
    def _checked_params(cls, param_str: str | None, n_bottoms: int, n_tops: int
                        ) -> tuple[dict[str, Any], dict[str, int]]:
        """param_str parsed and checked, and the blob counts: what ``setup`` checks before reading data."""
        name = cls.__name__
        params = parse_params(param_str, name, cls.DEFAULTS, required=cls.REQUIRED)
        common = loader_params(params, name)
        tops = cls.BUILDER.TOPS
        if n_tops != len(tops) or n_bottoms != 0:
            raise InputError(f"needs no bottoms and {len(tops)} tops ({', '.join(t.name for t in tops)}); "
                             f"got {n_bottoms}/{n_tops}", name)
        return params, common

    @classmethod
    def static_tops(cls, param_str: str | None, bottoms: list, n_tops: int) -> list[tuple[int | None, ...]]:
        """The top shapes before any data are read (the batch size as None), for ``rankiqa.netcheck``;
        the same param_str and blob-count errors as ``setup``."""
        _, common = cls._checked_params(param_str, len(bottoms), n_tops)
        return [top.shape(None, common["crop"]) for top in cls.BUILDER.TOPS]

    def setup(self, bottom: Blobs, top: Blobs) -> None:
        name = type(self).__name__
        params, common = self._checked_params(self.param_str, len(bottom), len(top))
        self.builder = self.make_builder(params, common, name)
        self.prefetcher = Prefetcher(self.builder, common["workers"], common["prefetch"],
                                     common["shard_index"], common["shard_count"], common["start_batch"])

    def reshape(self, bottom: Blobs, top: Blobs) -> None:
        for index, declared in enumerate(self.BUILDER.TOPS):
            top[index].reshape(*declared.shape(self.builder.batch_size, self.builder.crop))

    def forward(self, bottom: Blobs, top: Blobs) -> None:
        batch = self.prefetcher.next()
        for index, declared in enumerate(self.BUILDER.TOPS):
            # Images travel as uint8 (4x less data through the worker pipe) and become float32 here.
            top[index].data[...] = batch[declared.name]

    def backward(self, top: Blobs, propagate_down: Sequence[bool], bottom: Blobs) -> None:
        """A data layer has nothing to propagate."""
