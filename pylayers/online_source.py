"""Ranked batches made online: the rank set of ``make ranks`` computed from the pristine images, not read.

``make train_rank ONLINE=1`` needs the pristine images only. The ranking data layer
(:mod:`pylayers.rank_data`, param_str key ``online``) gets the same :class:`~pylayers.rank_data.RankSet`
that ``make ranks`` would list in its ``manifest.csv`` (the usable pristine images, the same train/test
rule, the same relative paths), and an image source that makes each image when a prefetch worker asks
for it: the pristine image as ``data_prep.pristine.load_pristine`` reads it (what ``make ranks`` stores,
losslessly, as ``pristine/<name>.png``), distorted by ``data_prep.distortions.distort`` with the seed
``data_prep.make_ranks.image_seed(seed, reference, type, level)``. The groups are those ``make ranks``
lists (``data_prep.rank_groups``): for a grid rank set (``mlive``) the chains through its cells, whose nine
cells are only partially ordered. PNG is lossless, so every image, and hence every batch, equals the one
read from a rank set of the same pristine images, types and seed, bit for bit; the batch plan, crops,
prefetch, shards and ``start_batch`` are the layer's own and unchanged.

Types too slow to make inside the workers (``offline``, default ``OFFLINE_TYPES``: image denoising, ID,
whose BM3D takes seconds to tens of seconds per image and level on one core) are read from a
``precomputed`` folder (a ``make ranks`` output of the same rank set, seed and minimum size, e.g.
``make ranks RANK_TYPES=ID``), checked against the pristine images before use, or else left out;
:meth:`OnlinePlan.notes` says which, for ``log.txt``.

param_str ``online`` mapping (``ONLINE_DEFAULTS``): ``pristine`` (folder or ``default``), ``rankset``,
``seed`` (the ``make ranks`` seed: not the layer's batch seed, which the driver sets to seed + 1 for the
test net), ``types`` (list or comma-separated names; default the original's listed types), ``precomputed``
(folder or null), ``offline`` (list or comma-separated names of the types not made online; ``none``:
every type online), and ``make ranks``'s ``min_size``, ``test_fraction`` and ``split_rule``.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from data_prep import distortions, make_ranks, pristine, rank_groups
from pylayers.rank_data import RankSet
from rankiqa import provenance
from rankiqa.errors import InputError

#: Types not made inside the prefetch workers: ID (BM3D denoising) costs 20-50 s per image and level on
#: one core at the paper's image sizes, far more than a training step waits for a batch.
OFFLINE_TYPES = ("ID",)

_RANKS_DEFAULTS = make_ranks.build_parser()  # the defaults of `make ranks` (one place states them)
ONLINE_DEFAULTS: dict[str, Any] = {
    "pristine": _RANKS_DEFAULTS.get_default("pristine"),
    "rankset": _RANKS_DEFAULTS.get_default("rankset"),
    "seed": _RANKS_DEFAULTS.get_default("seed"),
    "types": None,
    "precomputed": None,
    "offline": list(OFFLINE_TYPES),
    "min_size": _RANKS_DEFAULTS.get_default("min_size"),
    "test_fraction": _RANKS_DEFAULTS.get_default("test_fraction"),
    "split_rule": _RANKS_DEFAULTS.get_default("split_rule"),
}
#: Pristine images kept decoded per process: a LIVE-style group alternates between two references.
_CACHED_REFERENCES = 4


@dataclass
class OnlinePlan:
    """What an online rank set is made of: the usable pristine images, the types, where each comes from.

    ``sources`` maps reference name -> pristine file (sorted by name); ``split`` maps it to ``train`` or
    ``test`` (``make_ranks.split_references``); ``online`` are the types made in the workers,
    ``precomputed_types`` those read from ``precomputed``, ``left_out`` those asked for but neither.
    """

    spec: dict[str, Any]
    rankset: str
    seed: int
    sources: dict[str, Path]
    split: dict[str, str]
    online: list[str]
    precomputed_types: list[str]
    left_out: list[str]
    precomputed: Path | None
    skipped: list[str] = field(default_factory=list)

    @property
    def types(self) -> list[str]:
        """The generated types of the batches, in the rank set's order."""
        return [t for t in distortions.RANKSETS[self.rankset] if t in self.online + self.precomputed_types]

    @property
    def groups(self) -> list[tuple[str, list[rank_groups.Member]]]:
        """The groups of :attr:`types` as ``make ranks`` lists them (``data_prep.rank_groups``)."""
        return rank_groups.groups(self.rankset, self.types)

    @property
    def max_level(self) -> int:
        """The highest rank L in a group (ranks 0..L): a type's top level, or a grid type's chain length.

        Taken over every type of the rank set, so that it is defined even when every chosen type is left out.
        """
        every = rank_groups.groups(self.rankset, list(distortions.RANKSETS[self.rankset]))
        return max(len(members) for _, members in every) - 1

    def reference_counts(self) -> dict[str, int]:
        """References per split, as ``rankiqa.manifest.manifest_levels`` counts them in a manifest."""
        counts: dict[str, int] = {}
        for part in self.split.values():
            counts[part] = counts.get(part, 0) + 1
        return counts

    def rank_set(self, split: str) -> RankSet:
        """The (reference x group x rank) grid of ``split``: the rows ``make ranks`` writes in its manifest
        (group and rank in the type and level columns), with the paths of the images it writes."""
        references = [name for name in self.sources if self.split[name] == split]
        if not references:
            raise InputError(f"no pristine image in split {split!r} ({len(self.sources)} usable)",
                             self.spec["pristine"])
        groups = self.groups
        paths = {(name, group, rank): make_ranks.relative_path(name, dtype, level)
                 for name in references for group, members in groups for rank, dtype, level in members}
        # the order read_manifest gives them: the batches draw types by index
        types = sorted(group for group, _ in groups)
        return RankSet(Path(self.spec["pristine"]), references, types, list(range(self.max_level + 1)), paths,
                       {})

    def generated(self, references: Iterable[str]) -> dict[str, tuple[str, str, int]]:
        """Relative path -> (reference, generated type, generated level) of every image of the groups of
        ``references``: one entry per file, though a grid cell's image is listed in two chains and the
        pristine image in every group."""
        groups = self.groups  # once: an inner loop's iterable is evaluated again for every reference
        return {make_ranks.relative_path(name, dtype, level): (name, dtype, level)
                for name in references for _, members in groups for _, dtype, level in members}

    def images(self) -> list[Path]:
        """Every file an online run reads: the pristine images and the precomputed ones it uses."""
        files = list(self.sources.values())
        if self.precomputed is not None:
            files += [self.precomputed / make_ranks.relative_path(name, dtype, level)
                      for name in self.sources for dtype in self.precomputed_types
                      for level in range(1, distortions.levels(self.rankset) + 1)]
        return files

    def notes(self) -> list[str]:
        """What the run makes online, reads, and leaves out (for ``log.txt``)."""
        counts = self.reference_counts()
        lines = [f"online ranked batches (no rank set on disk): {len(self.sources)} pristine image(s) of "
                 f"{self.spec['pristine']} ({counts.get('train', 0)} train, {counts.get('test', 0)} test), "
                 f"rank set {self.rankset}, seed {self.seed}; made in the prefetch workers: "
                 f"{', '.join(self.online) or 'none'}"]
        if self.precomputed_types:
            lines.append(f"online: {', '.join(self.precomputed_types)} read from {self.precomputed} "
                         "(too slow to make online)")
        if self.left_out:
            lines.append(f"online: {', '.join(self.left_out)} left out (too slow to make online; give a "
                         f"precomputed folder: `make ranks RANK_TYPES={','.join(self.left_out)}`, then its "
                         "folder as PRECOMPUTED or --precomputed)")
        lines += [f"online: {message}" for message in self.skipped]
        return lines


