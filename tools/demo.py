"""``make demo``: the RankIQA pipeline in miniature (Shallow net, CPU), over seeds and on any photographs.

    python -m tools.demo [--pristine default|DIR] [--seeds 0,1,2] [--out results/demo] [--jobs N]
        [--quick] [--data-dir data/demo] [--runs-dir runs/demo]

This command runs the stages; what a demo is made of (profiles, photographs, paths, settings) is
``rankiqa.demo_setup``, and its summary ``rankiqa.demo_report``.

No human-rated IQA database can be shipped, so the fine-tuning set is a SYNTHETIC STAND-IN: pristine
images that the ranking stage never saw, distorted with the project's generator and scored by MS-SSIM
against their reference (``data_prep.synthetic_iqa``), in place of a MOS. Every table and plot says so.

The photographs (``--pristine``: scikit-image's embedded colour photographs, or a folder of at least
``MIN_PHOTOS`` colour photographs) are split, alternately in sorted name order (no hand-picking), into
ranking references and fine-tuning references; the fine-tuning references are split per seed (seeded, by
reference) into training references and at least ``MIN_TEST_REFS`` held-out test references.

Stages, per seed (each one is skipped when its outputs are complete, so a rerun after Ctrl-C resumes; an
evaluation or rank accuracy also records what it was made from, and is redone when that changed):

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
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankiqa.demo_report import (
    FT_RUNS,
    MODELS,
    SeedResult,
    comparison_intervals,
    ft_base_lr,
    plot_curves,
    read_rank_accuracy,
    read_rows,
    write_summary,
)
from rankiqa.demo_setup import (
    MIN_PHOTOS,
    NET,
    RANKSET,
    SHORT_SIDE,
    STAGES_FILE,
    STANDIN_LABEL,
    Paths,
    Photos,
    Profile,
    StageTimes,
    check_settings,
    full_profile,
    quick_profile,
    resolve_photos,
    stage_blas_threads,
)
from rankiqa.errors import InputError, cli_main
from rankiqa.fsutil import atomic_write_bytes, atomic_write_text
from rankiqa.manifest import MANIFEST_NAME, manifest_text, read_manifest
from rankiqa.paths import PROTOTXT_DIR, REPO_ROOT

#: The ``split`` of every row of ``heldout_ranks.csv``: references that no stage trained on.
HELDOUT_SPLIT = "heldout"


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
    as level 0 of every type, in the rank manifest's columns (``rankiqa.manifest.manifest_text``; read by
    ``rankiqa.rank_accuracy``), split ``HELDOUT_SPLIT``."""
    from data_prep import pristine

    originals = {pristine.reference_name(p): p for p in paths.pristine_ft.iterdir() if p.is_file()}
    with open(paths.synthetic / "table.csv", encoding="utf-8", newline="") as handle:
        table = list(csv.DictReader(handle))
    rows: list[tuple[str, str, int, str, str]] = []
    seen: set[tuple[str, str]] = set()
    for row in table:
        if row["type"] not in types:
            continue
        key = (row["reference"], row["type"])
        if key not in seen:
            seen.add(key)
            rows.append((row["reference"], row["type"], 0, str(originals[row["reference"]].resolve()),
                         HELDOUT_SPLIT))
        rows.append((row["reference"], row["type"], int(row["level"]), row["path"], HELDOUT_SPLIT))
    atomic_write_text(paths.heldout_ranks, manifest_text(rows))


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


def evaluate_argv(name: str, deploy: str, model: Path, profile: Profile, paths: Paths, seed: int
                  ) -> list[str]:
    """The ``tools.evaluate`` arguments of one evaluation stage: the paper's protocol on the held-out
    references of the stand-in set."""
    return ["--deploy", str(PROTOTXT_DIR / NET / deploy), "--model", str(model), "--table",
            str(paths.ft_lists / "test.csv"), "--out", str(paths.evaluation(name)), "--crops",
            str(profile.eval_crops), "--batch", str(profile.eval_batch), "--seed", str(seed), "--gpu", "-1",
            "--quiet"]


