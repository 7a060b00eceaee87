"""``make demo``: the RankIQA pipeline in miniature (Shallow net, CPU), over seeds and on any photographs.

    python -m tools.demo [--pristine default|DIR] [--seeds 0,1,2] [--out results/demo] [--jobs N]
        [--quick] [--data-dir data/demo] [--runs-dir runs/demo]

No human-rated IQA database can be shipped, so the fine-tuning set is a SYNTHETIC STAND-IN: pristine
images that the ranking stage never saw, distorted with the project's generator and scored by MS-SSIM
against their reference (``data_prep.synthetic_iqa``), in place of a MOS. Every table and plot says so.

The photographs (``--pristine``: scikit-image's embedded colour photographs, or a folder of at least
``MIN_PHOTOS`` colour photographs) are split, alternately in sorted name order (no hand-picking), into
ranking references and fine-tuning references; the fine-tuning references are split per seed (seeded, by
reference) into training references and at least ``MIN_TEST_REFS`` held-out test references.

Stages, per seed (each one is skipped when its outputs are complete, so a rerun after Ctrl-C resumes):

1. ``pristine``: copies of the photographs in the two disjoint folders.
2. ``ranks``: the TID2013-style rank set of the ranking references (``data_prep.make_ranks``).
3. ``synthetic``: the stand-in fine-tuning set of the other references (``data_prep.synthetic_iqa``,
   which refuses references present in the rank manifest), and ``heldout_ranks.csv``: the same images with
   their pristine references as a rank set (the references the ranking stage never saw).
4. ``train_rank``: Siamese ranking training (``tools.train rank``) on every ranking reference.
5. ``ft_rankiqa`` / ``ft_scratch``: fine-tuning from the ranking model (RankIQA+FT) and, with the same
   iterations, learning rate, head start and seed, from random initialisation (FT from scratch).
6. ``eval_*``: the paper's protocol (``tools.evaluate``: random crops, mean of crops, SROCC/PLCC on raw
   outputs) on the held-out references, for the ranking model alone (output ``fc8_m``), RankIQA+FT and FT
   from scratch; ``rank_accuracy``: the ranking model's pairwise ranking accuracy per distortion type on
   ``heldout_ranks.csv`` (``tools.rank_accuracy``).

Outputs: ``<out>/summary.md``, ``summary.json`` (``runs``: one ``{seed, model, srocc, plcc,
within_reference_srocc, within_reference_plcc}`` per seed and model, pooled over the held-out references and
averaged inside each; ``rank_accuracy``: per seed, ``{type: accuracy, ..., overall}``; ``claim``: each check
per seed; ``claim_intervals``: per seed and model comparison, the difference of the two correlations with its
paired bootstrap interval over the held-out images),
``srocc_per_seed.png``, ``rank_accuracy.png``, and per seed ``<out>/seed<S>/`` (evaluations, rank accuracy,
loss curves, stage times). Stage outputs go to ``<data-dir>/<profile>-<photos>-net<digest>-seed<S>/`` and
``<runs-dir>/...`` (``photos``: ``default``, or the folder's name and a hash of its file list; ``digest``: of
the nets), so the demo never touches a user's ``data/ranks`` or ``runs/``. A ``demo_settings.json`` there pins
the settings; a rerun with other settings is refused.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankiqa.errors import InputError, cli_main
from rankiqa.fsutil import atomic_path, atomic_write_bytes, atomic_write_text
from rankiqa.manifest import MANIFEST_NAME, read_manifest
from rankiqa.paths import PROTOTXT_DIR, REPO_ROOT
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
#: faster in one of two runs of BENCHMARKS.md section 5. ``OPENBLAS_NUM_THREADS`` set by the user wins,
#: and the summary says so.
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
                   ft_lr=SHALLOW_DEFAULT_LR["finetune"], ft_batch=30, head_init="calibrate", loss_scale="std",
                   snapshot=100, ft_test_interval=0, eval_crops=10, eval_batch=1)


def quick_profile(names: Sequence[str]) -> Profile:
    """A tiny configuration (a minute or two) for the tests: three types, a few iterations."""
    rank_refs, ft_refs = _alternate(sorted(names))
    return Profile(name="quick", rank_refs=rank_refs, ft_refs=ft_refs, types=("GN", "GB", "JPEG"),
                   ft_types=("GN", "GB", "JPEG", "HFN"),
                   ft_test_refs=test_reference_count(len(ft_refs)), rank_iters=4,
                   rank_lr=SHALLOW_DEFAULT_LR["rank"], rank_types_per_batch=3, ft_iters=4,
                   ft_lr=SHALLOW_DEFAULT_LR["finetune"], ft_batch=8, head_init="calibrate", loss_scale="std",
                   snapshot=4, ft_test_interval=2, eval_crops=2, eval_batch=24)


#: The schedule of the full profile (see README, "The demo", for the measurements behind it). Every ranking
#: batch holds every type (the original draws 9 of its 18 per batch): measured on the held-out references,
#: this ranked the global types (MSH, CCL, CCH, BW) better than 9 types per batch at equal time.
FULL_RANK_ITERS = 200
FULL_FT_ITERS = 100


# ---------------------------------------------------------------------------------------------------------
# Book-keeping: settings pin, stage times


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
    """The OpenBLAS thread count a stage started now runs with (``_run`` gives it to every child): the
    user's ``OPENBLAS_NUM_THREADS``, else ``BLAS_THREADS``."""
    return os.environ.get("OPENBLAS_NUM_THREADS", str(BLAS_THREADS))


