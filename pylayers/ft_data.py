"""Fine-tuning data layer: ``<path> <score>`` lists (``rankiqa.lists``), random crops, prefetch, shards.

Batches walk through the list epoch by epoch; with ``shuffle`` each epoch has its own seeded
permutation; without, every pass starts at the top of the list (test phase: pooled SROCC/PLCC).
Batch k is a pure function of (seed, k), so the stream is the same for any number of workers and a
resumed run (``start_batch``) continues it exactly. Blobs: BGR 0-255 float32, one uniformly placed
``crop`` x ``crop`` window per image, no mean subtraction, no resize or flip (as the original).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from pylayers.data_layer import PrefetchDataLayer, Top
from pylayers.images import ImageSource, batch_rng, random_crop
from pylayers.params import param_bool, param_int
from rankiqa.lists import read_list

_EPOCH_STREAM = 2  # batch_rng stream of the epoch permutations (0/1 are per-batch streams)


@dataclass
class FTBatchBuilder:
    """Builds the fine-tuning batch with a given global index."""

    TOPS: ClassVar[tuple[Top, ...]] = (Top("data", image=True), Top("score"))

    rows: list[tuple[str, float]]
    source: ImageSource
    batch_size: int
    crop: int
    seed: int
    shuffle: bool
    _orders: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if len(self._orders) > 4:  # a batch touches at most two epochs; keep the cache small
                self._orders.clear()
            n = len(self.rows)
            self._orders[epoch] = batch_rng(self.seed, epoch, _EPOCH_STREAM).permutation(n)
        return self._orders[epoch]

    def plan(self, index: int) -> list[int]:
        """Row indices of batch ``index``.

        Shuffled: positions index*B .. index*B+B-1 of the stream of epoch permutations. In list order
        (``shuffle: false``, the test phase): passes are aligned to the list, batch j of a pass starts at
        row j*B and the last batch is topped up from the start, so ceil(n/B) batches see every row.
        """
        n = len(self.rows)
        if not self.shuffle:
            within = index % -(-n // self.batch_size)
            return [(within * self.batch_size + k) % n for k in range(self.batch_size)]
        picks = []
        for position in range(index * self.batch_size, (index + 1) * self.batch_size):
            epoch, offset = divmod(position, n)
            picks.append(int(self._order(epoch)[offset]))
        return picks

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        picks = self.plan(index)
        rng = batch_rng(self.seed, index, 1)
        data = np.empty((len(picks), 3, self.crop, self.crop), dtype=np.uint8)
        for slot, row in enumerate(picks):
            path = self.rows[row][0]
            data[slot] = random_crop(self.source.read(path), self.crop, rng, path)
        score = np.array([self.rows[row][1] for row in picks], dtype=np.float32)
        return {"data": data, "score": score}


FT_DEFAULTS = {"batch_size": 30, "crop": 224, "seed": 0, "shuffle": True, "workers": 2, "prefetch": 4,
               "shard_index": 0, "shard_count": 1, "start_batch": 0}


class FTDataLayer(PrefetchDataLayer):
    """Caffe data layer: tops ``data`` (N,3,crop,crop) and ``score`` (N,).

    param_str keys: ``list`` (required; relative image paths resolve against the list's folder),
    ``batch_size`` (30), ``crop``, ``seed``, ``shuffle`` (true), ``workers``, ``prefetch``,
    ``shard_index``, ``shard_count``, ``start_batch``.
    """

    BUILDER = FTBatchBuilder
    DEFAULTS = FT_DEFAULTS
    REQUIRED = ("list",)

    def make_builder(self, params: dict, common: dict[str, int], name: str) -> FTBatchBuilder:
        rows = read_list(str(params["list"]))
        return FTBatchBuilder(rows, ImageSource(), param_int(params, "batch_size", name, 1), common["crop"],
                              common["seed"], param_bool(params, "shuffle", name))
