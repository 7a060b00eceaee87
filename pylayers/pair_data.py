"""Pair data layer for the standard two-branch Siamese baseline.

Each of the ``batch_size`` pairs is drawn from one group of the ranked set (a random reference, a random
distortion type, two different levels); ``label`` is +1 when the first image (``data``) is the better
(less distorted) one and -1 when the second (``data_p``) is. Same manifest, crops, seeding, prefetch and
shards as :mod:`pylayers.rank_data`, so ``make bench`` compares the losses on equal terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pylayers.data_layer import Top
from pylayers.images import ImageSource, batch_rng, random_crop
from pylayers.params import param_int
from pylayers.rank_data import RankSet, RankSetLayer, rank_source


@dataclass
class PairBatchBuilder:
    """Builds the pair batch with a given global index (a pure function of seed and index)."""

    TOPS: ClassVar[tuple[Top, ...]] = (Top("data", image=True), Top("data_p", image=True), Top("label"))

    rank_set: RankSet
    source: ImageSource | None
    batch_size: int
    crop: int
    seed: int

    def plan(self, index: int) -> list[tuple[tuple[str, str, int], tuple[str, str, int]]]:
        """The pairs ``((reference, type, level_a), (reference, type, level_b))`` of one batch."""
        rank_set = self.rank_set
        rng = batch_rng(self.seed, index, 0)
        pairs = []
        for _ in range(self.batch_size):
            reference = rank_set.references[int(rng.integers(len(rank_set.references)))]
            distortion = rank_set.types[int(rng.integers(len(rank_set.types)))]
            level_a, level_b = (int(v) for v in rng.choice(len(rank_set.levels), size=2, replace=False))
            pairs.append(((reference, distortion, level_a), (reference, distortion, level_b)))
        return pairs

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        assert self.source is not None, "a source is needed to load images"
        pairs = self.plan(index)
        rng = batch_rng(self.seed, index, 1)
        shape = (len(pairs), 3, self.crop, self.crop)
        first, second = np.empty(shape, dtype=np.uint8), np.empty(shape, dtype=np.uint8)
        for slot, (key_a, key_b) in enumerate(pairs):
            for blob, key in ((first, key_a), (second, key_b)):
                path = self.rank_set.paths[key]
                blob[slot] = random_crop(self.source.read(path), self.crop, rng, self.source.describe(path))
        label = np.array([1.0 if a[2] < b[2] else -1.0 for a, b in pairs], dtype=np.float32)
        return {"data": first, "data_p": second, "label": label}


PAIR_DEFAULTS = {"manifest": None, "online": None,
                 "split": "train", "lmdb": None, "batch_size": 22, "crop": 224, "seed": 0, "workers": 2,
                 "prefetch": 4, "shard_index": 0, "shard_count": 1, "start_batch": 0}


class PairDataLayer(RankSetLayer):
    """Caffe data layer: tops ``data``, ``data_p`` (P,3,crop,crop) and ``label`` (P,) in {+1, -1}.

    param_str keys: ``manifest`` or ``online`` (one of them, as :mod:`pylayers.rank_data`), ``split``,
    ``lmdb``, ``batch_size`` (pairs, default 22: the 45 images of a TID-style batch make 22 disjoint
    pairs), ``crop``, ``seed``, ``workers``, ``prefetch``, ``shard_index``, ``shard_count``,
    ``start_batch``.
    """

    BUILDER = PairBatchBuilder
    DEFAULTS = PAIR_DEFAULTS

    def make_builder(self, params: dict, common: dict[str, int], name: str) -> PairBatchBuilder:
        rank_set, source = rank_source(params, name)
        return PairBatchBuilder(rank_set, source, param_int(params, "batch_size", name, 1), common["crop"],
                                common["seed"])