def blas_threads_note(stages: Sequence[dict[str, Any]]) -> str:
    """The OpenBLAS thread counts the stages ran with (as ``StageTimes`` recorded them), and why it matters
    (see ``BLAS_THREADS``). A resumed demo may hold stages of several counts: each is named."""
    counts = sorted({str(s.get("blas_threads") or "not recorded") for s in stages})
    fixed = f"{BLAS_THREADS} (fixed, so that a seed gives the same numbers on every machine)"
    if counts in ([], [str(BLAS_THREADS)]):
        return fixed
    return (f"{', '.join(counts)} (OPENBLAS_NUM_THREADS set by the user for some stages, or stages of a "
            f"demo that did not record it; the demo's own {BLAS_THREADS} makes a seed give the same numbers "
            "on every machine, another count gives other numbers; per stage in `seed<S>/stages.json`)")


class StageFailed(RuntimeError):
    """A stage's command exited with an error (its own message is above in the output)."""


def _run(stage: str, argv: list[str]) -> None:
    """Run ``python -m ...`` as a child (its own Caffe, glog and data workers); Ctrl-C reaches it too."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["OPENBLAS_NUM_THREADS"] = stage_blas_threads()
    print(f"[demo] {stage}: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    process = subprocess.Popen(argv, cwd=REPO_ROOT, env=env)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        # The child got the same Ctrl-C: let it finish its iteration and write its snapshot (killing it
        # here, as subprocess.call would, loses the work since the last snapshot); a second Ctrl-C kills.
        try:
            process.wait(timeout=300)
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
        raise KeyboardInterrupt from None
    if code in (130, -signal.SIGINT):
        raise KeyboardInterrupt
    if code != 0:
        raise StageFailed(f"stage {stage} failed (exit status {code}); rerun the demo to resume it")


# ---------------------------------------------------------------------------------------------------------
# Stages


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


def demo_image(path: Path) -> bytes:
    """The photograph as the demo uses it: PNG, shorter side at most ``SHORT_SIDE`` (area resampling)."""
    import cv2

    from data_prep import pristine

    image = pristine.load_pristine(path, 227)
    height, width = image.shape[:2]
    scale = SHORT_SIDE / min(height, width)
    if scale < 1.0:
        size = (max(227, round(width * scale)), max(227, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise InputError("could not encode the resized photograph as PNG", path)
    return encoded.tobytes()


def stage_pristine(profile: Profile, photos: Photos, paths: Paths) -> bool:
    """Write the photographs (``demo_image``) into the two disjoint pristine folders; False if done."""
    wrote = False
    for folder, names in ((paths.pristine_rank, profile.rank_refs), (paths.pristine_ft, profile.ft_refs)):
        for name in names:
            target = folder / f"{name}.png"
            if not target.is_file():
                atomic_write_bytes(target, demo_image(photos.sources[name]))
                wrote = True
    return wrote


def ranks_complete(paths: Paths) -> bool:
    """make_ranks writes the manifest last: its presence means the set is complete."""
    return (paths.ranks / MANIFEST_NAME).is_file()


def stage_ranks(profile: Profile, paths: Paths, seed: int, jobs: int) -> None:
    """Generate (or finish) the ranking set: every ranking reference trains (no ranking test split; the
    ranking model is measured on the references it never saw, ``heldout_ranks.csv``)."""
    from data_prep import make_ranks

    make_ranks.generate(RANKSET, paths.pristine_rank, paths.ranks, seed=seed, jobs=jobs, test_fraction=0.0,
                        types=list(profile.types), progress=True)


def rank_references(paths: Paths) -> list[str]:
    """References of the ranking set, read back from its manifest (every one trains: no test split)."""
    return read_manifest(paths.ranks / MANIFEST_NAME, "train").references


def synthetic_complete(paths: Paths) -> bool:
    """The stand-in set is complete when its README, table, lists and held-out rank table exist (in the
    order they are written, the rank table last)."""
    return all((paths.synthetic / name).is_file() for name in ("README.txt", "table.csv")) and all(
        (paths.ft_lists / name).is_file() for name in ("train.txt", "test.txt", "test.csv")) and \
        paths.heldout_ranks.is_file()


def stage_synthetic(profile: Profile, paths: Paths, seed: int) -> None:
    """The stand-in fine-tuning set of the references the ranking stage never saw, and its rank table."""
    from data_prep import synthetic_iqa

    fraction = profile.ft_test_refs / len(profile.ft_refs)  # make_ft_lists rounds it back to ft_test_refs
    synthetic_iqa.make_synthetic(paths.pristine_ft, list(profile.ft_refs), paths.synthetic, rankset=RANKSET,
                                 seed=seed, splits=1, test_fraction=fraction,
                                 types=list(profile.ft_types), rank_manifest=paths.ranks / MANIFEST_NAME)
    write_heldout_ranks(paths, profile.types)


def write_heldout_ranks(paths: Paths, types: Sequence[str]) -> None:
    """``heldout_ranks.csv``: the stand-in set's images of the ranking ``types`` with their pristine reference
    as level 0 of every type, in the rank manifest's columns (``rankiqa.rank_accuracy``)."""
    from data_prep import pristine

    originals = {pristine.reference_name(p): p for p in paths.pristine_ft.iterdir() if p.is_file()}
    with open(paths.synthetic / "table.csv", encoding="utf-8", newline="") as handle:
        table = list(csv.DictReader(handle))
    lines = ["reference,type,level,path,split"]
    seen: set[tuple[str, str]] = set()
    for row in table:
        if row["type"] not in types:
            continue
        key = (row["reference"], row["type"])
        if key not in seen:
            seen.add(key)
            lines.append(f"{row['reference']},{row['type']},0,{originals[row['reference']].resolve()},heldout")
        lines.append(f"{row['reference']},{row['type']},{row['level']},{row['path']},heldout")
    atomic_write_text(paths.heldout_ranks, "\n".join(lines) + "\n")


