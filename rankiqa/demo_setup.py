"""What one run of ``make demo`` is made of: its constants, its two profiles, its photographs, and where
each of a seed's stages writes (``tools/demo.py`` runs the stages; ``rankiqa.demo_report`` sums them up).

Everything here decides the demo's outputs and is stated once: the rank set and net, the rule that splits the
photographs (sorted names, alternately into ranking and fine-tuning references), the types left out and why,
the schedules of the full and quick profiles, the OpenBLAS thread count of every stage, and the settings pin
(``demo_settings.json``) that keeps one folder's outputs to one configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankiqa import blas
from rankiqa.errors import InputError
from rankiqa.fsutil import atomic_write_text
from rankiqa.runconfig import SHALLOW_DEFAULT_LR

RANKSET = "tid2013"
NET = "shallow"
STANDIN_LABEL = "synthetic stand-in (MS-SSIM), not human MOS"
SETTINGS_FILE = "demo_settings.json"
STAGES_FILE = "stages.json"
#: At least this many usable photographs: 3 for ranking, 3 for fine-tuning (1 train, 2 held out).
MIN_PHOTOS = 6
#: Held-out test references of the stand-in set, at least (the claim is measured on them).
MIN_TEST_REFS = 2
#: Photographs larger than this on their shorter side are resized to it (INTER_AREA) before anything else.
#: Why: the embedded photographs carry their own noise and JPEG traces at full size (rocket.jpg is a JPEG),
#: so a mildly smoothed or compressed copy can look cleaner than the "pristine" one; area downscaling averages
#: those traces away, makes every stage several times faster, and lets a user's multi-megapixel photographs
#: run in minutes. The demo only: ``make ranks`` never resizes.
SHORT_SIDE = 256
#: OpenBLAS threads of every stage. Caffe's CPU products sum in an order that depends on the thread count,
#: and over hundreds of training iterations those last-bit differences grow into other models (measured:
#: the same seed's ranking loss equal at iteration 20, 7.56 against 5.81 at iteration 100, with 2 threads
#: against 1), so the demo fixes the count instead of taking it from the machine's cores: a seed then gives
#: the same numbers on any machine with the same Caffe build and CPU kernels. Speed decides nothing here:
#: beside two prefetch workers 1 and 2 threads stepped within 10 % of each other on 2 cores, each the
#: faster in one of two runs of BENCHMARKS.md section 5. A count the user sets (``OPENBLAS_NUM_THREADS``, or
#: ``OMP_NUM_THREADS``, which OpenBLAS also reads: ``rankiqa.blas.VARIABLES``) wins, and the summary says so.
BLAS_THREADS = 1
#: What the claim asks of the ranking model on references it never saw (pairwise accuracy).
RANK_ACCURACY_GOAL = {"overall": 0.85, "every_type": 0.5}
#: Types of the TID2013-style set left out of the demo, and why (reported in the summary).
EXCLUDED_TYPES = {
    "ID": "image denoising runs CBM3D: about 40 s per image on this CPU, longer than all other types "
          "together",
    "CS": "a chroma-only change: MS-SSIM on luminance scores every level 1.000, so its stand-in score "
          "would carry no information",
}
#: Types left out of the ranking stage only: the stand-in fine-tuning set keeps them (as TID2013 rates them).
NOT_RANKED = {"HFN": "left out of the original's ranking lists (generated there, never trained on)"}


@dataclasses.dataclass(frozen=True)
class Profile:
    """Everything that decides the demo's outputs (stored in ``demo_settings.json``)."""

    name: str
    rank_refs: tuple[str, ...]
    ft_refs: tuple[str, ...]
    types: tuple[str, ...]      # ranking types (also those of the held-out rank table)
    ft_types: tuple[str, ...]   # types of the stand-in fine-tuning set
    ft_test_refs: int           # held-out references of the stand-in set (per seed, seeded choice)
    rank_iters: int
    rank_lr: float
    rank_types_per_batch: int
    ft_iters: int
    ft_lr: float
    ft_batch: int
    head_init: str              # start of the fine-tuning head (rankiqa.head_init)
    loss_scale: str             # scale of the Euclidean loss (rankiqa.head_init)
    snapshot: int
    ft_test_interval: int       # test passes during fine-tuning (0 = none; the evaluation does not use them)
    eval_crops: int
    eval_batch: int


def _all_types_but_excluded(also: dict[str, str] | None = None) -> tuple[str, ...]:
    from data_prep import distortions

    left_out = {**EXCLUDED_TYPES, **(also or {})}
    return tuple(t for t in distortions.RANKSETS[RANKSET] if t not in left_out)