def evaluation_current(argv: Sequence[str], needs: Sequence[str] = ()) -> bool:
    """Whether the evaluation ``tools.evaluate`` would make with ``argv`` is done: its ``metrics.json``
    (written last) holds the keys ``needs`` (one made before the toolkit reported them is redone, not read
    half) and records the inputs the evaluation would use now (``rankiqa.evaluation.evaluation_inputs``:
    the model's, deploy net's and table's contents, the images, the settings), so that a model retrained
    under the same path is evaluated again."""
    from rankiqa import evaluation, provenance
    from tools import evaluate

    args = evaluate.build_parser().parse_args(list(argv))
    report = provenance.read_json(Path(args.out) / "metrics.json")
    if report is None or not all(key in report for key in needs):
        return False
    try:
        samples, _ = evaluation.read_samples(args.table)
        inputs = evaluation.evaluation_inputs(args.model, args.deploy, args.table, samples, args)
    except (InputError, OSError):  # an input gone or broken: evaluating again says which
        return False
    return report.get("inputs") == inputs


def stage_evaluate(name: str, deploy: str, model: Path, profile: Profile, paths: Paths, seed: int) -> None:
    """The paper's protocol on the held-out references of the stand-in set (``evaluate_argv``)."""
    _run(f"eval_{name}", [sys.executable, "-m", "tools.evaluate",
                          *evaluate_argv(name, deploy, model, profile, paths, seed)])


def rank_accuracy_argv(model: Path, profile: Profile, paths: Paths, seed: int) -> list[str]:
    """The ``tools.rank_accuracy`` arguments: the ranking model on the references it never saw."""
    return ["--deploy", str(PROTOTXT_DIR / NET / "rank_deploy.prototxt"), "--model", str(model), "--ranks",
            str(paths.heldout_ranks), "--out", str(paths.rank_accuracy), "--crops", str(profile.eval_crops),
            "--batch", str(profile.eval_batch), "--seed", str(seed), "--gpu", "-1", "--quiet"]


def rank_accuracy_current(argv: Sequence[str]) -> bool:
    """Whether the ``rank_accuracy.json`` that ``tools.rank_accuracy`` would write with ``argv`` is there, of
    these settings and of the files as they are now (``tools.rank_accuracy.record_is_current``)."""
    from rankiqa import provenance
    from tools import rank_accuracy

    args = rank_accuracy.build_parser().parse_args(list(argv))
    return rank_accuracy.record_is_current(provenance.read_json(Path(args.out) / "rank_accuracy.json"), args)


def stage_rank_accuracy(model: Path, profile: Profile, paths: Paths, seed: int) -> None:
    """Pairwise ranking accuracy of the ranking model on the references it never saw."""
    _run("rank_accuracy", [sys.executable, "-m", "tools.rank_accuracy",
                           *rank_accuracy_argv(model, profile, paths, seed)])


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
        complete = evaluation_current(evaluate_argv(key, deploy, models[key], profile, paths, seed),
                                      needs=("within_reference",))
        timed(f"eval_{key}", complete,
              lambda k=key, d=deploy: stage_evaluate(k, d, models[k], profile, paths, seed))
    complete = rank_accuracy_current(rank_accuracy_argv(rank_model, profile, paths, seed))
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
        # an empty entry ("0,,1") is a typo, not a seed to leave out: a multi-seed run is long
        seeds = [int(part) for part in text.split(",")]
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
                        help="summary folder (default results/demo, or results/demo-<folder>-<hash> for "
                             "--pristine)")
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
    # The folder's tag carries a hash of its files: two folders of one name keep their own summaries.
    out = args.out or Path("results/demo" if photos.tag == "default" else f"results/demo-{photos.tag}")
    try:
        run_demo(profile, photos, out, args.data_dir, args.runs_dir, seeds=seeds, jobs=args.jobs)
    except StageFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