def ft_references(paths: Paths) -> dict[str, list[str]]:
    """Train/test references of split 0 of the stand-in set (from its test table and the full table)."""

    def refs(table: Path) -> set[str]:
        with open(table, encoding="utf-8", newline="") as handle:
            return {row["reference"] for row in csv.DictReader(handle)}

    test = refs(paths.ft_lists / "test.csv")
    return {"train": sorted(refs(paths.synthetic / "table.csv") - test), "test": sorted(test)}


def final_model(run_dir: Path, iters: int) -> Path | None:
    """The run's ``.caffemodel`` at ``iters`` (or beyond), if training finished."""
    from rankiqa import snapshots

    for model in snapshots.snapshots(run_dir / "snapshots", "caffemodel"):
        iteration = snapshots.snapshot_iteration(model)
        if iteration is not None and iteration >= iters:
            return model
    return None


def train_argv(kind: str, profile: Profile, run_dir: Path, seed: int, extra: list[str]) -> list[str]:
    """The ``tools.train`` command line of one training stage (CPU, the profile's schedule)."""
    iters = profile.rank_iters if kind == "rank" else profile.ft_iters
    lr = profile.rank_lr if kind == "rank" else profile.ft_lr
    test_interval = 0 if kind == "rank" else profile.ft_test_interval
    argv = [sys.executable, "-m", "tools.train", kind, "--net", NET, "--out", str(run_dir), "--gpu", "-1",
            "--seed", str(seed), "--iters", str(iters), "--lr", repr(lr),
            "--snapshot", str(min(profile.snapshot, iters)), "--test-interval", str(test_interval)]
    return argv + extra


def stage_train_rank(profile: Profile, paths: Paths, seed: int) -> Path:
    """Siamese ranking training; returns the final model."""
    run_dir = paths.run("rank")
    _run("train_rank", train_argv("rank", profile, run_dir, seed, [
        "--rankset", RANKSET, "--data", str(paths.ranks),
        "--types-per-batch", str(profile.rank_types_per_batch)]))
    model = final_model(run_dir, profile.rank_iters)
    if model is None:
        raise StageFailed(f"ranking training ended without a model at iteration {profile.rank_iters}")
    return model


def stage_finetune(name: str, profile: Profile, paths: Paths, seed: int, rank_model: Path | None) -> Path:
    """Fine-tune on the stand-in set from ``rank_model`` (None: from scratch); returns the final model."""
    run_dir = paths.run(name)
    init = ["--from-scratch"] if rank_model is None else ["--rank-model", str(rank_model)]
    _run(name, train_argv("finetune", profile, run_dir, seed, [
        "--dataset", "synthetic", "--lists", str(paths.ft_lists), "--batch", str(profile.ft_batch),
        "--head-init", profile.head_init, "--loss-scale", profile.loss_scale, *init]))
    model = final_model(run_dir, profile.ft_iters)
    if model is None:
        raise StageFailed(f"fine-tuning {name} ended without a model at iteration {profile.ft_iters}")
    return model


def _report_of(path: Path, model: Path, crops: int, needs: Sequence[str] = ()) -> bool:
    """A JSON report (written last by its tool) of this model and number of crops exists, holding the keys
    ``needs`` (an evaluation made before the toolkit reported them is redone, not read half)."""
    if not path.is_file():
        return False
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return (report.get("model") == str(model) and report.get("crops") == crops
            and all(key in report for key in needs))


def stage_evaluate(name: str, deploy: str, model: Path, profile: Profile, paths: Paths, seed: int) -> None:
    """The paper's protocol on the held-out references of the stand-in set."""
    _run(f"eval_{name}", [
        sys.executable, "-m", "tools.evaluate", "--deploy", str(PROTOTXT_DIR / NET / deploy),
        "--model", str(model), "--table", str(paths.ft_lists / "test.csv"), "--out",
        str(paths.evaluation(name)), "--crops", str(profile.eval_crops), "--batch", str(profile.eval_batch),
        "--seed", str(seed), "--gpu", "-1", "--quiet"])


def stage_rank_accuracy(model: Path, profile: Profile, paths: Paths, seed: int) -> None:
    """Pairwise ranking accuracy of the ranking model on the references it never saw."""
    _run("rank_accuracy", [
        sys.executable, "-m", "tools.rank_accuracy", "--deploy",
        str(PROTOTXT_DIR / NET / "rank_deploy.prototxt"), "--model", str(model), "--ranks",
        str(paths.heldout_ranks), "--out", str(paths.rank_accuracy), "--crops", str(profile.eval_crops),
        "--batch", str(profile.eval_batch), "--seed", str(seed), "--gpu", "-1", "--quiet"])


# ---------------------------------------------------------------------------------------------------------
# Summary


#: The three compared models: key, label, initialisation, deploy net.
MODELS = (
    ("rankiqa", "RankIQA", "ranking model only (output fc8_m)", "rank_deploy.prototxt"),
    ("rankiqa_ft", "RankIQA+FT", "fine-tuned from the ranking model", "ft_deploy.prototxt"),
    ("ft_scratch", "FT from scratch", "fine-tuned from random weights, same iterations, head start and seed",
     "ft_deploy.prototxt"),
)
MODEL_LABELS = tuple(label for _, label, _, _ in MODELS)
#: The two fine-tuning runs: evaluation key (``MODELS``), run folder, label.
FT_RUNS = (("rankiqa_ft", "ft_rankiqa", "RankIQA+FT"), ("ft_scratch", "ft_scratch", "FT from scratch"))


