"""Ranked-batch data layer for the efficient Siamese training (RankIQA).

A batch is a list of groups. One group = one distortion type of ``images_per_group`` consecutive
reference images over all levels 0..L (0 = pristine = best), in level order (level-major, then image).
As in the original:

* TID2013-style (``types_per_batch: 9, images_per_group: 1``): 9 of the 18 types at random, 5 levels,
  and all groups of a batch use the same reference image, whose index advances with every batch.
* LIVE-style (``types_per_batch: 4, images_per_group: 2``): all 4 types x 6 levels x 2 consecutive
  reference images (pairs across levels are also formed across the two images of a group).

When ``types_per_batch`` equals the number of types the types come in sorted order, else a random
subset per batch. Each image gets its own uniformly placed random crop (as the original), or, with
``aligned_crops: true``, all levels of one reference in one group share one crop window, so that the
images of a group differ only by their distortion. With ``mixed_references: true`` group g of a batch
takes the reference window g places after the batch's own, so that one batch spans several references
and every step averages over their content (an option, not the original's; measured on the CPU demo in
docs/DEMO.md, where it did not help). Blobs are BGR 0-255 float32 with no mean subtraction (as the original).
Input: ``manifest.csv`` of ``make ranks`` (``reference,type,level,path,split``; paths relative to the
manifest's folder), or the LMDB beside it; or, with ``online`` in place of ``manifest``, the same images
made from the pristine images inside the prefetch workers (:mod:`pylayers.online_source`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pylayers.data_layer import PrefetchDataLayer, Top
from pylayers.images import ImageSource, batch_rng, random_crop
from pylayers.params import param_bool, param_int
from rankiqa import manifest
from rankiqa.errors import InputError
from rankiqa.manifest import MANIFEST_COLUMNS, RankSet, read_manifest
from rankiqa.registry import RANK_STYLES

__all__ = ["MANIFEST_COLUMNS", "RankBatchBuilder", "RankDataLayer", "RankSet", "open_source", "read_manifest"]

def open_source(rank_set: RankSet, lmdb_path: str | None, layer: str) -> ImageSource:
    """Image source for a manifest: files beside it, or the LMDB; checks that every image is there."""
    source = ImageSource(rank_set.manifest.parent, lmdb_path)
    keys = list(rank_set.paths)
    missing = source.missing(rank_set.paths[key] for key in keys)
    if missing:
        first = next(key for key in keys if rank_set.paths[key] == missing[0])
        raise InputError(f"{len(missing)} image(s) missing, first {source.describe(missing[0])}",
                         rank_set.manifest, rank_set.lines[first])
    return source


@dataclass
class RankBatchBuilder:
    """Builds the ranked batch with a given global index (a pure function of seed and index)."""

    TOPS: ClassVar[tuple[Top, ...]] = (Top("data", image=True), Top("label"), Top("group"))

    rank_set: RankSet
    source: ImageSource | None
    types_per_batch: int
    images_per_group: int
    crop: int
    seed: int
    aligned_crops: bool = False
    mixed_references: bool = False

    def __post_init__(self) -> None:
        where = str(self.rank_set.manifest)
        n_types, n_refs = len(self.rank_set.types), len(self.rank_set.references)
        if not 1 <= self.types_per_batch <= n_types:
            raise InputError(f"types_per_batch {self.types_per_batch} cannot be formed from {n_types} "
                             "distortion type(s) (--types-per-batch; TYPES_PER_BATCH with make)", where)
        if not 1 <= self.images_per_group <= n_refs:
            raise InputError(f"images_per_group {self.images_per_group} cannot be formed from {n_refs} "
                             "reference image(s)", where)

    @property
    def batch_size(self) -> int:
        return manifest.batch_size(self.types_per_batch, self.images_per_group, self.rank_set.max_level)

    def plan(self, index: int) -> list[tuple[str, str, int, int]]:
        """The batch's items ``(reference, type, level, group)`` in blob order."""
        rank_set = self.rank_set
        rng = batch_rng(self.seed, index, 0)
        n_types = len(rank_set.types)
        if self.types_per_batch == n_types:
            chosen = list(range(n_types))
        else:
            chosen = [int(t) for t in rng.permutation(n_types)[:self.types_per_batch]]
        # The reference window advances by images_per_group per batch and wraps when fewer are left; with
        # mixed_references group g takes the window g places further, so one batch spans several references.
        positions = len(rank_set.references) // self.images_per_group
        items = []
        for group, type_index in enumerate(chosen):
            shift = group if self.mixed_references else 0
            start = ((index + shift) % positions) * self.images_per_group
            references = rank_set.references[start:start + self.images_per_group]
            for level in rank_set.levels:
                for reference in references:
                    items.append((reference, rank_set.types[type_index], level, group))
        return items

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        assert self.source is not None, "a source is needed to load images"
        items = self.plan(index)
        rng = batch_rng(self.seed, index, 1)
        data = np.empty((len(items), 3, self.crop, self.crop), dtype=np.uint8)
        for slot, (reference, distortion, level, group) in enumerate(items):
            path = self.rank_set.paths[(reference, distortion, level)]
            window = rng
            if self.aligned_crops:
                # the same generator state for every level of (group, reference): the same window
                ref_index = self.rank_set.references.index(reference)
                window = np.random.default_rng([self.seed, index, 2, group, ref_index])
            data[slot] = random_crop(self.source.read(path), self.crop, window, self.source.describe(path))
        return {
            "data": data,
            "label": np.array([item[2] for item in items], dtype=np.float32),
            "group": np.array([item[3] for item in items], dtype=np.float32),
        }


