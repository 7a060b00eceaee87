"""``make demo``: the whole RankIQA pipeline in miniature on the embedded default data (Shallow net, CPU).

    python -m tools.demo --out results/demo [--seed 0] [--jobs N] [--quick]
        [--data-dir data/demo] [--runs-dir runs/demo]

No human-rated IQA database can be shipped, so the fine-tuning set is a SYNTHETIC STAND-IN: pristine
images that the ranking stage never saw, distorted with the project's generator and scored by MS-SSIM
against their reference (``data_prep.synthetic_iqa``), in place of a MOS. Every table and plot says so.

Stages (each one is skipped when its outputs are complete, so a rerun after Ctrl-C resumes):

1. ``pristine``: the default photographs (scikit-image's, ``data_prep.pristine``) are split, alternately
   in sorted name order (no hand-picking), into ranking references and fine-tuning references.
2. ``ranks``: the TID2013-style ranking set of the ranking references (``data_prep.make_ranks``).
3. ``train_rank``: Siamese ranking training of the Shallow net (``tools.train rank``).
4. ``synthetic``: the stand-in fine-tuning set of the other references, split by reference into train and
   test halves (``data_prep.synthetic_iqa``, which refuses references present in the rank manifest).
5. ``ft_rankiqa`` / ``ft_scratch``: fine-tuning from the ranking model (RankIQA+FT) and, with the same
   iterations, learning rate and seed, from random initialisation (FT from scratch).
6. ``eval_*``: the paper's protocol (``tools.evaluate``: random crops, mean of crops, SROCC/PLCC on raw
   outputs) on the held-out references, for the ranking model alone (output ``fc8_m``), RankIQA+FT and FT
   from scratch.
7. ``summary.md`` / ``summary.json`` / ``summary_bars.png`` / ``loss_curves.png`` in ``--out``; the table is
   printed.

Outputs of the stages go to ``<data-dir>/<profile>-seed<S>/`` and ``<runs-dir>/<profile>-seed<S>/``
(profile ``full`` or ``quick``), so the demo never touches a user's ``data/ranks`` or ``runs/``. A
``demo_settings.json`` there pins the settings; a rerun with other settings is refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankiqa.errors import InputError, cli_main
from rankiqa.fsutil import atomic_path, atomic_write_bytes, atomic_write_text
from tools.train import SHALLOW_DEFAULT_LR

REPO_ROOT = Path(__file__).resolve().parents[1]
RANKSET = "tid2013"
NET = "shallow"
STANDIN_LABEL = "synthetic stand-in (MS-SSIM), not human MOS"
SETTINGS_FILE = "demo_settings.json"
STAGES_FILE = "stages.json"

#: Types of the TID2013-style set left out of the demo, and why (reported in the summary).
EXCLUDED_TYPES = {
    "ID": "image denoising runs CBM3D: about 40 s per image on this CPU, longer than all other types "
          "together",
    "CS": "a chroma-only change: MS-SSIM on luminance scores every level 1.000, so its stand-in score "
          "would carry no information",
}


@dataclasses.dataclass(frozen=True)
class Profile:
    """Everything that decides the demo's outputs (stored in ``demo_settings.json``)."""

    name: str
    rank_refs: tuple[str, ...]
    ft_refs: tuple[str, ...]
    types: tuple[str, ...]
    rank_test_fraction: float   # share of the ranking references kept for the ranking test loss
    ft_test_fraction: float     # share of the fine-tuning references held out for the evaluation
    rank_iters: int
    rank_lr: float
    ft_iters: int
    ft_lr: float
    ft_batch: int
    snapshot: int
    # Test passes during training (0 = none; the final evaluation does not depend on them):
    rank_test_interval: int
    rank_test_iters: int
    ft_test_interval: int
    eval_crops: int
    eval_batch: int


def _all_types_but_excluded() -> tuple[str, ...]:
    from data_prep import distortions

    return tuple(t for t in distortions.RANKSETS[RANKSET] if t not in EXCLUDED_TYPES)