def _alternate(names: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split names alternately (0, 2, 4, ... and 1, 3, 5, ...): a rule, not a choice of favourable images."""
    return tuple(names[0::2]), tuple(names[1::2])


def test_reference_count(n_ft: int) -> int:
    """Held-out references among ``n_ft`` fine-tuning references: half, at least ``MIN_TEST_REFS``."""
    return max(MIN_TEST_REFS, n_ft // 2)


@dataclasses.dataclass(frozen=True)
class Photos:
    """The photographs of one demo: name -> file, and a tag naming the set in folder names."""

    sources: dict[str, Path]
    tag: str
    origin: str


def default_names() -> list[str]:
    """Reference names of the embedded default pristine images, sorted."""
    from data_prep import pristine

    return sorted(pristine.reference_name(p) for p in pristine.default_sources())


def resolve_photos(pristine_arg: str, warn: Any = None) -> Photos:
    """The usable photographs of ``--pristine`` (``default`` or a folder), checked before anything runs.

    A file that ``data_prep.pristine.load_pristine`` rejects (unreadable, grayscale, RGBA, 16-bit, smaller
    than the crop) is skipped with a warning naming it; fewer than ``MIN_PHOTOS`` usable photographs is an
    ``InputError`` naming the folder. A folder's tag is its name plus a hash of its files' names, sizes and
    modification times, so another or changed folder gets other stage folders.
    """
    from data_prep import pristine

    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    if str(pristine_arg) == "default":
        files = pristine.default_sources()
        where: Path = pristine.skimage_data_dir()
    else:
        where = Path(pristine_arg)
        files = pristine.list_images(where)
    usable: dict[str, Path] = {}
    for path in files:
        try:
            pristine.load_pristine(path, 227)
        except InputError as err:
            warn(f"skipped: {err}")
            continue
        usable[pristine.reference_name(path)] = path
    if len(usable) < MIN_PHOTOS:
        raise InputError(f"the demo needs at least {MIN_PHOTOS} usable colour photographs (at least "
                         f"227x227): {len(usable)} found ({', '.join(sorted(usable)) or 'none'}); half train "
                         "the ranking, the others are fine-tuned on and held out", where)
    if str(pristine_arg) == "default":
        return Photos(usable, "default", "scikit-image's embedded colour photographs")
    digest = hashlib.sha256()
    for name in sorted(usable):
        stat = usable[name].stat()
        digest.update(f"{usable[name].name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in where.resolve().name) or "photos"
    return Photos(usable, f"{safe}-{digest.hexdigest()[:8]}", str(where.resolve()))


#: The schedule of the full profile (see docs/DEMO.md for the measurements behind it). Every ranking
#: batch holds every type (the original draws 9 of its 18 per batch): measured on the held-out references,
#: this ranked the global types (MSH, CCL, CCH, BW) better than 9 types per batch at equal time.
FULL_RANK_ITERS = 200
FULL_FT_ITERS = 100
FULL_FT_BATCH = 30
#: Random crops per image in the full profile's evaluations (the paper takes 30; with 10 a seed's three
#: evaluations took 69 s on 2 cores, docs/DEMO.md).
EVAL_CROPS = 10


def full_profile(names: Sequence[str]) -> Profile:
    """The ``make demo`` configuration: one seed in under 15 minutes on 2 cores (README, measured).

    Learning rates: the Shallow net's defaults of ``rankiqa.runconfig`` (``SHALLOW_DEFAULT_LR``; the faithful
    solvers' rates are VGG-16's), the same fine-tuning rate, head start and iterations for both
    initialisations.
    """
    rank_refs, ft_refs = _alternate(sorted(names))
    types = _all_types_but_excluded(NOT_RANKED)
    return Profile(name="full", rank_refs=rank_refs, ft_refs=ft_refs, types=types,
                   ft_types=_all_types_but_excluded(),
                   ft_test_refs=test_reference_count(len(ft_refs)),
                   rank_iters=FULL_RANK_ITERS, rank_lr=SHALLOW_DEFAULT_LR["rank"],
                   rank_types_per_batch=len(types), ft_iters=FULL_FT_ITERS,
                   ft_lr=SHALLOW_DEFAULT_LR["finetune"], ft_batch=FULL_FT_BATCH, head_init="calibrate",
                   loss_scale="std", snapshot=100, ft_test_interval=0, eval_crops=EVAL_CROPS, eval_batch=1)


def quick_profile(names: Sequence[str]) -> Profile:
    """A tiny configuration (a minute or two) for the tests: three types, a few iterations."""
    rank_refs, ft_refs = _alternate(sorted(names))
    return Profile(name="quick", rank_refs=rank_refs, ft_refs=ft_refs, types=("GN", "GB", "JPEG"),
                   ft_types=("GN", "GB", "JPEG", "HFN"),
                   ft_test_refs=test_reference_count(len(ft_refs)), rank_iters=4,
                   rank_lr=SHALLOW_DEFAULT_LR["rank"], rank_types_per_batch=3, ft_iters=4,
                   ft_lr=SHALLOW_DEFAULT_LR["finetune"], ft_batch=8, head_init="calibrate", loss_scale="std",
                   snapshot=4, ft_test_interval=2, eval_crops=2, eval_batch=24)


def check_settings(folder: Path, settings: dict[str, Any]) -> None:
    """Write ``demo_settings.json`` in ``folder`` or refuse to mix its outputs with other settings."""
    path = folder / SETTINGS_FILE
    folder.mkdir(parents=True, exist_ok=True)
    settings = json.loads(json.dumps(settings))  # tuples become lists, as they come back from the file
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise InputError("unreadable demo settings: delete the folder to start over", path) from None
        if previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise InputError(f"this folder holds a demo with other settings ({', '.join(changed)}); delete "
                             "it to start over or pass another --data-dir/--runs-dir", path)
        return
    atomic_write_text(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")


class StageTimes:
    """Seconds per stage, kept in ``<out>/stages.json`` so that a resumed demo still reports them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stages: dict[str, dict[str, Any]] = {}
        if path.is_file():
            try:
                self.stages = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                self.stages = {}  # only timings: start them afresh rather than refuse to run

    def record(self, stage: str, seconds: float, reused: bool) -> None:
        """Store a stage's time and the OpenBLAS thread count it ran with (``stage_blas_threads``); a
        reused stage keeps both of the run that did the work (a count missing: made before they were kept)."""
        previous = self.stages.get(stage, {})
        if reused:
            self.stages[stage] = {"seconds": previous.get("seconds"), "reused": True,
                                  "blas_threads": previous.get("blas_threads")}
        else:
            self.stages[stage] = {"seconds": round(seconds, 1), "reused": False,
                                  "blas_threads": stage_blas_threads()}
        atomic_write_text(self.path, json.dumps(self.stages, indent=2) + "\n")
        done = "reused (outputs complete)" if reused else f"{seconds:.1f} s"
        print(f"[demo] stage {stage}: {done}", file=sys.stderr, flush=True)