def parse_spec(value: Any, where: str) -> dict[str, Any]:
    """The ``online`` param_str value checked and completed with ``ONLINE_DEFAULTS`` (InputError naming
    ``where`` for unknown keys or values of the wrong kind)."""
    if not isinstance(value, dict):
        raise InputError(f"param_str: online must be a mapping, e.g. {{pristine: dir}}, got {value!r}", where)
    unknown = sorted(str(key) for key in value if key not in ONLINE_DEFAULTS)
    if unknown:
        raise InputError(f"param_str: online: unknown key(s) {unknown}; known: {sorted(ONLINE_DEFAULTS)}",
                         where)
    spec = {**ONLINE_DEFAULTS, **value}
    for key in ("seed", "min_size"):
        if isinstance(spec[key], bool) or not isinstance(spec[key], int) or spec[key] < 0:
            raise InputError(f"param_str: online: {key} must be an integer >= 0, got {spec[key]!r}", where)
    if isinstance(spec["test_fraction"], bool) or not isinstance(spec["test_fraction"], (int, float)):
        raise InputError(f"param_str: online: test_fraction must be a number, got {spec['test_fraction']!r}",
                         where)
    if spec["split_rule"] not in make_ranks.SPLIT_RULES:
        raise InputError(f"param_str: online: split_rule must be one of {list(make_ranks.SPLIT_RULES)}, got "
                         f"{spec['split_rule']!r}", where)
    spec["pristine"] = str(spec["pristine"])
    return spec