def read_rows(paths: Paths, seed: int) -> list[dict[str, Any]]:
    """One row per model from its ``metrics.json`` (mean-of-crops scoring, as the paper)."""
    rows = []
    for key, label, init, _ in MODELS:
        report = json.loads((paths.evaluation(key) / "metrics.json").read_text(encoding="utf-8"))
        mean, median = report["overall"]["mean"], report["overall"]["median"]
        within = report["within_reference"].get("mean", {}).get("mean")
        if not within:  # the demo's tables name references with 68 images each: never expected
            raise InputError("no within-reference figures in this evaluation", paths.evaluation(key))
        rows.append({"seed": seed, "model": label, "srocc": mean["srocc"], "plcc": mean["plcc"],
                     "krocc": mean.get("krocc"), "within_reference_srocc": within["srocc"],
                     "within_reference_plcc": within["plcc"], "init": init,
                     "output_blob": report.get("output_blob"),
                     "srocc_median_scoring": median["srocc"], "n_images": report["n_images"],
                     "crops": report["crops"], "caffemodel": report["model"],
                     "metrics": str(paths.evaluation(key) / "metrics.md")})
    return rows


def ft_base_lr(paths: Paths) -> dict[str, float | None]:
    """The base rate each fine-tuning run trained at: its ``solver.prototxt``, where the driver writes the
    rate after the head-step bound (``rankiqa.trainer``); None when the file is gone (only reported)."""
    from rankiqa.netconfig import read_solver_param

    rates: dict[str, float | None] = {}
    for _, run, label in FT_RUNS:
        solver = paths.run(run) / "solver.prototxt"
        # float32 in the file: six digits say what was written (3e-06, not 3.000000106e-06)
        rates[label] = float(f"{read_solver_param(solver).base_lr:.6g}") if solver.is_file() else None
    return rates


def read_rank_accuracy(paths: Paths) -> dict[str, float]:
    """``{type: accuracy, ..., "overall": accuracy}`` of the ranking model on the held-out references."""
    return json.loads((paths.rank_accuracy / "rank_accuracy.json").read_text(encoding="utf-8"))["accuracy"]


#: The model comparisons of the claim: (model, relation, other model, metric).
CLAIM_COMPARISONS = (("RankIQA+FT", ">", "FT from scratch", "srocc"),
                     ("RankIQA+FT", ">", "FT from scratch", "plcc"),
                     ("RankIQA+FT", ">=", "RankIQA", "srocc"),
                     ("RankIQA+FT", ">=", "RankIQA", "plcc"))


def comparison_name(model: str, relation: str, other: str, metric: str) -> str:
    """The name of one model comparison of the claim, as the summary and ``claim`` in summary.json use it."""
    return f"{model} {relation} {other} ({metric.upper()})"


def read_predictions(path: Path) -> dict[str, tuple[float, float]]:
    """``{image path: (ground truth, mean-of-crops prediction)}`` of an evaluation's ``per_image.csv``."""
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["path"]: (float(row["ground_truth"]), float(row["pred_mean"]))
                for row in csv.DictReader(handle)}


def comparison_intervals(paths: Paths, seed: int) -> dict[str, dict[str, float]]:
    """Per comparison of the claim: the difference of the two models' correlations and its paired bootstrap
    interval over the held-out images (``rankiqa.metrics.paired_difference``, seeded with ``seed``)."""
    from rankiqa import metrics

    by_label = {label: key for key, label, _, _ in MODELS}
    result = {}
    for model, relation, other, metric in CLAIM_COMPARISONS:
        mine, theirs = (read_predictions(paths.evaluation(by_label[m]) / "per_image.csv")
                        for m in (model, other))
        if mine.keys() != theirs.keys():
            raise InputError(f"the evaluations of {model} and {other} scored different images",
                             paths.evaluation(by_label[other]) / "per_image.csv")
        images = sorted(mine)
        result[comparison_name(model, relation, other, metric)] = metrics.paired_difference(
            [mine[i][1] for i in images], [theirs[i][1] for i in images], [mine[i][0] for i in images],
            metric, seed=seed)
    return result