def stage_blas_threads() -> str:
    """The OpenBLAS thread count a stage started now runs with (``_run`` gives it to every child as
    ``OPENBLAS_NUM_THREADS``): the count the user's environment asks for (``blas.requested_threads``), else
    ``BLAS_THREADS``."""
    return str(blas.requested_threads() or BLAS_THREADS)


def blas_threads_note(stages: Sequence[dict[str, Any]]) -> str:
    """The OpenBLAS thread counts the stages ran with (as ``StageTimes`` recorded them), and why it matters
    (see ``BLAS_THREADS``). A resumed demo may hold stages of several counts: each is named."""
    counts = sorted({str(s.get("blas_threads") or "not recorded") for s in stages})
    fixed = f"{BLAS_THREADS} (fixed, so that a seed gives the same numbers on every machine)"
    if counts in ([], [str(BLAS_THREADS)]):
        return fixed
    return (f"{', '.join(counts)} (OPENBLAS_NUM_THREADS or OMP_NUM_THREADS set by the user for some stages, "
            f"or stages of a demo that did not record it; the demo's own {BLAS_THREADS} makes a seed give "
            "the same numbers on every machine, another count gives other numbers; per stage in "
            "`seed<S>/stages.json`)")


@dataclasses.dataclass
class Paths:
    """Where each stage of one seed writes."""

    data: Path
    runs: Path
    out: Path  # this seed's results: <out>/seed<S>

    @property
    def pristine_rank(self) -> Path:
        return self.data / "pristine" / "rank"

    @property
    def pristine_ft(self) -> Path:
        return self.data / "pristine" / "ft"

    @property
    def ranks(self) -> Path:
        return self.data / "ranks" / RANKSET

    @property
    def synthetic(self) -> Path:
        return self.data / "ft" / "synthetic"

    @property
    def ft_lists(self) -> Path:
        return self.synthetic / "split0"

    @property
    def heldout_ranks(self) -> Path:
        return self.synthetic / "heldout_ranks.csv"

    def run(self, name: str) -> Path:
        return self.runs / name

    def evaluation(self, name: str) -> Path:
        return self.out / "eval" / name

    @property
    def rank_accuracy(self) -> Path:
        return self.out / "rank_accuracy"
