"""``make ranks``: distort pristine images at increasing levels and write the ranking dataset.

    python -m data_prep.make_ranks --rankset tid2013|live|mlive --pristine DIR|default
        --out data/ranks/<rankset> --seed 0 --jobs N --test-fraction 0.2 [--lmdb] [--types GN,GB,...|all]
        [--split-rule sorted|seeded] [--limit-refs N] [--min-size 227]

Output (docs/DESIGN.md, "Ranking data"): ``pristine/<name>.png``, ``<TYPE>/<TYPE><level>/<name>.png``,
``manifest.csv``, ``train.txt``, ``test.txt`` and, with ``--lmdb``, ``images.lmdb/``. The rows of the manifest
and the lists are the rank set's groups (``data_prep.rank_groups``): for ``mlive``, chains through its 3x3
cells (``<TYPE>/GB<b>_<JPEG|GN><s>/<name>.png``).

- Deterministic: every image's random draws come from a seed derived from (seed, reference, type, level),
  so the bytes do not depend on the number of jobs or the order the work is done in.
- Resumable: every image is written to a temporary name and renamed; a file that exists is finished and
  is never redone. The manifest, the lists and the LMDB are written last (atomically), so their presence
  means the run completed. A hidden ``.make_ranks.json`` pins the settings that decide the bytes (rankset,
  seed, minimum size, generator version, and the versions of the libraries the distortions call:
  :func:`libraries`) and records every pristine image (size, modification time, SHA-256): resuming with
  other values, or with pristine images whose content changed (another folder with the same file names),
  is refused instead of mixing two datasets; an LMDB made for another manifest is written again.
- Parallel over ``--jobs`` processes (default: all cores), with a progress bar on stderr.
- As the original by default: the types it lists (``distortions.LISTED_TYPES``: 18 for ``tid2013``,
  without HFN) and its train/test rule (the first 80% of the sorted pristine names train).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from data_prep import distortions, pristine, rank_groups
from rankiqa import manifest as rank_manifest
from rankiqa import provenance
from rankiqa.errors import InputError, cli_main
from rankiqa.fsutil import (
    STORAGE_ERRNOS,
    StorageError,
    atomic_write_bytes,
    atomic_write_text,
    free_bytes,
    require_free_space,
    storage_errors,
)
from rankiqa.lists import write_list

SETTINGS_FILE = ".make_ranks.json"
LOCK_FILE = ".make_ranks.lock"
FORMAT_VERSION = 1
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 3]  # fixed, so the bytes do not follow OpenCV's default
#: Train/test rules of the pristine references: ``sorted`` is the original's (its shuffle is commented out),
#: ``seeded`` a seeded random permutation.
SPLIT_RULES = ("sorted", "seeded")
#: The packages whose versions decide the bytes of the distorted images (``data_prep.distortions``' imports).
BYTE_PACKAGES = ("numpy", "opencv-python-headless", "pillow", "scipy", "bm3d")
#: Other distributions of the same module, tried in this order when the first is not installed (the
#: OpenCV wheels all install ``cv2``; requirements.txt pins the headless one).
_SAME_MODULE = {"opencv-python-headless": ("opencv-python", "opencv-contrib-python-headless",
                                           "opencv-contrib-python")}
#: The settings record's key of :func:`libraries` (absent from the records of earlier versions).
LIBRARIES_KEY = "libraries"
_LMDB_BATCH_BYTES = 256 << 20
#: Runs the distortion tasks ``(out, rankset, seed, reference, type, level)`` (each one ``_distort_one``)
#: with ``(tasks, jobs, progress, rankset)`` and returns how many images it wrote.
TaskRunner = Callable[[list[tuple], int, bool, str], int]


@dataclass
class GenerateResult:
    """What ``generate`` produced (paths relative to ``out`` in the manifest and lists)."""

    out: Path
    rankset: str
    types: list[str]
    train: list[str]
    test: list[str]
    n_rows: int                 # rows of manifest.csv
    n_written: int              # image files written by this call (0 when everything was there)
    skipped: list[str] = field(default_factory=list)  # one warning per skipped pristine image

    @property
    def references(self) -> list[str]:
        return sorted(self.train + self.test)


def libraries() -> dict[str, str]:
    """What decides a distorted image's bytes besides its inputs: the generator's version
    (``distortions.GENERATOR_VERSION``) and the versions of the packages ``data_prep.distortions`` calls
    (``BYTE_PACKAGES``, each under its own name, whichever of its distributions is installed: OpenCV as
    ``opencv-python-headless`` also when another OpenCV wheel provides ``cv2``; ``missing`` for one not
    installed)."""
    found = {"generator": str(distortions.GENERATOR_VERSION)}
    for package in BYTE_PACKAGES:
        found[package] = "missing"
        for distribution in (package, *_SAME_MODULE.get(package, ())):
            try:
                found[package] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    return found


def image_seed(seed: int, reference: str, dtype: str, level: int) -> int:
    """The seed of one distorted image: a hash of (seed, reference, type, level), job-count independent."""
    digest = hashlib.sha256(f"rankiqa\0{seed}\0{reference}\0{dtype}\0{level}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def split_references(names: Sequence[str], test_fraction: float, seed: int,
                     rule: str = "sorted") -> dict[str, str]:
    """Split by reference: ``{name: "train" | "test"}``, about ``test_fraction`` of them in test.

    As the original, the training part is ``int(N * (1 - test_fraction))`` references, but at least one,
    and at most N-1 when there are two or more (so neither side is empty unless ``test_fraction`` is 0 or
    there is a single reference, which goes to train). ``rule`` (``SPLIT_RULES``) picks them: ``sorted``
    (default, the original's ``generate_rank_txt_*.py``) takes the first names in sorted order, ``seeded``
    a permutation drawn from ``seed``. An unknown rule raises ``InputError``.
    """
    _check_split_rule(rule)
    names = sorted(names)
    n_train = max(int(len(names) * (1.0 - test_fraction) + 1e-9), 1)
    if len(names) >= 2 and test_fraction > 0:
        n_train = min(n_train, len(names) - 1)
    if rule == "seeded":
        order = np.random.default_rng(image_seed(seed, "", "split", 0)).permutation(len(names))
    else:
        order = np.arange(len(names))
    train = {names[i] for i in order[:n_train]}
    return {name: ("train" if name in train else "test") for name in names}


def _check_split_rule(rule: str) -> None:
    if rule not in SPLIT_RULES:
        raise InputError(f"unknown split rule {rule!r} (known: {', '.join(SPLIT_RULES)})")


def relative_path(reference: str, dtype: str, level: int) -> str:
    """Path of an image inside the output folder (level 0 = the pristine image)."""
    if level == 0:
        return f"pristine/{reference}.png"
    return f"{dtype}/{distortions.level_name(dtype, level)}/{reference}.png"


def parse_types(rankset: str, types: str | Sequence[str] | None) -> list[str]:
    """The types to generate and list, in the rankset's order; unknown names raise ``InputError``.

    None or empty: the types the original lists (``distortions.LISTED_TYPES``); ``"all"``: every type of
    the rank set; else a comma-separated string or a sequence of names.
    """
    distortions.levels(rankset)  # raises InputError for an unknown rankset
    known = list(distortions.RANKSETS[rankset])
    if types is None or types == "" or types == []:
        return list(distortions.LISTED_TYPES[rankset])
    if types == "all":
        return known
    wanted = [t.strip() for t in types.split(",")] if isinstance(types, str) else [str(t) for t in types]
    wanted = [t for t in wanted if t]
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise InputError(f"unknown distortion type(s) {', '.join(unknown)} for rankset {rankset} "
                         f"(known: {', '.join(known)})")
    return [t for t in known if t in wanted]


def generate(rankset: str, pristine_dir: str | os.PathLike = "default", out: str | os.PathLike | None = None,
             seed: int = 0, jobs: int | None = None, test_fraction: float = 0.2, lmdb: bool = False,
             types: str | Sequence[str] | None = None, limit_refs: int | None = None, min_size: int = 227,
             progress: bool = True, warn: Callable[[str], None] | None = None,
             split_rule: str = "sorted", run_tasks: TaskRunner | None = None) -> GenerateResult:
    """Generate (or finish) the ranking dataset of ``rankset`` in ``out``; see the module docstring.

    ``pristine_dir`` is a folder or ``"default"`` (scikit-image's photographs); ``jobs`` None or <= 0 uses
    every core; ``types`` chooses the distortion types (:func:`parse_types`; default the original's listed
    ones); ``split_rule`` the train/test rule (:func:`split_references`); ``limit_refs`` keeps the first N
    usable pristine images (sorted by file name); images smaller than ``min_size`` on a side are skipped.
    Bad single images are skipped with a warning (``warn``, default: stderr); bad settings raise
    ``InputError``. ``run_tasks`` runs the distortion tasks (default: a pool of ``jobs`` local processes;
    ``data_prep.dask_ranks`` runs them on a Dask cluster); the pristine images are prepared here either way.
    """
    type_names = parse_types(rankset, types)
    _check_split_rule(split_rule)  # before anything is written
    n_levels = distortions.levels(rankset)
    if not 0.0 <= test_fraction < 1.0:
        raise InputError(f"test fraction {test_fraction} must be in [0, 1)")
    if limit_refs is not None and limit_refs < 1:
        raise InputError(f"--limit-refs {limit_refs} must be at least 1")
    if min_size < distortions.MIN_SIDE:
        # NEPN and BW place 15x15 / 32x32 patches at random: the image must hold them.
        raise InputError(f"--min-size {min_size} must be at least {distortions.MIN_SIDE}")
    out = Path(out) if out is not None else Path("data") / "ranks" / rankset
    jobs = (os.cpu_count() or 1) if jobs is None or jobs <= 0 else jobs
    # tqdm.write: a warning printed while a progress bar runs gets a line of its own
    warn = warn or (lambda message: tqdm.write(f"warning: {message}", file=sys.stderr))
    sources = pristine.resolve_sources(pristine_dir)

    fresh = not out.exists()
    with storage_errors(out):  # a folder the user may not write in is named like a full one
        out.mkdir(parents=True, exist_ok=True)
    with _removed_if_refused(out, fresh), _exclusive_lock(out), _temporaries_removed_on_error(out, rankset):
        record, mismatch = _check_record(
            out, {"format": FORMAT_VERSION, "rankset": rankset, "seed": int(seed), "min_size": int(min_size),
                  "generator": distortions.GENERATOR_VERSION}, libraries(), pristine_dir, sources, warn)
        _remove_stale_temporaries(out, rankset)

        references, skipped = _prepare_pristine(sources, out, min_size, limit_refs, jobs, warn, progress)
        if not references:
            raise InputError(f"no usable pristine image ({len(skipped)} skipped, see the warnings)",
                             pristine_dir if str(pristine_dir) != "default" else pristine.skimage_data_dir())
        split = split_references(references, test_fraction, seed, split_rule)

        tasks = [(str(out), rankset, int(seed), name, dtype, level)
                 for name in references for dtype in type_names for level in range(1, n_levels + 1)
                 if not (out / relative_path(name, dtype, level)).is_file()]
        if mismatch is not None:
            # Images made now would not be those of the folder's own versions: none may be added; a folder
            # with nothing to add stays usable as it is (training, LMDB, the lists read what is there).
            if tasks:
                raise InputError(f"{mismatch}, so the {len(tasks)} images to add now would differ from its "
                                 f"own: {_MISMATCH_ADVICE}", out)
            warn(f"{out}: {mismatch}: nothing to add, kept as it is")
        # Said once the run is sure to go on (not before a refusal above). The types are the set's content,
        # like its pristine images: another list (a RANKS_DIR named for other types, say) changes what the
        # manifest lists, and is said; images of a type left out stay.
        known_types = record.get("types")
        if known_types is not None and known_types != type_names:
            added = [t for t in type_names if t not in known_types]
            dropped = [t for t in known_types if t not in type_names]
            warn(f"{out}: the set's distortion types change from {','.join(known_types)} to "
                 f"{','.join(type_names)}" + (f"; added: {','.join(added)}" if added else "")
                 + (f"; left out of the manifest (their images stay): {','.join(dropped)}"
                    if dropped else ""))
        record["types"] = type_names
        n_written = (run_tasks or _run_tasks)(tasks, jobs, progress, rankset)

        # One row per group member: the groups of a grid type are chains through its cells (rank_groups).
        groups = rank_groups.groups(rankset, type_names)
        rows = [(name, group, rank, relative_path(name, dtype, level), split[name])
                for group, members in groups for name in references for rank, dtype, level in members]
        missing = [row[3] for row in rows if not (out / row[3]).is_file()]
        if missing:  # cannot happen unless files were deleted meanwhile; never list absent images
            raise InputError(f"{len(missing)} images missing after generation, e.g. {missing[0]}", out)
        manifest_text = rank_manifest.manifest_text(rows)
        manifest_sha = hashlib.sha256(manifest_text.encode()).hexdigest()
        lmdb_made_for = record.get("lmdb_manifest")
        manifest_path = out / rank_manifest.MANIFEST_NAME
        if lmdb_made_for is None and manifest_path.is_file():  # a folder of an earlier version
            lmdb_made_for = provenance.sha256_file(manifest_path)
        if lmdb or ((out / rank_manifest.LMDB_NAME).is_dir() and lmdb_made_for != manifest_sha):
            if not lmdb:
                warn(f"{out / 'images.lmdb'}: made for another manifest: written again")
            _write_lmdb(out, list(dict.fromkeys(row[3] for row in rows)))
            record["lmdb_manifest"] = manifest_sha
        for part in ("train", "test"):
            write_list(out / f"{part}.txt",
                       [(relative_path(name, dtype, level), rank)
                        for _, members in groups for rank, dtype, level in members
                        for name in references if split[name] == part])
        atomic_write_text(manifest_path, manifest_text)
        atomic_write_text(out / SETTINGS_FILE, json.dumps(record, sort_keys=True) + "\n")

    train = [name for name in references if split[name] == "train"]
    test = [name for name in references if split[name] == "test"]
    if not test and test_fraction > 0:
        warn(f"{out}: only {len(references)} reference(s): test.txt is empty")
    return GenerateResult(out=out, rankset=rankset, types=type_names, train=train, test=test,
                          n_rows=len(rows), n_written=n_written, skipped=skipped)


# ---------------------------------------------------------------------------------------------------------
# Steps


@contextlib.contextmanager
def _exclusive_lock(out: Path) -> Iterator[None]:
    """One run per output folder: a second one would delete the first one's temporary files."""
    with storage_errors(out / LOCK_FILE):
        handle = open(out / LOCK_FILE, "a+")
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError("another make_ranks run is writing this folder", out) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_record(out: Path, settings: dict, versions: dict[str, str], pristine_dir: str | os.PathLike,
                  sources: list[Path], warn: Callable[[str], None]) -> tuple[dict, str | None]:
    """Refuse to add to ``out`` what would mix two datasets; return the folder's record, updated and written,
    and how its library versions differ from ``versions`` (``library_mismatch``; None when they match).

    ``.make_ranks.json`` pins the settings that decide the bytes (rankset, seed, minimum size, generator
    version) and the library ``versions`` (:func:`libraries`) its images were made with, and records every
    pristine image by reference name (size, modification time, SHA-256): other settings, a pristine image
    whose content differs from the one the folder's images were made from, or new pristine images under
    other (or unknown) library versions are refused (``InputError`` naming them), before anything is
    written; new images are added, images no longer there are left out of the manifest, and both are said
    (``warn``). The records are written before any image is, so that an interrupted run is checked against
    them too. A record of an earlier version, without library versions, keeps none: what made its images
    is unknown.
    """
    path = out / SETTINGS_FILE
    record: dict | None = None
    if path.is_file():
        record = provenance.read_json(path)
        if record is None:
            raise InputError("unreadable settings of an earlier run: delete the folder", path)
        changed = provenance.differences(record, settings, settings)
        if changed:
            raise InputError(f"folder was generated with other settings ({'; '.join(changed)}): use another "
                             "--out (RANKS_DIR with make) or delete the folder", path)
    mismatch = None if record is None else library_mismatch(record.get(LIBRARIES_KEY), versions)
    files = {pristine.reference_name(source): source for source in sources}
    source = str(pristine_dir) if str(pristine_dir) == "default" else str(Path(pristine_dir).resolve())
    known = (record or {}).get("pristine")
    if known is None:
        if record is not None:
            warn(f"{path}: no record of the pristine images this folder was made from (an earlier version): "
                 f"the images of {source} are recorded now, unchecked")
        records = {name: provenance.file_record(file, with_hash=True) for name, file in files.items()}
    else:
        changes = provenance.compare(known, files)
        if changes.modified:
            modified = provenance.Changes(modified=changes.modified).describe()
            raise InputError(f"the pristine images differ from those this folder was made from "
                             f"({(record or {}).get('source')} -> {source}): {modified}; its images were "
                             "made from the old ones: use another --out (RANKS_DIR with make) or delete the "
                             "folder", path)
        if changes.added and mismatch is not None:
            added = provenance.Changes(added=changes.added).describe()
            raise InputError(f"{mismatch}, so new pristine images cannot be added to it ({added}): "
                             f"{_MISMATCH_ADVICE}", out)
        if changes.added:
            warn(f"{out}: new pristine image(s) added to the set: "
                 f"{provenance.Changes(added=changes.added).describe()}")
        if changes.removed:
            warn(f"{out}: pristine image(s) of the set no longer in {source}, left out of the manifest: "
                 f"{provenance.Changes(removed=changes.removed).describe()}")
        added = {name: provenance.file_record(files[name], with_hash=True) for name in changes.added}
        records = {**known, **changes.records, **added}  # removed ones stay: they may come back
    made_with = {LIBRARIES_KEY: versions} if record is None else {}  # a new folder's images are made here
    record = {**(record or {}), **made_with, **settings, "source": source, "pristine": records}
    if mismatch is None:  # a folder of other versions gets nothing new, its record included
        atomic_write_text(path, json.dumps(record, sort_keys=True) + "\n")
    return record, mismatch


#: What to do with a folder whose images were made with other library versions.
_MISMATCH_ADVICE = ("use another --out (RANKS_DIR with make), delete the folder, or run with the versions it "
                    "was made with")


def library_mismatch(recorded: dict | None, versions: dict[str, str]) -> str | None:
    """How the library versions a folder's images were made with (``recorded``; None for a record of an
    earlier version, which did not keep them) differ from ``versions``, or None when they match: images
    made with others could differ in their bytes from the folder's own, and one rank set would hold both."""
    if recorded is None:
        return ("folder was made by an earlier version that did not record the library versions its images "
                "were made with")
    # Only what decides the bytes now: a package recorded but no longer called does not matter; one called
    # now but not recorded may have made the images with any version.
    differ = [f"{name} {recorded.get(name, 'not recorded')} there, {version} here"
              for name, version in versions.items() if recorded.get(name) != version]
    return f"folder was generated with other library versions ({'; '.join(differ)})" if differ else None


def _remove_stale_temporaries(out: Path, rankset: str) -> None:
    """Delete what a killed run left behind: ``.<name>.*.tmp*`` files (atomic_path) and LMDB temp folders."""
    folders = [out, out / "pristine"]
    for dtype in distortions.RANKSETS[rankset]:
        folders += [out / Path(relative_path("", dtype, level)).parent
                    for level in range(1, distortions.levels(rankset) + 1)]
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.name.startswith(".") and ".tmp" in entry.name:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


@contextlib.contextmanager
def _removed_if_refused(out: Path, fresh: bool) -> Iterator[None]:
    """Bad input refused in a folder this run made (e.g. every pristine image skipped): remove the folder, so
    that no record or lock file is left that looks like the start of a rank set. A folder that was there
    before, or one that holds images, is kept (an interrupted run resumes from it)."""
    try:
        yield
    except InputError:
        if fresh and not any(out.rglob("*.png")):
            shutil.rmtree(out, ignore_errors=True)
        raise


@contextlib.contextmanager
def _temporaries_removed_on_error(out: Path, rankset: str) -> Iterator[None]:
    """When a step fails (a worker's full disk, Ctrl-C), the pool is terminated and its other workers die
    inside their atomic writes: remove the temporary files they leave, which take room on a full disk."""
    try:
        yield
    except BaseException:
        _remove_stale_temporaries(out, rankset)
        raise


def _prepare_one(args: tuple[str, str, int]) -> tuple[str, str]:
    """Validate one source image and write ``pristine/<name>.png``: ("ok", name) or ("skip", message)."""
    source, out, min_size = args
    name = pristine.reference_name(source)
    target = Path(out) / relative_path(name, "", 0)
    if target.is_file():  # written (hence validated) by an earlier run
        return "ok", name
    try:
        image = pristine.load_pristine(source, min_size)
    except InputError as err:
        return "skip", f"{err} (skipped)"
    atomic_write_bytes(target, _encode_png(image))
    return "ok", name


def _prepare_pristine(sources: list[Path], out: Path, min_size: int, limit_refs: int | None, jobs: int,
                      warn: Callable[[str], None], progress: bool) -> tuple[list[str], list[str]]:
    references: list[str] = []
    skipped: list[str] = []
    work = [(str(source), str(out), min_size) for source in sources]
    if limit_refs is not None or jobs == 1:
        # In order, stopping at the limit, so no pristine image beyond it is ever written.
        results: Iterator[tuple[str, str]] = map(_prepare_one, work)
        for status, value in results:
            if status == "ok":
                references.append(value)
                if limit_refs is not None and len(references) >= limit_refs:
                    break
            else:
                skipped.append(value)
                warn(value)
    else:
        bar = tqdm(total=len(work), desc="pristine images", unit="img", disable=not progress, file=sys.stderr,
                   dynamic_ncols=True)
        with bar, _pool(jobs) as pool:
            for status, value in pool.imap(_prepare_one, work, chunksize=4):
                bar.update(1)
                if status == "ok":
                    references.append(value)
                else:
                    skipped.append(value)
                    warn(value)
    return sorted(references), skipped


def _run_tasks(tasks: list[tuple], jobs: int, progress: bool, rankset: str) -> int:
    global _cached_reference
    _cached_reference = None  # an earlier in-process call may have cached another image of the same name
    with progress_bar(len(tasks), rankset, progress) as bar:
        if jobs == 1 or len(tasks) <= 1:
            for task in tasks:
                _distort_one(task)
                bar.update(1)
        else:
            with _pool(jobs) as pool:
                for _ in pool.imap_unordered(_distort_one, tasks, chunksize=1):
                    bar.update(1)
    _cached_reference = None
    return len(tasks)


def progress_bar(total: int, rankset: str, progress: bool) -> tqdm:
    """The progress bar of the distortion tasks (stderr, one step per image; none when ``total`` is 0)."""
    return tqdm(total=total, desc=f"make_ranks {rankset}", unit="img", disable=not progress or not total,
                file=sys.stderr, dynamic_ncols=True)


_cached_reference: tuple[str, np.ndarray] | None = None  # per process: tasks come grouped by reference


def _distort_one(task: tuple[str, str, int, str, str, int]) -> None:
    """Write one distorted image (worker side)."""
    global _cached_reference
    out, rankset, seed, name, dtype, level = task
    out_path = Path(out)
    target = out_path / relative_path(name, dtype, level)
    if target.is_file():
        return
    # Read the cache once into a local: worker threads (a Dask worker's) may replace it meanwhile.
    cached = _cached_reference
    if cached is None or cached[0] != f"{out}\0{name}":
        source = out_path / relative_path(name, dtype, 0)
        image = cv2.imread(str(source), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError("cannot read the pristine image (delete it to have it written again)", source)
        cached = _cached_reference = (f"{out}\0{name}", image)
    distorted = distortions.distort(cached[1], rankset, dtype, level, image_seed(seed, name, dtype, level))
    atomic_write_bytes(target, _encode_png(distorted))


def _encode_png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image, PNG_PARAMS)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def _worker_init() -> None:
    cv2.setNumThreads(1)  # the processes are the parallelism; OpenCV threads would oversubscribe the cores


def _pool(jobs: int):
    # forkserver, not fork: a child forked from a parent whose OpenCV thread pool is running (the demo,
    # the tests, any caller that used cv2 before) deadlocks in cv2.setNumThreads. The fork server is a
    # fresh process; the workers it forks import cv2 and the distortions once, then keep them. Not this
    # module itself: under `python -m data_prep.make_ranks` every worker runs it again as its main module,
    # and runpy warns (RuntimeWarning, once per worker) when it is already imported.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["data_prep.distortions"])
    return context.Pool(jobs, initializer=_worker_init)


#: LMDB's page size on Linux (the OS page size) and its page header (``PAGEHDRSZ``): a value larger than
#: ``_LMDB_NODEMAX`` goes to overflow pages of its own, ``ceil((16 + len) / 4096)`` of them.
_LMDB_PAGE = 4096
_LMDB_PAGE_HEADER = 16
_LMDB_NODEMAX = 2032


def lmdb_bytes(keys: Sequence[bytes], value_sizes: Sequence[int]) -> int:
    """An upper bound of the size of an LMDB holding these keys and values of these sizes (bytes).

    Large values: their overflow pages; small ones, with every key: their leaf nodes (8-byte node header,
    key, value or 8-byte overflow page number) counted twice, as a B-tree leaf is at least half full; the
    branch pages, the two meta pages and the pages copied by each commit (one per ``_LMDB_BATCH_BYTES``)
    are covered by a fixed 1 MiB. Checked against real files in tests/test_make_ranks.py.
    """
    total = 0
    for key, size in zip(keys, value_sizes, strict=True):
        if size > _LMDB_NODEMAX:
            total += -(-(size + _LMDB_PAGE_HEADER) // _LMDB_PAGE) * _LMDB_PAGE
            total += 2 * (8 + len(key) + 8)
        else:
            total += 2 * (8 + len(key) + size)
    return total + (1 << 20)


def _write_lmdb(out: Path, paths: list[str]) -> None:
    """``images.lmdb/``: key = relative path (UTF-8), value = the PNG bytes; built aside, then renamed.

    The space it needs is known beforehand (:func:`lmdb_bytes`): a file system without it is refused before
    anything is written. LMDB reports a write that runs out of space as an I/O error; when space is what
    ran out, that becomes a ``StorageError`` too. A failed build leaves no temporary folder behind.
    """
    import lmdb

    final = out / rank_manifest.LMDB_NAME
    temporary = out / f".images.lmdb.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    keys = [rel.encode("utf-8") for rel in paths]
    sizes = [(out / p).stat().st_size for p in paths]
    needed = lmdb_bytes(keys, sizes)
    require_free_space(out, needed, f"the LMDB {final}")
    total = sum(sizes)
    try:
        with storage_errors(temporary, needed, STORAGE_ERRNOS):
            env = lmdb.open(str(temporary), map_size=max(2 * total + (64 << 20), 1 << 26), subdir=True,
                            readahead=False, meminit=False)
        try:
            # Commit in batches: one transaction per dataset would exceed LMDB's dirty-page limit
            # (MDB_TXN_FULL) on a full Waterloo-sized set.
            batch_bytes, txn = 0, env.begin(write=True)
            try:
                for rel, key in zip(paths, keys, strict=True):
                    value = (out / rel).read_bytes()
                    txn.put(key, value)
                    batch_bytes += len(value)
                    if batch_bytes >= _LMDB_BATCH_BYTES:
                        txn.commit()
                        batch_bytes, txn = 0, env.begin(write=True)
                txn.commit()
            except BaseException:
                txn.abort()
                raise
            env.sync()
        finally:
            env.close()
    except lmdb.Error as err:
        shutil.rmtree(temporary, ignore_errors=True)
        free = free_bytes(out)
        if free is not None and free < needed:
            raise StorageError(f"cannot write the LMDB ({err})", final, needed=needed, free=free) from None
        raise
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if final.exists():
        old = out / f".images.lmdb.tmp-old-{os.getpid()}"
        os.replace(final, old)
        os.replace(temporary, final)
        shutil.rmtree(old)
    else:
        os.replace(temporary, final)


# ---------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep.make_ranks",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--rankset", choices=sorted(distortions.RANKSETS), default="tid2013",
                        help="distortion set: tid2013 (4 levels), live (5 levels) or mlive (blur then JPEG "
                             "or noise, 3x3 levels); types: --types")
    parser.add_argument("--pristine", default="default",
                        help="folder of pristine images (png/jpg/jpeg/bmp/tif/tiff), or 'default' for the "
                             "colour photographs inside scikit-image")
    parser.add_argument("--out", default=None, help="output folder (default data/ranks/<rankset>)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the noise (and of the train/test split with --split-rule seeded)")
    parser.add_argument("--jobs", type=int, default=0, help="worker processes (0: all cores)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of references in test")
    parser.add_argument("--lmdb", action="store_true", help="also write images.lmdb (key = relative path)")
    parser.add_argument("--types", default=None,
                        help="comma-separated types to generate and list, or 'all' (default: those the "
                             "original lists: tid2013 without HFN, all of live)")
    parser.add_argument("--split-rule", choices=SPLIT_RULES, default="sorted",
                        help="which references train: sorted = the first ones in sorted name order, as "
                             "the original (default); seeded = a permutation drawn from --seed")
    parser.add_argument("--limit-refs", type=int, default=None, help="use only the first N usable images")
    parser.add_argument("--min-size", type=int, default=227,
                        help="skip images with a side shorter than this (default 227, the Shallow crop; "
                             "VGG-16 needs 224)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser().parse_args(argv))


def run_cli(args: argparse.Namespace, run_tasks: TaskRunner | None = None) -> int:
    """Generate from the options of :func:`build_parser` and print the one-line summary; returns 0.

    ``run_tasks``: see :func:`generate` (``data_prep.dask_ranks`` passes its cluster's).
    """
    result = generate(args.rankset, args.pristine, args.out, seed=args.seed, jobs=args.jobs,
                      test_fraction=args.test_fraction, lmdb=args.lmdb, types=args.types,
                      limit_refs=args.limit_refs, min_size=args.min_size, progress=not args.quiet,
                      split_rule=args.split_rule, run_tasks=run_tasks)
    print(f"{result.out}: {len(result.references)} references ({len(result.train)} train, "
          f"{len(result.test)} test), {len(result.types)} types, {result.n_rows} manifest rows, "
          f"{result.n_written} images written, {len(result.skipped)} pristine images skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