def intervals_markdown(intervals: dict[int, dict[str, dict[str, float]]]) -> str:
    """Per seed and pair of models: the SROCC and PLCC differences with their bootstrap intervals."""
    pairs = list(dict.fromkeys((model, other) for model, _, other, _ in CLAIM_COMPARISONS))
    relations = {(model, other, metric): relation for model, relation, other, metric in CLAIM_COMPARISONS}
    first = next(iter(next(iter(intervals.values())).values()))
    level = f"{first['level']:.0%}"
    lines = [f"How far each difference is from chance, for these images: a {level} paired bootstrap "
             f"interval ({first['resamples']} resamples of the held-out images, the same draw for both "
             "models; percentile interval; `rankiqa.metrics.paired_difference`). The images of one "
             "photograph are not independent, so an interval leaves out how the difference changes from one "
             "photograph to another; the spread over seeds shows part of that.", "",
             f"| seed | difference | SROCC ({level} interval) | PLCC ({level} interval) |",
             "|---|---|---|---|"]
    for seed, result in intervals.items():
        for model, other in pairs:
            cells = []
            for metric in ("srocc", "plcc"):
                found = result.get(comparison_name(model, relations.get((model, other, metric), ""), other,
                                                   metric))
                cells.append("-" if found is None else
                             f"{found['difference']:+.3f} ({found['low']:+.3f} to {found['high']:+.3f})")
            lines.append(f"| {seed} | {model} − {other} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def claim_values(rows: list[dict[str, Any]], accuracy: dict[str, float]) -> dict[str, tuple[bool, str]]:
    """Each check of the claim on one seed's numbers: whether it holds, and the compared values as text
    (four decimals, so that a near tie printed alike in the tables shows which side it fell on)."""
    by = {row["model"]: row for row in rows}
    result: dict[str, tuple[bool, str]] = {}
    for model, relation, other, metric in CLAIM_COMPARISONS:
        a, b = by[model][metric], by[other][metric]
        holds = a > b if relation == ">" else a >= b
        result[comparison_name(model, relation, other, metric)] = (holds, f"{a:.4f} against {b:.4f}")
    per_type = {t: v for t, v in accuracy.items() if t != "overall"}
    lowest = min(per_type, key=per_type.__getitem__) if per_type else None
    result[f"ranking accuracy overall >= {RANK_ACCURACY_GOAL['overall']}"] = (
        accuracy["overall"] >= RANK_ACCURACY_GOAL["overall"], f"{accuracy['overall']:.4f}")
    result[f"ranking accuracy of every type >= {RANK_ACCURACY_GOAL['every_type']}"] = (
        lowest is not None and per_type[lowest] >= RANK_ACCURACY_GOAL["every_type"],
        f"lowest {lowest} {per_type[lowest]:.4f}" if lowest is not None else "no type")
    return result


def claim_checks(rows: list[dict[str, Any]], accuracy: dict[str, float]) -> dict[str, bool]:
    """The paper's claim in miniature, checked on one seed's numbers (nothing is written in advance)."""
    return {name: holds for name, (holds, _) in claim_values(rows, accuracy).items()}


def _f(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else str(value)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table_markdown(runs: list[dict[str, Any]], prefix: str = "") -> str:
    """Per model: SROCC and PLCC as mean +- std over the seeds, and each seed's values (``prefix``
    ``within_reference_``: the within-reference means instead of the pooled figures)."""
    seeds = sorted({r["seed"] for r in runs})
    lines = ["| model | SROCC (mean ± std) | PLCC (mean ± std) | " +
             " | ".join(f"seed {s} SROCC / PLCC" for s in seeds) + " |",
             "|---|---|---|" + "---|" * len(seeds)]
    srocc_key, plcc_key = f"{prefix}srocc", f"{prefix}plcc"
    for label in MODEL_LABELS:
        mine = {r["seed"]: r for r in runs if r["model"] == label}
        srocc = mean_std([mine[s][srocc_key] for s in seeds])
        plcc = mean_std([mine[s][plcc_key] for s in seeds])
        cells = " | ".join(f"{mine[s][srocc_key]:.3f} / {mine[s][plcc_key]:.3f}" for s in seeds)
        lines.append(f"| {label} | {srocc[0]:.3f} ± {srocc[1]:.3f} | {plcc[0]:.3f} ± {plcc[1]:.3f} | "
                     f"{cells} |")
    return "\n".join(lines) + "\n"


def accuracy_markdown(accuracy: dict[str, dict[str, float]]) -> str:
    """Pairwise ranking accuracy per type (rows) and seed (columns), with the mean."""
    seeds = list(accuracy)
    types = [t for t in accuracy[seeds[0]] if t != "overall"] + ["overall"]
    lines = ["| type | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for dtype in types:
        values = [accuracy[s][dtype] for s in seeds]
        name = f"**{dtype}**" if dtype == "overall" else dtype
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) +
                     f" | {statistics.fmean(values):.3f} |")
    return "\n".join(lines) + "\n"


def verdict(runs: list[dict[str, Any]], checks: dict[int, dict[str, bool]],
            values: dict[int, dict[str, tuple[bool, str]]] | None = None) -> str:
    """Which checks hold for every seed, computed from the numbers; with ``values`` (``claim_values`` per
    seed) a failed check also shows each failing seed's compared values."""
    names = list(next(iter(checks.values())))
    lines = []
    for name in names:
        failed = [seed for seed, result in checks.items() if not result[name]]
        text = "holds for every seed"
        if failed:
            text = f"does NOT hold for seed(s) {', '.join(map(str, failed))}"
            if values:
                text += " (" + "; ".join(f"seed {seed}: {values[seed][name][1]}" for seed in failed) + ")"
        lines.append(f"- {name}: {text}")
    return "\n".join(lines)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_seeds(runs: list[dict[str, Any]], path: Path) -> None:
    """Each seed's SROCC (and PLCC) per model: one marker per seed, a bar for the mean."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    seeds = sorted({r["seed"] for r in runs})
    for ax, metric in zip(axes, ("srocc", "plcc"), strict=True):
        for index, label in enumerate(MODEL_LABELS):
            values = [r[metric] for r in runs if r["model"] == label]
            ax.bar(index, statistics.fmean(values), 0.6, color="tab:blue" if index == 1 else "lightgray")
            for seed, value in zip(seeds, values, strict=True):
                ax.plot(index + 0.15 * (seeds.index(seed) - (len(seeds) - 1) / 2), value, "o",
                        color=f"C{seed % 10}", label=f"seed {seed}" if index == 0 else None)
        ax.set_xticks(range(len(MODEL_LABELS)), MODEL_LABELS)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_ylim(min(0.0, *(r[metric] for r in runs)) - 0.05, 1.02)
        ax.set_ylabel(metric.upper())
        ax.legend(fontsize=7)
    fig.suptitle(f"held-out references, per seed: {STANDIN_LABEL}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_accuracy(accuracy: dict[str, dict[str, float]], path: Path) -> None:
    """Pairwise ranking accuracy per type, one bar per seed."""
    plt = _pyplot()
    seeds = list(accuracy)
    types = [t for t in accuracy[seeds[0]] if t != "overall"] + ["overall"]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.5 * len(types) + 2), 4))
    width = 0.8 / len(seeds)
    for k, seed in enumerate(seeds):
        ax.bar([i + (k - (len(seeds) - 1) / 2) * width for i in range(len(types))],
               [accuracy[seed][t] for t in types], width, label=f"seed {seed}")
    ax.axhline(RANK_ACCURACY_GOAL["every_type"], color="black", linewidth=0.8, linestyle=":")
    ax.axhline(RANK_ACCURACY_GOAL["overall"], color="tab:green", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(types)), types, rotation=60, fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("pairwise ranking accuracy")
    ax.set_title("ranking model on references it never saw (every level pair per reference and type)",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_curves(paths: Paths, path: Path) -> None:
    """Ranking loss, fine-tuning loss and (when tested) test SROCC during fine-tuning, from the run logs."""
    plt = _pyplot()
    from rankiqa.logparse import parse_log

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    rank = parse_log(paths.run("rank") / "log.txt")
    its, values = rank.series("train_loss")
    if its:
        axes[0].plot(its, values, "-", label="train loss")
    axes[0].set_title("ranking (all-pairs hinge loss)")
    for (_, name, label), colour in zip(FT_RUNS, ("tab:green", "tab:red"), strict=True):
        table = parse_log(paths.run(name) / "log.txt")
        its, values = table.series("train_loss")
        axes[1].plot(its, values, color=colour, label=f"{label} train")
        its, values = table.series("test_loss")
        if its:
            axes[1].plot(its, values, "o--", color=colour, label=f"{label} test")
        its, values = table.series("test_srocc")
        if its:
            axes[2].plot(its, values, "o-", color=colour, label=label)
    axes[1].set_title("fine-tuning (Euclidean loss / label variance)")
    axes[1].set_yscale("log")
    axes[2].set_title("test SROCC during fine-tuning (1 crop/image)")
    if not axes[2].lines:
        axes[2].text(0.5, 0.5, "no test passes during training\n(see the table for the evaluation)",
                     ha="center", va="center", transform=axes[2].transAxes)
    for ax in axes:
        ax.set_xlabel("iteration")
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(f"RankIQA demo, Shallow net on CPU; fine-tuning labels: {STANDIN_LABEL}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


@dataclasses.dataclass
class SeedResult:
    """What one seed produced."""

    seed: int
    rows: list[dict[str, Any]]
    accuracy: dict[str, float]
    references: dict[str, Any]
    stages: dict[str, dict[str, Any]]
    ft_base_lr: dict[str, float | None] = dataclasses.field(default_factory=dict)  # model -> its rate
    #: ``comparison_intervals``: comparison name -> difference and bootstrap interval
    intervals: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)


def write_summary(profile: Profile, photos: Photos, out: Path, results: list[SeedResult],
                  total_seconds: float) -> str:
    """Write summary.md, summary.json and the plots over all seeds; returns the printed text."""
    runs = [{k: row[k] for k in ("seed", "model", "srocc", "plcc", "krocc", "within_reference_srocc",
                                 "within_reference_plcc", "n_images")} for r in results for row in r.rows]
    accuracy = {str(r.seed): r.accuracy for r in results}
    values = {r.seed: claim_values(r.rows, r.accuracy) for r in results}
    checks = {seed: {name: holds for name, (holds, _) in v.items()} for seed, v in values.items()}
    plot_seeds(runs, out / "srocc_per_seed.png")
    plot_accuracy(accuracy, out / "rank_accuracy.png")
    table = table_markdown(runs)
    within_table = table_markdown(runs, "within_reference_")
    acc_table = accuracy_markdown(accuracy)
    claim = verdict(runs, checks, values)
    intervals = {r.seed: r.intervals for r in results if r.intervals}
    interval_table = intervals_markdown(intervals) if intervals else ""
    seeds = [r.seed for r in results]
    excluded = "; ".join(f"{t}: {why}" for t, why in EXCLUDED_TYPES.items())
    not_ranked = "; ".join(f"{t}: {why}" for t, why in NOT_RANKED.items() if t in profile.ft_types)
    stage_seconds = {str(r.seed): r.stages for r in results}
    worked = sum(s["seconds"] or 0.0 for r in results for s in r.stages.values() if not s.get("reused"))
    measured = sum(s["seconds"] or 0.0 for r in results for s in r.stages.values())
    settings = {
        "profile": profile.name, "seeds": seeds, "net": NET, "device": "CPU", "rankset": RANKSET,
        "photos": photos.origin, "photos_tag": photos.tag, "short_side": SHORT_SIDE,
        "types": list(profile.types), "ft_types": list(profile.ft_types), "excluded_types": EXCLUDED_TYPES,
        "not_ranked_types": {t: w for t, w in NOT_RANKED.items() if t in profile.ft_types},
        "rank_references": list(profile.rank_refs), "ft_references": list(profile.ft_refs),
        "ft_test_references_per_seed": profile.ft_test_refs,
        "reference_assignment": "photographs in sorted name order, alternately to ranking and fine-tuning; "
                                "the fine-tuning references' train/test split is drawn per seed",
        "rank_iters": profile.rank_iters, "rank_lr": profile.rank_lr,
        "rank_batch": f"{profile.rank_types_per_batch} types x 5 levels",
        "ft_iters": profile.ft_iters, "ft_lr": profile.ft_lr, "ft_batch": profile.ft_batch,
        "head_init": profile.head_init, "loss_scale": profile.loss_scale,
        "ft_base_lr_used": {str(r.seed): r.ft_base_lr for r in results},
        "eval_crops": profile.eval_crops,
    }
    n_images = sorted({r["n_images"] for r in runs})
    lines = [
        f"# RankIQA demo: {STANDIN_LABEL}", "",
        "**The fine-tuning and test scores are a SYNTHETIC STAND-IN: MS-SSIM of each distorted image "
        "against its pristine reference, not human opinion scores (MOS).** The paper's claim in miniature: "
        "does ranking pre-training on generated distortions help a regression fine-tuned on few labelled "
        "images? Compared on references used by neither the ranking nor the fine-tuning training.", "",
        f"Photographs: {photos.origin}. Seeds: {', '.join(map(str, seeds))}. Test images per seed: "
        f"{', '.join(map(str, n_images))} ({profile.ft_test_refs} held-out references).", "",
        table, "## The claim, seed by seed", "", claim, "",
        *([interval_table] if interval_table else []),
        "- RankIQA is the ranking model alone (output `fc8_m`): a *relative* quality score on no particular "
        "scale, so its SROCC is what matters most; its PLCC compares raw, uncalibrated outputs.", "",
        "![SROCC/PLCC per seed](srocc_per_seed.png)", "",
        "## Inside each held-out photograph", "",
        "The figures above pool the held-out references, so they mix the order of the distorted images "
        "*inside* one photograph with the offsets a model puts *between* photographs (a no-reference model "
        "scores some contents higher than others at equal distortion). Here SROCC and PLCC are computed "
        "inside each held-out reference and averaged over the references (`within_reference` of each "
        "`metrics.json`); the claim above is checked on the pooled figures only.", "",
        within_table,
        "## The ranking model on references it never saw", "",
        "Pairwise ranking accuracy: share of correctly ordered level pairs (pristine = level 0 ... level 4) "
        "inside each reference and distortion type, on every fine-tuning reference (the ranking stage saw "
        "none of them); a tie counts as wrong.", "",
        acc_table, "![ranking accuracy](rank_accuracy.png)", "",
        "## Settings", "",
        f"- profile `{profile.name}`, net `{NET}` (supplementary Table 5), CPU; photographs resized to a "
        f"shorter side of at most {SHORT_SIDE} px (area resampling) before the ranking and fine-tuning data "
        "are made",
        f"- ranking: rank set `{RANKSET}`, references {', '.join(profile.rank_refs)} (all trained on); "
        f"{settings['rank_batch']} per batch; {profile.rank_iters} iterations, base_lr {profile.rank_lr:g}",
        f"- fine-tuning (stand-in): references {', '.join(profile.ft_refs)}, per seed "
        f"{profile.ft_test_refs} held out (seed {seeds[0]}: "
        f"{', '.join(results[0].references['ft']['test'])}); batch {profile.ft_batch}; "
        f"{profile.ft_iters} iterations, base_lr {profile.ft_lr:g}; head start `{profile.head_init}`, loss "
        f"scale `{profile.loss_scale}` (`rankiqa.head_init`); the same for both initialisations, then the "
        "rate lowered per run where the head needs it to stay stable (`rankiqa.head_init.HEAD_STEP`; the "
        "transferred features are large, random ones are not): "
        + "; ".join(f"seed {r.seed} " + ", ".join(f"{m} {'not recorded' if lr is None else f'{lr:.3g}'}"
                                                  for m, lr in r.ft_base_lr.items())
                    for r in results if r.ft_base_lr),
        f"- distortion types of the ranking ({len(profile.types)}): {', '.join(profile.types)}; of the "
        f"stand-in set ({len(profile.ft_types)}): {', '.join(profile.ft_types)}",
        f"- left out: {excluded}" + (f"; left out of the ranking only: {not_ranked}" if not_ranked else ""),
        f"- evaluation: {profile.eval_crops} random 227x227 crops per image, image score = mean of crops, "
        "SROCC/PLCC/KROCC on raw outputs, pooled over the held-out references and inside each "
        "(`tools.evaluate`; per seed and model in `seed<S>/eval/<model>/`)",
        f"- OpenBLAS threads: {blas_threads_note([s for r in results for s in r.stages.values()])}",
        "", "## Seconds per stage", "", "| seed | stage | seconds | note |", "|---|---|---|---|"]
    for r in results:
        for stage, info in r.stages.items():
            note = "reused from an earlier run of the demo" if info.get("reused") else ""
            seconds = info["seconds"]
            lines.append(f"| {r.seed} | {stage} | {'-' if seconds is None else f'{seconds:.1f}'} | {note} |")
    lines += ["", f"Total of the stages: {measured:.0f} s ({worked:.0f} s of work in this invocation, "
              f"{total_seconds:.0f} s wall time of this invocation before the summary was written)."]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    summary = {"label": STANDIN_LABEL,
               "note": "scores are MS-SSIM against the pristine reference (synthetic stand-in), "
                       "not human MOS",
               "scoring": "mean of crops", "runs": runs, "rank_accuracy": accuracy,
               "claim": {str(seed): result for seed, result in checks.items()},
               "claim_intervals": {str(seed): result for seed, result in intervals.items()},
               "details": [row for r in results for row in r.rows],
               "references": {str(r.seed): r.references for r in results}, "settings": settings,
               "stages": stage_seconds, "total_stage_seconds": round(measured, 1),
               "wall_seconds_this_invocation": round(total_seconds, 1)}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return (f"{table}\n{claim}\n\n{interval_table}\n"
            "Inside each held-out photograph (mean over the references):\n\n"
            f"{within_table}\nPairwise ranking accuracy on references the ranking never saw:\n\n{acc_table}")


# ---------------------------------------------------------------------------------------------------------
# Driver


#: The nets the demo trains and scores with (``net_digest``).
DEMO_NETS = ("rank_train", "rank_deploy", "ft_train", "ft_deploy")


def net_digest() -> str:
    """The first 8 hex digits of the SHA-256 of the demo's nets (train and deploy prototxts as parsed, so
    comments do not count): a demo folder made with other nets is not resumed but left alone."""
    from rankiqa import caffe_io, provenance, runprep

    nets = [PROTOTXT_DIR / NET / f"{name}.prototxt" for name in DEMO_NETS]
    digests = [runprep.definition_digest(caffe_io.read_net_prototxt(path)) for path in nets]
    return provenance.sha256_json(digests)[:8]


def seed_folder(profile: Profile, photos: Photos, seed: int) -> str:
    """The name of one seed's stage and run folders: profile, photographs, nets, seed."""
    return f"{profile.name}-{photos.tag}-net{net_digest()}-seed{seed}"