def rank_source(params: dict, name: str) -> tuple[RankSet, ImageSource]:
    """The rank set of ``params["split"]`` and its image source: read from ``manifest`` (and ``lmdb``), or
    made from pristine images (``online``, :mod:`pylayers.online_source`)."""
    if params.get("online") is not None:
        from pylayers.online_source import open_online  # only online runs need the distortions

        return open_online(params["online"], str(params["split"]), name)
    rank_set = read_manifest(params["manifest"], str(params["split"]))
    return rank_set, open_source(rank_set, params["lmdb"], name)


class RankSetLayer(PrefetchDataLayer):
    """Base of the layers that read a rank set: param_str ``manifest`` or ``online``, exactly one."""

    @classmethod
    def _checked_params(cls, param_str: str | None, n_bottoms: int, n_tops: int
                        ) -> tuple[dict, dict[str, int]]:
        params, common = super()._checked_params(param_str, n_bottoms, n_tops)
        name = cls.__name__
        if (params["manifest"] is None) == (params["online"] is None):
            raise InputError("param_str: give one of 'manifest' (a rank set on disk) and 'online' (made "
                             "from pristine images)", name)
        if params["online"] is not None and params["lmdb"] is not None:
            raise InputError("param_str: 'lmdb' belongs to a rank set on disk, not to 'online'", name)
        return params, common


#: Batch make-up when the prototxt gives none: the TID2013 ranking style of the registry (the original's).
_DEFAULT_STYLE = RANK_STYLES["tid2013"]
RANK_DEFAULTS = {"manifest": None, "online": None,
                 "split": "train", "lmdb": None, "types_per_batch": _DEFAULT_STYLE.types_per_batch,
                 "images_per_group": _DEFAULT_STYLE.images_per_group, "crop": 224,
                 "seed": 0, "workers": 2, "prefetch": 4, "shard_index": 0, "shard_count": 1,
                 "start_batch": 0, "aligned_crops": False,
                 "mixed_references": False}


class RankDataLayer(RankSetLayer):
    """Caffe data layer: tops ``data`` (N,3,crop,crop), ``label`` (N,) levels, ``group`` (N,) ids.

    param_str keys: ``manifest`` or ``online`` (one of them), ``split``, ``lmdb``, ``types_per_batch``,
    ``images_per_group``, ``crop``, ``seed``, ``workers``, ``prefetch``, ``shard_index``,
    ``shard_count``, ``start_batch``, ``aligned_crops``, ``mixed_references``.
    N = types_per_batch x images_per_group x (L + 1).
    """

    BUILDER = RankBatchBuilder
    DEFAULTS = RANK_DEFAULTS

    def make_builder(self, params: dict, common: dict[str, int], name: str) -> RankBatchBuilder:
        rank_set, source = rank_source(params, name)
        return RankBatchBuilder(rank_set, source, param_int(params, "types_per_batch", name, 1),
                                param_int(params, "images_per_group", name, 1), common["crop"],
                                common["seed"], param_bool(params, "aligned_crops", name),
                                param_bool(params, "mixed_references", name))