def _alternate(names: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split names alternately (0, 2, 4, ... and 1, 3, 5, ...): a rule, not a choice of favourable images."""
    return tuple(names[0::2]), tuple(names[1::2])


def default_names() -> list[str]:
    """Reference names of the embedded default pristine images, sorted."""
    from data_prep import pristine

    return sorted(pristine.reference_name(p) for p in pristine.default_sources())


def full_profile() -> Profile:
    """The ``make demo`` configuration: sized to finish in about 12 minutes on 2 busy cores.

    Measured there: a ranking iteration (45 images) takes about 2 s, a fine-tuning iteration (30) about 1 s,
    so the schedule is a few hundred iterations in all. Learning rates: the Shallow net's defaults of
    ``tools.train`` (``SHALLOW_DEFAULT_LR``; the faithful solvers' rates are VGG-16's), the same fine-tuning
    rate for both initialisations.
    """
    rank_refs, ft_refs = _alternate(default_names())
    return Profile(name="full", rank_refs=rank_refs, ft_refs=ft_refs, types=_all_types_but_excluded(),
                   rank_test_fraction=0.2, ft_test_fraction=0.2,
                   rank_iters=150, rank_lr=SHALLOW_DEFAULT_LR["rank"], ft_iters=100,
                   ft_lr=SHALLOW_DEFAULT_LR["finetune"], ft_batch=30, snapshot=50,
                   rank_test_interval=50, rank_test_iters=4, ft_test_interval=25,
                   eval_crops=10, eval_batch=60)


def quick_profile() -> Profile:
    """A tiny configuration (a minute or two) for the test: the four smallest images, three types."""
    from data_prep import pristine

    by_size = sorted(pristine.default_sources(), key=lambda p: (_pixel_count(p), p.name))[:4]
    rank_refs, ft_refs = _alternate([pristine.reference_name(p) for p in by_size])
    return Profile(name="quick", rank_refs=rank_refs, ft_refs=ft_refs, types=("GN", "GB", "JPEG"),
                   rank_test_fraction=0.5, ft_test_fraction=0.5,
                   rank_iters=4, rank_lr=SHALLOW_DEFAULT_LR["rank"], ft_iters=4,
                   ft_lr=SHALLOW_DEFAULT_LR["finetune"], ft_batch=8, snapshot=4,
                   rank_test_interval=2, rank_test_iters=1, ft_test_interval=2,
                   eval_crops=2, eval_batch=24)


def _pixel_count(path: Path) -> int:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return 0 if image is None else int(image.shape[0] * image.shape[1])


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
        """Store a stage's time; a reused stage keeps the seconds of the run that did the work."""
        previous = self.stages.get(stage, {})
        if reused:
            self.stages[stage] = {"seconds": previous.get("seconds"), "reused": True}
        else:
            self.stages[stage] = {"seconds": round(seconds, 1), "reused": False}
        atomic_write_text(self.path, json.dumps(self.stages, indent=2) + "\n")
        done = "reused (outputs complete)" if reused else f"{seconds:.1f} s"
        print(f"[demo] stage {stage}: {done}", file=sys.stderr, flush=True)


class StageFailed(RuntimeError):
    """A stage's command exited with an error (its own message is above in the output)."""


def _run(stage: str, argv: list[str]) -> None:
    """Run ``python -m ...`` as a child (its own Caffe, glog and data workers); Ctrl-C reaches it too."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
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
    """Where each stage writes."""

    data: Path
    runs: Path
    out: Path

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

    def run(self, name: str) -> Path:
        return self.runs / name

    def evaluation(self, name: str) -> Path:
        return self.out / "eval" / name


def stage_pristine(profile: Profile, paths: Paths) -> bool:
    """Copy the default images (bytes unchanged) into the two disjoint pristine folders; False if done."""
    from data_prep import pristine

    sources = {pristine.reference_name(p): p for p in pristine.default_sources()}
    missing = [n for n in (*profile.rank_refs, *profile.ft_refs) if n not in sources]
    if missing:
        raise InputError(f"default pristine image(s) {', '.join(missing)} not found",
                         pristine.skimage_data_dir())
    wrote = False
    for folder, names in ((paths.pristine_rank, profile.rank_refs), (paths.pristine_ft, profile.ft_refs)):
        for name in names:
            target = folder / sources[name].name
            if not target.is_file():
                atomic_write_bytes(target, sources[name].read_bytes())
                wrote = True
    return wrote


def ranks_complete(paths: Paths) -> bool:
    """make_ranks writes manifest.csv last: its presence means the set is complete."""
    return (paths.ranks / "manifest.csv").is_file()


def stage_ranks(profile: Profile, paths: Paths, seed: int, jobs: int) -> dict[str, Any]:
    """Generate (or finish) the ranking set; returns its train/test references."""
    from data_prep import make_ranks

    result = make_ranks.generate(RANKSET, paths.pristine_rank, paths.ranks, seed=seed, jobs=jobs,
                                 test_fraction=profile.rank_test_fraction, types=list(profile.types),
                                 progress=True)
    return {"train": result.train, "test": result.test, "rows": result.n_rows}


def rank_references(paths: Paths) -> dict[str, list[str]]:
    """Train/test references of the ranking set, read back from its manifest."""
    import csv

    split: dict[str, set[str]] = {"train": set(), "test": set()}
    with open(paths.ranks / "manifest.csv", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            split.setdefault(row["split"], set()).add(row["reference"])
    return {key: sorted(value) for key, value in split.items()}


def synthetic_complete(paths: Paths) -> bool:
    """make_synthetic writes README.txt after the table and the lists."""
    return all((paths.synthetic / name).is_file() for name in ("README.txt", "table.csv")) and all(
        (paths.ft_lists / name).is_file() for name in ("train.txt", "test.txt", "test.csv"))


def stage_synthetic(profile: Profile, paths: Paths, seed: int) -> None:
    """The stand-in fine-tuning set of the references the ranking stage never saw."""
    from data_prep import synthetic_iqa

    synthetic_iqa.make_synthetic(paths.pristine_ft, list(profile.ft_refs), paths.synthetic, rankset=RANKSET,
                                 seed=seed, splits=1, test_fraction=profile.ft_test_fraction,
                                 types=list(profile.types), rank_manifest=paths.ranks / "manifest.csv")


def ft_references(paths: Paths) -> dict[str, list[str]]:
    """Train/test references of split 0 of the stand-in set (from its test table and the full table)."""
    import csv

    def refs(table: Path) -> set[str]:
        with open(table, encoding="utf-8", newline="") as handle:
            return {row["reference"] for row in csv.DictReader(handle)}

    test = refs(paths.ft_lists / "test.csv")
    return {"train": sorted(refs(paths.synthetic / "table.csv") - test), "test": sorted(test)}


def final_model(run_dir: Path, iters: int) -> Path | None:
    """The run's ``.caffemodel`` at ``iters`` (or beyond), if training finished."""
    from tools import train

    for model in train.snapshots(run_dir / "snapshots", "caffemodel"):
        iteration = train.snapshot_iteration(model)
        if iteration is not None and iteration >= iters:
            return model
    return None


def train_argv(kind: str, profile: Profile, paths: Paths, run_dir: Path, seed: int,
               extra: list[str]) -> list[str]:
    """The ``tools.train`` command line of one training stage (CPU, the profile's schedule)."""
    iters = profile.rank_iters if kind == "rank" else profile.ft_iters
    lr = profile.rank_lr if kind == "rank" else profile.ft_lr
    test_interval = profile.rank_test_interval if kind == "rank" else profile.ft_test_interval
    argv = [sys.executable, "-m", "tools.train", kind, "--net", NET, "--out", str(run_dir), "--gpu", "-1",
            "--seed", str(seed), "--iters", str(iters), "--lr", repr(lr),
            "--snapshot", str(min(profile.snapshot, iters)), "--test-interval", str(test_interval)]
    return argv + extra


def stage_train_rank(profile: Profile, paths: Paths, seed: int) -> Path:
    """Siamese ranking training; returns the final model."""
    run_dir = paths.run("rank")
    types_per_batch = min(9, len(profile.types))  # the original's 9 of 18 types per batch, when possible
    _run("train_rank", train_argv("rank", profile, paths, run_dir, seed, [
        "--rankset", RANKSET, "--data", str(paths.ranks), "--types-per-batch", str(types_per_batch),
        "--test-iters", str(profile.rank_test_iters)]))
    model = final_model(run_dir, profile.rank_iters)
    if model is None:
        raise StageFailed(f"ranking training ended without a model at iteration {profile.rank_iters}")
    return model


def stage_finetune(name: str, profile: Profile, paths: Paths, seed: int, rank_model: Path | None) -> Path:
    """Fine-tune on the stand-in set from ``rank_model`` (None: from scratch); returns the final model."""
    run_dir = paths.run(name)
    init = ["--from-scratch"] if rank_model is None else ["--rank-model", str(rank_model)]
    _run(name, train_argv("finetune", profile, paths, run_dir, seed, [
        "--dataset", "synthetic", "--lists", str(paths.ft_lists), "--batch", str(profile.ft_batch), *init]))
    model = final_model(run_dir, profile.ft_iters)
    if model is None:
        raise StageFailed(f"fine-tuning {name} ended without a model at iteration {profile.ft_iters}")
    return model


def evaluation_complete(out: Path, model: Path, crops: int) -> bool:
    """evaluate writes metrics.json last; it must be of this model and this number of crops."""
    path = out / "metrics.json"
    if not path.is_file():
        return False
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return report.get("model") == str(model) and report.get("crops") == crops


def stage_evaluate(name: str, deploy: str, model: Path, profile: Profile, paths: Paths, seed: int) -> None:
    """The paper's protocol on the held-out references of the stand-in set."""
    _run(f"eval_{name}", [
        sys.executable, "-m", "tools.evaluate", "--deploy", str(REPO_ROOT / "prototxts" / NET / deploy),
        "--model", str(model), "--table", str(paths.ft_lists / "test.csv"), "--out",
        str(paths.evaluation(name)), "--crops", str(profile.eval_crops), "--batch", str(profile.eval_batch),
        "--seed", str(seed), "--gpu", "-1", "--quiet"])


# ---------------------------------------------------------------------------------------------------------
# Summary


#: The three compared models: key, label, initialisation, deploy net.
MODELS = (
    ("rankiqa", "RankIQA", "ranking model only (output fc8_m)", "rank_deploy.prototxt"),
    ("rankiqa_ft", "RankIQA+FT", "fine-tuned from the ranking model", "ft_deploy.prototxt"),
    ("ft_scratch", "FT from scratch", "fine-tuned from random weights, same iterations and seed",
     "ft_deploy.prototxt"),
)


def read_rows(paths: Paths) -> list[dict[str, Any]]:
    """One row per model from its ``metrics.json`` (mean-of-crops scoring, as the paper)."""
    rows = []
    for key, label, init, _ in MODELS:
        report = json.loads((paths.evaluation(key) / "metrics.json").read_text(encoding="utf-8"))
        mean, median = report["overall"]["mean"], report["overall"]["median"]
        rows.append({"key": key, "model": label, "init": init, "output_blob": report.get("output_blob"),
                     "srocc": mean["srocc"], "plcc": mean["plcc"], "krocc": mean.get("krocc"),
                     "srocc_median_scoring": median["srocc"], "n_images": report["n_images"],
                     "crops": report["crops"], "caffemodel": report["model"],
                     "metrics": str(paths.evaluation(key) / "metrics.md")})
    return rows


def _f(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else str(value)


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison table (Markdown)."""
    lines = [f"Held-out references, {STANDIN_LABEL}; image score = mean of {rows[0]['crops']} random crops; "
             f"{rows[0]['n_images']} test images.", "",
             "| model | initialisation | SROCC | PLCC | KROCC |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['init']} | {_f(row['srocc'])} | {_f(row['plcc'])} | "
                     f"{_f(row['krocc'])} |")
    return "\n".join(lines) + "\n"


def verdict(rows: list[dict[str, Any]]) -> str:
    """The order by SROCC, computed from the numbers (no claim is written in advance)."""
    ordered = sorted(rows, key=lambda r: r["srocc"], reverse=True)
    chain = " > ".join(f"{r['model']} ({_f(r['srocc'])})" for r in ordered)
    return f"Order by SROCC on this run: {chain}."


def plot_bars(rows: list[dict[str, Any]], path: Path) -> None:
    """SROCC and PLCC of the three models side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    width = 0.38
    positions = range(len(rows))
    for offset, metric, colour in ((-width / 2, "srocc", "tab:blue"), (width / 2, "plcc", "tab:orange")):
        values = [r[metric] for r in rows]
        bars = ax.bar([p + offset for p in positions], values, width, label=metric.upper(), color=colour)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(list(positions), [r["model"] for r in rows])
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_ylim(min(0.0, *(r[m] for r in rows for m in ("srocc", "plcc"))) - 0.05, 1.05)
    ax.set_ylabel("correlation with the stand-in score")
    ax.set_title(f"held-out references: {STANDIN_LABEL}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_curves(paths: Paths, path: Path) -> None:
    """Ranking loss (train/test), fine-tuning loss and test SROCC during fine-tuning, from the run logs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tools.logparse import parse_log

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    rank = parse_log(paths.run("rank") / "log.txt")
    for key, style in (("train_loss", "-"), ("test_loss", "o--")):
        its, values = rank.series(key)
        if its:
            axes[0].plot(its, values, style, label=key.replace("_", " "))
    axes[0].set_title("ranking (all-pairs hinge loss)")
    for name, label, colour in (("ft_rankiqa", "RankIQA+FT", "tab:green"), ("ft_scratch", "FT from scratch",
                                                                             "tab:red")):
        table = parse_log(paths.run(name) / "log.txt")
        its, values = table.series("train_loss")
        axes[1].plot(its, values, color=colour, label=f"{label} train")
        its, values = table.series("test_loss")
        if its:
            axes[1].plot(its, values, "o--", color=colour, label=f"{label} test")
        its, values = table.series("test_srocc")
        if its:
            axes[2].plot(its, values, "o-", color=colour, label=label)
    axes[1].set_title("fine-tuning (Euclidean loss)")
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


def write_summary(profile: Profile, paths: Paths, seed: int, rows: list[dict[str, Any]],
                  refs: dict[str, dict[str, list[str]]], stages: StageTimes, total_seconds: float) -> str:
    """Write summary.md, summary.json and the two plots; returns the printed table."""
    plot_bars(rows, paths.out / "summary_bars.png")
    plot_curves(paths, paths.out / "loss_curves.png")
    table = table_markdown(rows)
    worked = sum(s["seconds"] or 0.0 for s in stages.stages.values() if not s.get("reused"))
    measured = sum(s["seconds"] or 0.0 for s in stages.stages.values())
    excluded = "; ".join(f"{t}: {why}" for t, why in EXCLUDED_TYPES.items())
    settings = {
        "profile": profile.name, "seed": seed, "net": NET, "device": "CPU", "rankset": RANKSET,
        "types": list(profile.types), "excluded_types": EXCLUDED_TYPES,
        "rank_references": refs["rank"], "ft_references": refs["ft"],
        "reference_assignment": "default images in sorted name order (full) or by size (quick), "
                                "alternately to ranking and fine-tuning",
        "rank_iters": profile.rank_iters, "rank_lr": profile.rank_lr,
        "rank_batch": f"{min(9, len(profile.types))} types x 5 levels",
        "ft_iters": profile.ft_iters, "ft_lr": profile.ft_lr, "ft_batch": profile.ft_batch,
        "eval_crops": profile.eval_crops, "data_dir": str(paths.data), "runs_dir": str(paths.runs),
    }
    lines = [
        f"# RankIQA demo: {STANDIN_LABEL}", "",
        "**The fine-tuning and test scores are a SYNTHETIC STAND-IN: MS-SSIM of each distorted image "
        "against its pristine reference, not human opinion scores (MOS).** The paper's claim in miniature: "
        "does ranking pre-training on generated distortions help a regression fine-tuned on few labelled "
        "images? Compared on references used by neither the ranking nor the fine-tuning training.", "",
        table,
        verdict(rows), "",
        "- RankIQA is the ranking model alone (output `fc8_m`): a *relative* quality score on no particular "
        "scale, so its SROCC is what matters; its PLCC compares raw, uncalibrated outputs.",
        f"- Small test set ({rows[0]['n_images']} images of {len(refs['ft']['test'])} reference(s)): "
        "differences of a few hundredths are within noise.", "",
        "![SROCC/PLCC](summary_bars.png)", "", "![loss curves](loss_curves.png)", "",
        "## Settings", "",
        f"- profile `{profile.name}`, seed {seed}, net `{NET}` (supplementary Table 5), CPU",
        f"- ranking: rank set `{RANKSET}`, references {', '.join(refs['rank']['train'])} (train), "
        f"{', '.join(refs['rank']['test']) or '-'} (ranking test split, not trained on); "
        f"{settings['rank_batch']} per batch; "
        f"{profile.rank_iters} iterations, base_lr {profile.rank_lr:g}",
        f"- fine-tuning (stand-in): references {', '.join(refs['ft']['train'])} (train), "
        f"{', '.join(refs['ft']['test'])} (held out, evaluated); batch {profile.ft_batch}; "
        f"{profile.ft_iters} iterations, base_lr {profile.ft_lr:g}; same iterations, rate and seed for "
        "both initialisations",
        f"- distortion types ({len(profile.types)}): {', '.join(profile.types)}",
        f"- left out: {excluded}",
        "- references assigned alternately in sorted name order (quick profile: by size), not chosen by hand",
        f"- learning rates: the Shallow net's defaults (ranking {profile.rank_lr:g}, fine-tuning "
        f"{profile.ft_lr:g}; its input is scaled to [0, 1]); the faithful solvers' rates are VGG-16's",
        f"- evaluation: {profile.eval_crops} random 227x227 crops per image, image score = mean of crops, "
        "SROCC/PLCC/KROCC on raw outputs (`tools.evaluate`; per-model details in `eval/<model>/metrics.md`)",
        "", "## Seconds per stage", "", "| stage | seconds | |", "|---|---|---|"]
    for stage, info in stages.stages.items():
        note = "reused from an earlier run of the demo" if info.get("reused") else ""
        seconds = info["seconds"]
        lines.append(f"| {stage} | {'-' if seconds is None else f'{seconds:.1f}'} | {note} |")
    lines += ["", f"Total of the stages: {measured:.0f} s ({worked:.0f} s of work in this invocation, "
              f"{total_seconds:.0f} s wall time of this invocation before the summary was written)."]
    atomic_write_text(paths.out / "summary.md", "\n".join(lines) + "\n")
    summary = {"label": STANDIN_LABEL,
               "note": "scores are MS-SSIM against the pristine reference (synthetic stand-in), "
                       "not human MOS",
               "scoring": "mean of crops", "rows": rows, "verdict": verdict(rows), "settings": settings,
               "stages": stages.stages, "total_stage_seconds": round(measured, 1),
               "wall_seconds_this_invocation": round(total_seconds, 1)}
    atomic_write_text(paths.out / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return table


# ---------------------------------------------------------------------------------------------------------
# Driver


def run_demo(profile: Profile, out: Path, data_root: Path, runs_root: Path, seed: int = 0,
             jobs: int | None = None) -> dict[str, Any]:
    """Run (or resume) every stage, write the summary; returns the content of summary.json."""
    started = time.perf_counter()
    jobs = (os.cpu_count() or 1) if not jobs or jobs <= 0 else jobs
    folder = f"{profile.name}-seed{seed}"
    paths = Paths(data=(data_root / folder).resolve(), runs=(runs_root / folder).resolve(), out=out.resolve())
    settings = {"profile": dataclasses.asdict(profile), "seed": seed}
    check_settings(paths.data, settings)
    check_settings(paths.runs, settings)
    paths.out.mkdir(parents=True, exist_ok=True)
    stages = StageTimes(paths.out / STAGES_FILE)
    print(f"[demo] profile {profile.name}: ranking references {', '.join(profile.rank_refs)}; fine-tuning "
          f"references {', '.join(profile.ft_refs)}; {len(profile.types)} types "
          f"({', '.join(profile.types)}); "
          f"left out {', '.join(EXCLUDED_TYPES)} (see summary.md)", file=sys.stderr, flush=True)

    def timed(stage: str, complete: bool, work: Any) -> Any:
        tick = time.perf_counter()
        result = None if complete else work()
        stages.record(stage, time.perf_counter() - tick, reused=complete)
        return result

    timed("pristine", _pristine_done(profile, paths), lambda: stage_pristine(profile, paths))
    timed("ranks", ranks_complete(paths), lambda: stage_ranks(profile, paths, seed, jobs))
    timed("synthetic", synthetic_complete(paths), lambda: stage_synthetic(profile, paths, seed))
    rank_model = final_model(paths.run("rank"), profile.rank_iters)
    rank_model = timed("train_rank", rank_model is not None,
                       lambda: stage_train_rank(profile, paths, seed)) or rank_model
    models: dict[str, Path] = {"rankiqa": rank_model}
    for key, run_name, init in (("rankiqa_ft", "ft_rankiqa", rank_model), ("ft_scratch", "ft_scratch", None)):
        done = final_model(paths.run(run_name), profile.ft_iters)
        models[key] = timed(run_name, done is not None,
                            lambda r=run_name, i=init: stage_finetune(r, profile, paths, seed, i)) or done
    for key, _, _, deploy in MODELS:
        complete = evaluation_complete(paths.evaluation(key), models[key], profile.eval_crops)
        timed(f"eval_{key}", complete,
              lambda k=key, d=deploy: stage_evaluate(k, d, models[k], profile, paths, seed))

    rows = read_rows(paths)
    refs = {"rank": rank_references(paths), "ft": ft_references(paths)}
    table = write_summary(profile, paths, seed, rows, refs, stages, time.perf_counter() - started)
    print(f"\nRankIQA demo ({profile.name}), Shallow net on CPU\n")
    print(table)
    print(verdict(rows))
    print(f"\nsummary: {paths.out / 'summary.md'} (+ summary.json, summary_bars.png, loss_curves.png)")
    return json.loads((paths.out / "summary.json").read_text(encoding="utf-8"))


def _pristine_done(profile: Profile, paths: Paths) -> bool:
    """Both pristine folders hold exactly the profile's references (by name stem)."""
    def stems(folder: Path) -> set[str]:
        return {p.stem for p in folder.iterdir() if not p.name.startswith(".")} if folder.is_dir() else set()

    return stems(paths.pristine_rank) == set(profile.rank_refs) and stems(paths.pristine_ft) == set(
        profile.ft_refs)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/demo"),
                        help="summary folder (default results/demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage (default 0)")
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
    profile = quick_profile() if args.quick else full_profile()
    try:
        run_demo(profile, args.out, args.data_dir, args.runs_dir, seed=args.seed, jobs=args.jobs)
    except StageFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