def run_seed(profile: Profile, photos: Photos, out: Path, data_root: Path, runs_root: Path, seed: int,
             jobs: int) -> SeedResult:
    """Run (or resume) every stage of one seed; returns its rows, rank accuracy and stage times."""
    folder = seed_folder(profile, photos, seed)
    paths = Paths(data=(data_root / folder).resolve(), runs=(runs_root / folder).resolve(),
                  out=(out / f"seed{seed}").resolve())
    settings = {"profile": dataclasses.asdict(profile), "seed": seed, "photos": photos.tag,
                "short_side": SHORT_SIDE}
    check_settings(paths.data, settings)
    check_settings(paths.runs, settings)
    paths.out.mkdir(parents=True, exist_ok=True)
    stages = StageTimes(paths.out / STAGES_FILE)

    def timed(stage: str, complete: bool, work: Any) -> Any:
        tick = time.perf_counter()
        result = None if complete else work()
        stages.record(stage, time.perf_counter() - tick, reused=complete)
        return result

    print(f"[demo] seed {seed}: ranking references {', '.join(profile.rank_refs)}; fine-tuning references "
          f"{', '.join(profile.ft_refs)} ({profile.ft_test_refs} held out); {len(profile.types)} types",
          file=sys.stderr, flush=True)
    timed("pristine", _pristine_done(profile, paths), lambda: stage_pristine(profile, photos, paths))
    timed("ranks", ranks_complete(paths), lambda: stage_ranks(profile, paths, seed, jobs))
    timed("synthetic", synthetic_complete(paths), lambda: stage_synthetic(profile, paths, seed))
    rank_model = final_model(paths.run("rank"), profile.rank_iters)
    rank_model = timed("train_rank", rank_model is not None,
                       lambda: stage_train_rank(profile, paths, seed)) or rank_model
    models: dict[str, Path] = {"rankiqa": rank_model}
    for (key, run_name, _), init in zip(FT_RUNS, (rank_model, None), strict=True):
        done = final_model(paths.run(run_name), profile.ft_iters)
        models[key] = timed(run_name, done is not None,
                            lambda r=run_name, i=init: stage_finetune(r, profile, paths, seed, i)) or done
    for key, _, _, deploy in MODELS:
        complete = _report_of(paths.evaluation(key) / "metrics.json", models[key], profile.eval_crops,
                              needs=("within_reference",))
        timed(f"eval_{key}", complete,
              lambda k=key, d=deploy: stage_evaluate(k, d, models[k], profile, paths, seed))
    complete = _report_of(paths.rank_accuracy / "rank_accuracy.json", rank_model, profile.eval_crops)
    timed("rank_accuracy", complete, lambda: stage_rank_accuracy(rank_model, profile, paths, seed))
    plot_curves(paths, paths.out / "loss_curves.png")
    refs = {"rank": rank_references(paths), "ft": ft_references(paths)}
    return SeedResult(seed, read_rows(paths, seed), read_rank_accuracy(paths), refs, dict(stages.stages),
                      ft_base_lr(paths), comparison_intervals(paths, seed))


