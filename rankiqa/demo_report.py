"""The demo's summary: the three models' figures per seed, the claim's checks with their bootstrap
intervals, the ranking model's pairwise accuracy, plots, and ``summary.md`` / ``summary.json``.

Reads what the stages of ``tools/demo.py`` wrote under a seed's ``rankiqa.demo_setup.Paths`` (the
evaluations' ``metrics.json`` and ``per_image.csv``, ``rank_accuracy.json``, the runs' solvers and logs);
computes nothing in advance: every check is made from those numbers.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankiqa.demo_setup import (
    EXCLUDED_TYPES,
    NET,
    NOT_RANKED,
    RANK_ACCURACY_GOAL,
    RANKSET,
    SHORT_SIDE,
    STANDIN_LABEL,
    Paths,
    Photos,
    Profile,
    blas_threads_note,
)
from rankiqa.errors import InputError
from rankiqa.fsutil import atomic_path, atomic_write_text

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
    predictions: dict[str, tuple[float, float]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["path"] in predictions:
                raise InputError(f"image listed twice: {row['path']}", path)
            predictions[row["path"]] = (float(row["ground_truth"]), float(row["pred_mean"]))
    return predictions


def comparison_intervals(paths: Paths, seed: int) -> dict[str, dict[str, float]]:
    """Per comparison of the claim: the difference of the two models' correlations and its paired bootstrap
    interval over the held-out images (``rankiqa.metrics.paired_difference``, seeded with ``seed``)."""
    from rankiqa import metrics

    compared = {label for model, _, other, _ in CLAIM_COMPARISONS for label in (model, other)}
    files = {label: paths.evaluation(key) / "per_image.csv"
             for key, label, _, _ in MODELS if label in compared}
    predictions = {label: read_predictions(path) for label, path in files.items()}  # each file read once
    result = {}
    for model, relation, other, metric in CLAIM_COMPARISONS:
        mine, theirs = predictions[model], predictions[other]
        if mine.keys() != theirs.keys() or any(mine[i][0] != theirs[i][0] for i in mine):
            raise InputError(f"the evaluations of {model} and {other} scored different images or labels",
                             files[other])
        images = sorted(mine)
        result[comparison_name(model, relation, other, metric)] = metrics.paired_difference(
            [mine[i][1] for i in images], [theirs[i][1] for i in images], [mine[i][0] for i in images],
            metric, seed=seed)
    return result


def _interval_text(interval: dict[str, float] | None) -> str:
    if interval is None:
        return "-"
    return f"{interval['difference']:+.3f} ({interval['low']:+.3f} to {interval['high']:+.3f})"


def intervals_markdown(intervals: dict[int, dict[str, dict[str, float]]]) -> str:
    """Per seed and pair of models: the SROCC and PLCC differences with their bootstrap intervals."""
    pairs = list(dict.fromkeys((model, other) for model, _, other, _ in CLAIM_COMPARISONS))
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
        found = {(model, other, metric): result.get(comparison_name(model, relation, other, metric))
                 for model, relation, other, metric in CLAIM_COMPARISONS}
        for model, other in pairs:
            cells = [_interval_text(found.get((model, other, metric))) for metric in ("srocc", "plcc")]
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
    ``within_reference_``: the within-reference means instead of the pooled figures). One seed: its SROCC
    and PLCC alone (a standard deviation over one value says nothing)."""
    seeds = sorted({r["seed"] for r in runs})
    srocc_key, plcc_key = f"{prefix}srocc", f"{prefix}plcc"
    by_model = {label: {r["seed"]: r for r in runs if r["model"] == label} for label in MODEL_LABELS}
    for label, mine in by_model.items():
        missing = [seed for seed in seeds if seed not in mine]
        if missing:
            raise KeyError(f"no run of model {label!r} for seed {missing[0]}")
    if len(seeds) == 1:
        lines = [f"| model (seed {seeds[0]}) | SROCC | PLCC |", "|---|---|---|"]
        for label, mine in by_model.items():
            row = mine[seeds[0]]
            lines.append(f"| {label} | {row[srocc_key]:.3f} | {row[plcc_key]:.3f} |")
        return "\n".join(lines) + "\n"
    lines = ["| model | SROCC (mean ± std) | PLCC (mean ± std) | " +
             " | ".join(f"seed {s} SROCC / PLCC" for s in seeds) + " |",
             "|---|---|---|" + "---|" * len(seeds)]
    for label, mine in by_model.items():
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


def _save(plt: Any, fig: Any, path: Path) -> None:
    """Lay out, write as PNG (whole or not at all) and close a figure."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


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
    _save(plt, fig, path)


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
    _save(plt, fig, path)


def plot_curves(paths: Paths, path: Path) -> None:
    """Ranking loss, fine-tuning loss and, when the runs tested while training, test SROCC during
    fine-tuning (a third panel; the demo's own runs do not test while training), from the run logs."""
    plt = _pyplot()
    from rankiqa.logparse import parse_log

    rank = parse_log(paths.run("rank") / "log.txt")
    ft = [(parse_log(paths.run(name) / "log.txt"), label) for _, name, label in FT_RUNS]
    tested = any(table.series("test_srocc")[0] for table, _ in ft)
    fig, axes = plt.subplots(1, 3 if tested else 2, figsize=(14, 4) if tested else (10, 4))
    its, values = rank.series("train_loss")
    if its:
        axes[0].plot(its, values, "-", label="train loss")
    axes[0].set_title("ranking (all-pairs hinge loss)")
    for (table, label), colour in zip(ft, ("tab:green", "tab:red"), strict=True):
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
    if tested:
        axes[2].set_title("test SROCC during fine-tuning (1 crop/image)")
    for ax in axes:
        ax.set_xlabel("iteration")
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(f"RankIQA demo, Shallow net on CPU; fine-tuning labels: {STANDIN_LABEL}", fontsize=10)
    _save(plt, fig, path)


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


def models_markdown(results: Sequence[SeedResult]) -> list[str]:
    """Summary lines naming each seed's trained models with their deploy nets, and how to score one's own
    images with them (``make predict``)."""
    deploys = {label: f"prototxts/{NET}/{deploy}" for _, label, _, deploy in MODELS}
    lines = ["## The models", "",
             "Score your own images with any of them: `make predict MODEL=<caffemodel> DEPLOY=<deploy net> "
             "IMAGES=<files or a folder>` (see README, \"Scoring your own images\").", "",
             "| seed | model | caffemodel | deploy net |", "|---|---|---|---|"]
    for r in results:
        for row in r.rows:
            lines.append(f"| {r.seed} | {row['model']} | `{row['caffemodel']}` | `{deploys[row['model']]}` |")
    return [*lines, ""]


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
        *models_markdown(results),
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
            f"{within_table}\nPairwise ranking accuracy on references the ranking never saw:\n\n{acc_table}\n"
            "The trained models, to score your own images with (make predict): summary.md, \"The models\".")