def plan_online(value: Any, where: str, warn: Any = None) -> OnlinePlan:
    """Resolve an ``online`` spec: validate every pristine image as ``make ranks`` does (a bad one is
    skipped, as there, and named in :meth:`OnlinePlan.notes` and through ``warn``, default stderr), draw
    the split, and check the ``precomputed`` folder. Bad settings raise ``InputError``."""
    spec = parse_spec(value, where)
    rankset = str(spec["rankset"])
    types = make_ranks.parse_types(rankset, spec["types"])
    if not 0.0 <= float(spec["test_fraction"]) < 1.0:
        raise InputError(f"param_str: online: test_fraction {spec['test_fraction']} must be in [0, 1)", where)
    if spec["min_size"] < distortions.MIN_SIDE:
        raise InputError(f"param_str: online: min_size {spec['min_size']} must be at least "
                         f"{distortions.MIN_SIDE}", where)
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    sources: dict[str, Path] = {}
    skipped: list[str] = []
    for source in pristine.resolve_sources(spec["pristine"]):
        try:
            pristine.load_pristine(source, spec["min_size"])
        except InputError as err:
            skipped.append(f"{err} (skipped)")
            warn(skipped[-1])
            continue
        sources[pristine.reference_name(source)] = source
    if not sources:
        raise InputError(f"no usable pristine image ({len(skipped)} skipped)", spec["pristine"])
    sources = dict(sorted(sources.items()))
    split = make_ranks.split_references(list(sources), float(spec["test_fraction"]), spec["seed"],
                                        spec["split_rule"])
    offline = _offline_types(spec["offline"], where)
    slow = [t for t in types if t in offline]
    precomputed = Path(spec["precomputed"]) if spec["precomputed"] is not None else None
    if precomputed is not None and slow:
        _check_precomputed(precomputed, spec, rankset, sources, slow)
    return OnlinePlan(spec=spec, rankset=rankset, seed=int(spec["seed"]), sources=sources, split=split,
                      online=[t for t in types if t not in offline],
                      precomputed_types=slow if precomputed is not None else [],
                      left_out=[] if precomputed is not None else slow, precomputed=precomputed,
                      skipped=skipped)


def _offline_types(value: Any, where: str) -> list[str]:
    """The ``offline`` names (list or comma-separated; ``none`` or empty: none, since a Make variable cannot
    pass an empty value); a name of no rank set raises ``InputError``. The default, ID, is a TID2013-style
    type: a LIVE-style run simply has none of it."""
    if value in (None, "", "none"):
        return []
    names = [t.strip() for t in value.split(",")] if isinstance(value, str) else [str(t) for t in value]
    known = {t for types in distortions.RANKSETS.values() for t in types}
    unknown = [t for t in names if t and t not in known]
    if unknown:
        raise InputError(f"param_str: online: offline: unknown distortion type(s) {', '.join(unknown)}",
                         where)
    return [t for t in names if t]