def run_demo(profile: Profile, photos: Photos, out: Path, data_root: Path, runs_root: Path,
             seeds: Sequence[int] = (0,), jobs: int | None = None) -> dict[str, Any]:
    """Run (or resume) every seed, write the summary; returns the content of summary.json."""
    started = time.perf_counter()
    jobs = (os.cpu_count() or 1) if not jobs or jobs <= 0 else jobs
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = [run_seed(profile, photos, out, data_root, runs_root, seed, jobs) for seed in seeds]
    text = write_summary(profile, photos, out, results, time.perf_counter() - started)
    print(f"\nRankIQA demo ({profile.name}), Shallow net on CPU, {photos.origin}; {STANDIN_LABEL}\n")
    print(text)
    print(f"summary: {out / 'summary.md'} (+ summary.json, srocc_per_seed.png, rank_accuracy.png, seed<S>/)")
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def _pristine_done(profile: Profile, paths: Paths) -> bool:
    """Both pristine folders hold exactly the profile's references (by name stem)."""
    def stems(folder: Path) -> set[str]:
        return {p.stem for p in folder.iterdir() if not p.name.startswith(".")} if folder.is_dir() else set()

    return stems(paths.pristine_rank) == set(profile.rank_refs) and stems(paths.pristine_ft) == set(
        profile.ft_refs)


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; ``InputError`` for anything but distinct non-negative integers."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds {text!r}: expected distinct non-negative integers, e.g. 0,1,2")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pristine", default="default",
                        help=f"photographs: 'default' (scikit-image's) or a folder of at least {MIN_PHOTOS}")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one demo each (default 0)")
    parser.add_argument("--seed", dest="seeds", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None,
                        help="summary folder (default results/demo, or results/demo-<folder> for --pristine)")
    parser.add_argument("--jobs", type=int, default=0, help="processes for the ranking data (0: all cores)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny configuration (a minute or two), for the tests")
    parser.add_argument("--data-dir", type=Path, default=Path("data/demo"),
                        help="root of the demo's data (default data/demo)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/demo"),
                        help="root of the demo's training runs (default runs/demo)")
    return parser


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    args = build_parser().parse_args(argv)
    seeds = parse_seeds(str(args.seeds))
    photos = resolve_photos(args.pristine)
    profile = (quick_profile if args.quick else full_profile)(list(photos.sources))
    out = args.out or (Path("results/demo") if photos.tag == "default" else
                       Path(f"results/demo-{photos.tag.rsplit('-', 1)[0]}"))
    try:
        run_demo(profile, photos, out, args.data_dir, args.runs_dir, seeds=seeds, jobs=args.jobs)
    except StageFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