def _check_precomputed(folder: Path, spec: dict[str, Any], rankset: str, sources: dict[str, Path],
                       types: list[str]) -> None:
    """A precomputed folder must be a ``make ranks`` output of the same settings and pristine images, and
    hold every image of ``types`` for ``sources``: else an InputError naming the file."""
    record_path = folder / make_ranks.SETTINGS_FILE
    record = provenance.read_json(record_path) if record_path.is_file() else None
    if record is None:
        raise InputError("not a `make ranks` output folder (no readable settings record): the precomputed "
                         "images must come from `make ranks` with the same seed", record_path)
    wanted = {"rankset": rankset, "seed": int(spec["seed"]), "min_size": int(spec["min_size"]),
              "generator": distortions.GENERATOR_VERSION}
    changed = provenance.differences(record, wanted, wanted)
    if changed:
        raise InputError(f"precomputed images were made with other settings ({'; '.join(changed)})",
                         record_path)
    recorded = record.get(make_ranks.LIBRARIES_KEY)
    if recorded is not None:  # a record of an earlier version names none: nothing to compare
        mismatch = make_ranks.library_mismatch(recorded, make_ranks.libraries())
        if mismatch is not None:
            # the images made online here would not be those of its versions: one rank set of two
            raise InputError(f"precomputed images: {mismatch}", record_path)
    known = record.get("pristine") or {}
    modified = provenance.compare({name: known[name] for name in sources if name in known},
                                  {name: sources[name] for name in sources if name in known}).modified
    if modified:
        raise InputError(f"precomputed images were made from other pristine images under the same names "
                         f"({provenance.Changes(modified=modified).describe()})", record_path)
    for name in sources:
        for dtype in types:
            for level in range(1, distortions.levels(rankset) + 1):
                path = folder / make_ranks.relative_path(name, dtype, level)
                if not path.is_file():
                    raise InputError(f"precomputed image missing (make it with `make ranks RANK_TYPES="
                                     f"{','.join(types)}` into this folder)", path)


class OnlineSource:
    """The image source of an online rank set: ``read(path)`` makes the image ``make ranks`` would have
    written at ``path`` (relative, as in its manifest); same interface as ``pylayers.prefetch.ImageSource``.

    Pristine images stay decoded in a small per-process cache (the original's batches take every level
    and type of one or two references; with ``mixed_references`` a batch spans more references and the
    cache helps less); worker processes get their own copy when they fork.
    """

    def __init__(self, plan: OnlinePlan, rank_set: RankSet):
        self.plan = plan
        # by generated type and level, not by the rank set's (group, rank): those name no distortion
        self.keys = plan.generated(rank_set.references)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def file_of(self, path: str) -> Path:
        """The file the image at ``path`` is made from (its pristine image) or read from (precomputed)."""
        reference, dtype, level = self.keys[path]
        if level and dtype in self.plan.precomputed_types:
            assert self.plan.precomputed is not None
            return self.plan.precomputed / path
        return self.plan.sources[reference]

    def describe(self, path: str) -> str:
        """Where the image at ``path`` comes from, for messages."""
        if path not in self.keys:
            return path
        _, dtype, level = self.keys[path]
        made = level and dtype not in self.plan.precomputed_types
        return f"{self.file_of(path)}" + (f" made online as {dtype} level {level}" if made else "")

    def missing(self, paths: Iterable[str]) -> list[str]:
        """The paths (in order) that cannot be made or found."""
        return [path for path in paths if path not in self.keys or not self.file_of(path).is_file()]

    def pristine_image(self, reference: str) -> np.ndarray:
        """The pristine image of ``reference`` as ``make ranks`` stores it (BGR uint8 HxWx3)."""
        image = self._cache.get(reference)
        if image is None:
            image = pristine.load_pristine(self.plan.sources[reference], int(self.plan.spec["min_size"]))
            self._cache[reference] = image
            while len(self._cache) > _CACHED_REFERENCES:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(reference)
        return image

    def read(self, path: str) -> np.ndarray:
        """The image at ``path``: made (pristine, distorted with its keyed seed) or read (precomputed)."""
        if path not in self.keys:
            raise InputError("not an image of this online rank set", path)
        reference, dtype, level = self.keys[path]
        if level == 0:
            return self.pristine_image(reference)
        if dtype in self.plan.precomputed_types:
            image = cv2.imread(str(self.file_of(path)), cv2.IMREAD_COLOR)
            if image is None:
                raise InputError("image missing or not decodable", self.describe(path))
            return image
        seed = make_ranks.image_seed(self.plan.seed, reference, dtype, level)
        return distortions.distort(self.pristine_image(reference), self.plan.rankset, dtype, level, seed)


def open_online(value: Any, split: str, where: str) -> tuple[RankSet, OnlineSource]:
    """The rank set of ``split`` and its source for the ``online`` param_str value (see the module)."""
    plan = plan_online(value, where)
    rank_set = plan.rank_set(split)
    return rank_set, OnlineSource(plan, rank_set)
