"""The paper's evaluation protocol on an IQA test set: the library under ``tools/evaluate.py`` (``make eval``)
and ``rankiqa.cross_dataset`` (``make cross``).

For every test image: ``crops`` random crops (the deploy net's input size: 224 for VGG-16, 227 for
Shallow; seeded), the net's output on each (``rankiqa.scoring.CropScorer``), the image's score = the mean
of the outputs (as the paper; the median is reported beside it). Metrics (``rankiqa.metrics``): SROCC,
KROCC, PLCC on raw outputs (the paper's numbers), RMSE, and PLCC/RMSE after 4- and 5-parameter logistic
fits; overall, per distortion type and inside each reference image (averaged over the references), for
mean and median scoring.

Score direction: metrics are computed on the raw outputs and never flipped silently (``direction_report``
states the expected sign; ``negate`` flips the predictions before all metrics, and says so).

Outputs of one evaluation (``write_outputs``): ``metrics.json`` (last), ``per_image.csv``, ``metrics.md``,
``scatter.png``, ``srocc_per_type.png``; of a split evaluation (``evaluate_splits``) those files per split in
``<out>/split<k>/`` and the mean and standard deviation over the splits in ``<out>/``.

The settings an evaluation reads (``evaluate_one``) are those of ``tools/evaluate.py``'s command line:
``dataset``, ``gt_direction``, ``model_direction``, ``negate``, ``quiet``, ``crops``, ``seed``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

# the table's format is data_prep's (it writes the tables): one reader of it, data_prep.datasets.read_table
from data_prep import datasets
from rankiqa import metrics as iqa_metrics
from rankiqa import provenance, scoring
from rankiqa.errors import InputError
from rankiqa.fsutil import atomic_path, atomic_write_text
from rankiqa.image_io import read_bgr
from rankiqa.lists import open_text, read_list

#: The files of one evaluation (``write_outputs``); metrics.json is written last.
RESULT_FILES = ("per_image.csv", "metrics.md", "scatter.png", "srocc_per_type.png", "metrics.json")
PER_IMAGE_COLUMNS = ("path", "reference", "type", "level", "ground_truth", "pred_mean", "pred_median")
SCORINGS = ("mean", "median")
SPLIT_PLACEHOLDER = "{split}"


@dataclass(frozen=True)
class Sample:
    """One test image: where it is, what it shows, its subjective score; ``line`` for messages."""

    path: str
    score: float
    reference: str = ""
    type: str = ""
    level: str = ""
    line: int | None = None


def dataset_info(name: str | None) -> Any:
    """The ``data_prep.datasets.DATASETS`` entry for ``name`` (type names, score direction), or None."""
    if not name:
        return None
    from data_prep.datasets import DATASETS  # lazily: only for names and directions

    if name not in DATASETS:
        raise InputError(f"unknown --dataset {name!r} (known: {', '.join(DATASETS)})")
    return DATASETS[name]


def read_table(path: str | Path) -> tuple[list[Sample], str]:
    """Read a test table CSV (``data_prep.datasets.read_table``: its format, checks and messages); return its
    samples and its score direction, one for the whole table (mixed directions are an ``InputError``)."""
    rows = datasets.read_table(path)
    other = next((row for row in rows if row.direction != rows[0].direction), None)
    if other is not None:
        first = rows[0]
        raise InputError(f"score direction {other.direction}, but line {first.line} has {first.direction}: "
                         "one direction per table", path, other.line)
    return [Sample(row.path, row.score, row.reference, row.type, str(row.level), row.line)
            for row in rows], rows[0].direction


def read_samples(path: str | Path) -> tuple[list[Sample], str | None]:
    """A table CSV (by its header) or a ``<path> <score>`` list (no types; direction unknown)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("test table / list not found", path)
    with open_text(path, errors="replace") as handle:
        first = handle.readline()
    if first.strip().startswith("reference,") or path.suffix.lower() == ".csv":
        return read_table(path)
    rows = read_list(path, check_files=False)
    return [Sample(image, score) for image, score in rows], None


def score_samples(scorer: scoring.CropScorer, samples: Sequence[Sample], source: str,
                  progress: bool = True, desc: str = "eval") -> np.ndarray:
    """Per-crop outputs of every sample, shape (n_images, crops); unreadable/small images are errors."""

    def load(index: int) -> np.ndarray:
        sample = samples[index]
        try:
            image = read_bgr(sample.path)
        except InputError as err:
            raise InputError(f"{err.message}: {sample.path}", source, sample.line) from None
        if not scorer.fits(image):
            raise InputError(f"image {image.shape[1]}x{image.shape[0]} (WxH) is smaller than the "
                             f"{scorer.info.crop_width}x{scorer.info.crop_height} crop: {sample.path}",
                             source, sample.line)
        return image

    outputs = np.empty((len(samples), scorer.crops), dtype=np.float64)
    items = ((index, index, future.result())
             for index, future in scoring.prefetch(load, range(len(samples))))
    with tqdm(total=len(samples), desc=desc, unit="img", disable=not progress, file=sys.stderr) as bar:
        for index, values in scorer.score(items):
            outputs[index] = values
            bar.update(1)
    return outputs


def direction_report(gt_direction: str | None, model_dir: str, model_source: str, negate: bool) -> dict:
    """The score-direction block of metrics.json: who points where, and the sign to expect."""
    expected: int | None = None
    if gt_direction in scoring.DIRECTIONS and model_dir in scoring.DIRECTIONS:
        expected = 1 if gt_direction == model_dir else -1
        if negate:
            expected = -expected
    if expected is None:
        note = "direction unknown: the sign of SROCC/PLCC cannot be predicted; read |SROCC|"
    elif expected > 0:
        note = "model and ground truth point the same way: SROCC/PLCC should be positive"
    else:
        note = ("model scores and ground truth point opposite ways (e.g. a quality model on DMOS): "
                "SROCC/PLCC are expected NEGATIVE; the values are reported as computed (use --negate "
                "to flip the predictions)")
    return {"ground_truth": gt_direction or "unknown", "model": model_dir, "model_source": model_source,
            "negated": negate, "expected_sign": expected, "note": note}


def compute_metrics(samples: Sequence[Sample], preds: dict[str, np.ndarray],
                    type_order: Sequence[str] = ()) -> dict:
    """Overall, per-type and within-reference metrics for each scoring (``mean``, ``median``).

    ``within_reference`` (``rankiqa.metrics.within_reference``): per scoring, the correlations inside each
    reference's images (``per_reference``) and their ``mean`` over the references with enough images; ``{}``
    when some sample names no reference (a ``<path> <score>`` list; ``build_report`` warns when only some do).
    """
    truth = np.array([s.score for s in samples])
    types = [s.type for s in samples]
    references = [s.reference for s in samples]
    result: dict = {"overall": {}, "per_type": {}, "within_reference": {}}
    for name in SCORINGS:
        result["overall"][name] = iqa_metrics.metrics(preds[name], truth)
        if all(references):
            result["within_reference"][name] = iqa_metrics.within_reference(preds[name], truth, references)
        if any(types):
            per_type = iqa_metrics.metrics_by_type(preds[name], truth, types)
            # the dataset's own type order when known (e.g. TID2013 01..24), the rest after it
            order = [t for t in type_order if t in per_type] + [t for t in per_type if t not in type_order]
            result["per_type"][name] = {t: per_type[t] for t in order}
        else:
            result["per_type"][name] = {}
    return result


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def per_image_csv(samples: Sequence[Sample], preds: dict[str, np.ndarray], split: int | None = None) -> str:
    """The per-image table as CSV text (``split`` column first when given)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow((["split"] if split is not None else []) + list(PER_IMAGE_COLUMNS))
    for i, s in enumerate(samples):
        writer.writerow(([split] if split is not None else []) + [
            s.path, s.reference, s.type, s.level, repr(s.score),
            repr(float(preds["mean"][i])), repr(float(preds["median"][i]))])
    return buffer.getvalue()


def metrics_markdown(report: dict, type_names: dict[str, str]) -> str:
    """A human-readable Markdown summary of one evaluation (or of the split average)."""
    tables = report["table"] if isinstance(report["table"], list) else [report["table"]]
    lines = [f"# Evaluation: {report.get('dataset') or Path(tables[0]).name}", ""]
    for key in ("model", "deploy", "table", "output_blob", "n_images", "crops", "crop_size", "seed",
                "n_splits"):
        if key in report:
            lines.append(f"- {key}: `{report[key]}`")
    direction = report["direction"]
    lines += [f"- **warning**: {warning}" for warning in report.get("warnings", [])]
    lines += [f"- ground truth: {direction['ground_truth']}; model: {direction['model']} "
              f"({direction['model_source']}); negated: {direction['negated']}",
              f"- expected sign of SROCC/PLCC: {direction['expected_sign']}. {direction['note']}",
              f"- initialisation: {initialisation_text(report.get('initialisation'))}", ""]
    averaged = "n_splits" in report
    lines += ["## Overall", "",
              "| metric | mean of crops | median of crops |" if not averaged else
              "| metric | mean of crops (mean ± std over splits) | median of crops (mean ± std) |",
              "|---|---|---|"]
    for key in ("n", *iqa_metrics.FLOAT_KEYS, "fit_l4", "fit_l5"):
        if key not in report["overall"]["mean"]:
            continue
        cells = [cell_text(report["overall"][name][key], report.get("overall_std", {}).get(name, {}).get(key))
                 for name in SCORINGS]
        lines.append(f"| {iqa_metrics.LABELS[key]} | {cells[0]} | {cells[1]} |")
    within = report.get("within_reference", {}).get("mean", {})
    if within.get("mean"):
        std = report.get("within_reference_std", {}).get("mean", {})
        median = report["within_reference"]["median"]
        cells = " | ".join(cell_text(within["mean"][k], std.get(k)) for k in ("srocc", "plcc", "krocc"))
        label = (f"mean over {within['mean']['n_references']} references" if not averaged else
                 f"mean over the splits of each split's mean ({within['mean']['n_references']} distinct "
                 "references)")
        lines += ["", "## Within each reference (mean of crops)", "",
                  "Correlations inside each reference's distorted images, then their mean over references "
                  "(the overall figures also pool the offsets a model puts between image contents).", "",
                  "| reference | n | SROCC | PLCC | KROCC | SROCC (median scoring) |",
                  "|---|---|---|---|---|---|",
                  f"| {label} | | {cells} | {_fmt(median['mean']['srocc'])} |"]
        for ref, values in within.get("per_reference", {}).items():
            row = " | ".join(_fmt(values[k]) for k in ("srocc", "plcc", "krocc"))
            lines.append(f"| {ref} | {values['n']} | {row} | "
                         f"{_fmt(median['per_reference'][ref]['srocc'])} |")
    per_type = report["per_type"]["mean"]
    if per_type:
        lines += ["", "## Per distortion type (mean of crops)", "",
                  "| type | name | n | SROCC | PLCC | KROCC | SROCC (median scoring) |",
                  "|---|---|---|---|---|---|---|"]
        std = report.get("per_type_std", {}).get("mean", {})
        for code, values in per_type.items():
            row = [cell_text(values[k], std.get(code, {}).get(k)) for k in ("srocc", "plcc", "krocc")]
            median = report["per_type"]["median"][code]["srocc"]
            lines.append(f"| {code} | {type_names.get(code, '')} | {values['n']} | {' | '.join(row)} | "
                         f"{_fmt(median)} |")
    return "\n".join(lines) + "\n"


def cell_text(value: Any, std: float | None) -> str:
    """A value as the tables print it, with ``± std`` when an average over splits gives one."""
    return _fmt(value) if std is None else f"{_fmt(value)} ± {std:.4f}"


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display), imported on first use."""
    import matplotlib  # lazily: plotting is the slowest import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scatter(path: Path, samples: Sequence[Sample], pred: np.ndarray, title: str,
                 colour_by: Sequence[str] | None = None, legend_title: str = "type") -> None:
    """Prediction (mean of crops) against ground truth, coloured by type, with the 4-parameter fit."""
    plt = pyplot()
    truth = np.array([s.score for s in samples])
    groups = list(colour_by) if colour_by is not None else [s.type for s in samples]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    keys = list(dict.fromkeys(groups))
    cmap = plt.get_cmap("tab20" if len(keys) > 10 else "tab10")
    for k, key in enumerate(keys):
        mask = np.array([g == key for g in groups])
        ax.scatter(pred[mask], truth[mask], s=10, alpha=0.7, color=cmap(k % cmap.N), label=key or "all")
    fitted, status = iqa_metrics.fit_logistic(pred, truth, 4)
    order = np.argsort(pred)
    ax.plot(pred[order], fitted[order], color="black", linewidth=1.5, label=f"4-param fit ({status})")
    ax.set_xlabel("prediction (mean of crops)")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    if len(keys) <= 25:
        ax.legend(fontsize=6, ncol=2, title=legend_title, title_fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_srocc_per_type(path: Path, overall: float, per_type: dict[str, float], title: str,
                        overall_std: float | None = None,
                        per_type_std: dict[str, float] | None = None) -> None:
    """Bar chart of SROCC per distortion type (mean scoring), 'all' first; error bars = std over splits."""
    plt = pyplot()
    names = ["all", *per_type]
    values = [overall, *per_type.values()]
    errors = None
    if overall_std is not None:
        errors = [overall_std, *[(per_type_std or {}).get(t, 0.0) for t in per_type]]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(names) + 2), 4))
    colours = ["tab:gray"] + ["tab:blue"] * len(per_type)
    ax.bar(range(len(names)), values, yerr=errors, color=colours, capsize=2)
    ax.set_xticks(range(len(names)), names, rotation=60 if len(names) > 8 else 0, fontsize=7)
    ax.axhline(0.0, color="black", linewidth=0.8)
    low = min(0.0, *values) - 0.05
    ax.set_ylim(max(-1.05, low), 1.05)
    ax.set_ylabel("SROCC (mean of crops)")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _json_text(obj: dict) -> str:
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def write_outputs(out: Path, report: dict, samples: Sequence[Sample], preds: dict[str, np.ndarray],
                  type_names: dict[str, str]) -> None:
    """Write the five result files of one evaluation, each atomically; metrics.json last."""
    title = f"{report.get('dataset') or Path(report['table']).name}: {Path(report['model']).name}"
    # An earlier run's metrics.json beside this run's other files would pass for a finished evaluation.
    (out / "metrics.json").unlink(missing_ok=True)
    atomic_write_text(out / "per_image.csv", per_image_csv(samples, preds))
    atomic_write_text(out / "metrics.md", metrics_markdown(report, type_names))
    plot_scatter(out / "scatter.png", samples, preds["mean"], title)
    per_type = {t: v["srocc"] for t, v in report["per_type"]["mean"].items()}
    plot_srocc_per_type(out / "srocc_per_type.png", report["overall"]["mean"]["srocc"], per_type, title)
    # last: a complete metrics.json means the whole evaluation finished
    atomic_write_text(out / "metrics.json", _json_text(report))


def evaluate_one(scorer: scoring.CropScorer, table: str, model: str, args: argparse.Namespace,
                 model_dir: tuple[str, str] | None = None, progress_desc: str = "eval"
                 ) -> tuple[dict, list[Sample], dict[str, np.ndarray]]:
    """Score one test table and build its report (not yet written)."""
    dataset = dataset_info(args.dataset)
    samples, gt_direction = read_samples(table)
    if gt_direction is None:
        gt_direction = args.gt_direction or (dataset.direction if dataset else None)
    if model_dir is None:
        model_dir = scoring.model_direction(scorer.info, model, args.model_direction)
    started = time.perf_counter()
    outputs = score_samples(scorer, samples, table, progress=not args.quiet, desc=progress_desc)
    seconds = time.perf_counter() - started
    print(f"{len(samples)} images x {scorer.crops} crops in {seconds:.1f} s "
          f"({len(samples) / max(seconds, 1e-9):.2f} images/s, batch {scorer.batch})", file=sys.stderr)
    if not np.all(np.isfinite(outputs)):
        raise InputError(f"the net gave non-finite outputs for {int((~np.isfinite(outputs)).any(1).sum())} "
                         "images (diverged weights?)", model)
    sign = -1.0 if args.negate else 1.0
    preds = {"mean": sign * outputs.mean(axis=1), "median": sign * np.median(outputs, axis=1)}
    direction = direction_report(gt_direction, *model_dir, args.negate)
    report = build_report(scorer.info, model, table, args.dataset, samples, preds, scorer.crops, scorer.seed,
                          direction, dataset.types if dataset else ())
    report["inputs"] = evaluation_inputs(model, scorer.info.path, table, samples, args)
    return report, samples, preds


def evaluation_inputs(model: str, deploy: str, table: str, samples: Sequence[Sample],
                      args: argparse.Namespace) -> dict:
    """What defines one evaluation's numbers (``metrics.json`` ``inputs``): the model, the deploy net and the
    test table (path and SHA-256), the images (a digest of their sizes and times) and the settings that
    change the scores. Two evaluations with equal ``inputs`` give the same results."""
    files = {"model": model, "deploy": deploy, "table": table}
    return {**{key: {"path": str(Path(path).resolve()), "sha256": provenance.sha256_file(path)}
               for key, path in files.items()},
            "images": provenance.sha256_json(provenance.fingerprint({s.path: s.path for s in samples})),
            "crops": args.crops, "seed": args.seed, "negate": bool(args.negate), "dataset": args.dataset,
            "model_direction": args.model_direction, "gt_direction": args.gt_direction}


def _remove_unwritten_splits(out: Path, previous: dict | None, n_splits: int) -> None:
    """Remove the ``split<k>`` results of the earlier split evaluation recorded in ``previous`` (``out``'s
    metrics.json) that this one, of ``n_splits`` splits, does not write again."""
    if previous is None:
        return
    for k in range(n_splits, int(previous.get("n_splits", 0))):
        folder = out / f"split{k}"
        for name in RESULT_FILES:
            (folder / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()


def _replaced_results(out: Path, previous: dict | None, inputs: dict | list) -> None:
    """Say when ``out`` held (``previous``: its metrics.json) the results of an evaluation with other inputs:
    they are replaced."""
    if previous is None:
        return
    old = previous.get("inputs")
    if old is not None and old != inputs:
        before = old if isinstance(old, list) else [old]
        after = inputs if isinstance(inputs, list) else [inputs]
        keys = sorted({key for a, b in zip(before, after, strict=False) for key in {*a, *b}
                       if a.get(key) != b.get(key)} | ({"splits"} if len(before) != len(after) else set()))
        print(f"note: {out}: replacing the results of an evaluation with another {', '.join(keys)}",
              file=sys.stderr)


def build_report(info: scoring.DeployInfo, model: str, table: str, dataset: str | None,
                 samples: Sequence[Sample], preds: dict[str, np.ndarray], crops: int, seed: int,
                 direction: dict, type_order: Sequence[str] = ()) -> dict:
    """The content of metrics.json for one evaluation."""
    report: dict = {
        "model": model, "deploy": info.path, "table": table,
        "dataset": dataset, "output_blob": info.output_blob, "head": info.head_kind,
        "n_images": len(samples), "crops": crops,
        "crop_size": [info.crop_height, info.crop_width], "seed": seed,
        "scoring": "image score = mean of the crop outputs (as the paper); median reported beside",
        "direction": direction,
        "initialisation": scoring.run_record(model).get("initialisation"),
        "labels": iqa_metrics.LABELS,
    }
    report.update(compute_metrics(samples, preds, type_order))
    reason = iqa_metrics.degenerate_reason(preds["mean"], [s.score for s in samples])
    report["warnings"] = [reason] if reason else []
    unnamed = sum(1 for s in samples if not s.reference)
    if 0 < unnamed < len(samples):
        report["warnings"].append(f"{unnamed} of {len(samples)} images name no reference: no "
                                  "within-reference figures")
    return report


def initialisation_text(initialisation: dict | list | None) -> str:
    """One line for ``metrics.md``: where the model's weights started (a list: one per split)."""
    entries = initialisation if isinstance(initialisation, list) else [initialisation]
    texts = [(entry.get("description") if isinstance(entry, dict) else None)
             or "unknown (no run.json of tools/train.py beside the model)" for entry in entries]
    if len(set(texts)) == 1:
        return texts[0]
    return "; ".join(f"split {k}: {text}" for k, text in enumerate(texts))


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else 0.0)


def summarize_splits(reports: list[dict]) -> dict:
    """Mean and sample standard deviation (ddof=1) of every metric over the splits."""
    first = reports[0]
    summary: dict = {key: first[key] for key in ("deploy", "dataset", "output_blob", "head", "crops",
                                                   "crop_size", "seed", "scoring", "direction", "labels")}
    summary.update({"n_splits": len(reports), "model": [r["model"] for r in reports],
                    "warnings": [f"split {k}: {w}" for k, r in enumerate(reports) for w in r["warnings"]],
                    "inputs": [r.get("inputs") for r in reports],
                    "initialisation": [r["initialisation"] for r in reports],
                    "table": [r["table"] for r in reports], "n_images": [r["n_images"] for r in reports],
                    "std": "sample standard deviation over the splits (ddof=1; 0 for one split)",
                    "overall": {}, "overall_std": {}, "per_type": {}, "per_type_std": {},
                    "within_reference": {}, "within_reference_std": {},
                    "splits": [{"table": r["table"], "model": r["model"], "overall": r["overall"]}
                               for r in reports]})
    for name in SCORINGS:
        summary["overall"][name], summary["overall_std"][name] = {}, {}
        for key in iqa_metrics.FLOAT_KEYS:
            mean, std = _mean_std([r["overall"][name][key] for r in reports])
            summary["overall"][name][key], summary["overall_std"][name][key] = mean, std
        summary["overall"][name]["n"] = int(sum(r["overall"][name]["n"] for r in reports))
        types = list(dict.fromkeys(t for r in reports for t in r["per_type"][name]))
        summary["per_type"][name], summary["per_type_std"][name] = {}, {}
        for code in types:
            present = [r["per_type"][name][code] for r in reports if code in r["per_type"][name]]
            entry: dict = {"n": int(sum(p["n"] for p in present)), "n_splits": len(present)}
            std_entry: dict = {}
            for key in iqa_metrics.FLOAT_KEYS:
                entry[key], std_entry[key] = _mean_std([p[key] for p in present])
            summary["per_type"][name][code], summary["per_type_std"][name][code] = entry, std_entry
        # The references differ from split to split (and one can be tested in several): what averages is
        # each split's mean over its own references; n_references counts the distinct ones.
        within = [r.get("within_reference", {}).get(name, {}) for r in reports]
        if within and all(w.get("mean") for w in within):
            distinct = {ref for w in within for ref, values in w["per_reference"].items()
                        if values["n"] >= iqa_metrics.MIN_REFERENCE_IMAGES}
            entry, std_entry = {"n_references": len(distinct), "n_splits": len(within)}, {}
            for key in iqa_metrics.WITHIN_KEYS:
                entry[key], std_entry[key] = _mean_std([w["mean"][key] for w in within])
            summary["within_reference"][name] = {"mean": entry, "per_reference": {}}
            summary["within_reference_std"][name] = std_entry
    return summary


def evaluate_table(out: Path, deploy: str, model: str, table: str, args: argparse.Namespace, batch: int
                   ) -> dict:
    """One evaluation (``make eval`` without splits): score ``table`` with ``model`` and write its files to
    ``out`` (saying when they replace those of an evaluation with other inputs); return its report."""
    if SPLIT_PLACEHOLDER in table or SPLIT_PLACEHOLDER in model:
        raise InputError(f"{SPLIT_PLACEHOLDER} in --table/--model needs --splits N")
    dataset = dataset_info(args.dataset)
    net, info = scoring.load_net(deploy, model, args.gpu)
    scorer = scoring.CropScorer(net, info, args.crops, batch, args.seed)
    report, samples, preds = evaluate_one(scorer, table, model, args)
    previous = provenance.read_json(out / "metrics.json")
    _replaced_results(out, previous, report["inputs"])
    _remove_unwritten_splits(out, previous, 0)
    write_outputs(out, report, samples, preds, dict(dataset.type_names) if dataset else {})
    return report


def evaluate_splits(out: Path, deploy: str, model: str, table: str, n_splits: int, args: argparse.Namespace,
                    batch: int) -> dict:
    """Splits 0..n_splits-1 (``{split}`` in ``table`` and optionally ``model``): each split's files in
    ``<out>/split<k>/``, then the mean and standard deviation over the splits (``summarize_splits``) and the
    pooled per-image table and plots in ``out``, ``metrics.json`` last; return the summary."""
    if n_splits < 1:
        raise InputError("--splits must be positive")
    if SPLIT_PLACEHOLDER not in table:
        raise InputError(f"--splits needs {SPLIT_PLACEHOLDER} in --table, e.g. data/ft/tid2013/split"
                         f"{SPLIT_PLACEHOLDER}/test.csv", table)
    dataset = dataset_info(args.dataset)
    type_names = dict(dataset.type_names) if dataset else {}
    # Every split's table read before anything is removed or written: a bad row in a later split would
    # otherwise stop the run with the first splits' results rewritten and no summary.
    for k in range(n_splits):
        read_samples(table.replace(SPLIT_PLACEHOLDER, str(k)))
    previous = provenance.read_json(out / "metrics.json")
    _remove_unwritten_splits(out, previous, n_splits)
    # The summary of an earlier evaluation (maybe of another model) beside split results being rewritten
    # would pass for this one, finished, if the loop below stopped half-way.
    for name in ("metrics.json", "metrics.md"):
        (out / name).unlink(missing_ok=True)
    reports, split_samples, all_preds, split_ids = [], [], [], []
    loaded: tuple[str, Any] | None = None
    for k in range(n_splits):
        split_table = table.replace(SPLIT_PLACEHOLDER, str(k))
        split_model = model.replace(SPLIT_PLACEHOLDER, str(k))
        if loaded is None or loaded[0] != split_model:  # one model for all splits is loaded once
            net, info = scoring.load_net(deploy, split_model, args.gpu)
            loaded = (split_model, scoring.CropScorer(net, info, args.crops, batch, args.seed))
        report, samples, preds = evaluate_one(loaded[1], split_table, split_model, args,
                                              progress_desc=f"split {k}")
        write_outputs(out / f"split{k}", report, samples, preds, type_names)
        reports.append(report)
        split_samples.append(samples)
        all_preds.append(preds)
        split_ids += [f"split {k}"] * len(samples)
    summary = summarize_splits(reports)
    _replaced_results(out, previous, summary["inputs"])
    pooled = {name: np.concatenate([p[name] for p in all_preds]) for name in SCORINGS}
    buffer = io.StringIO()
    for k, (samples, preds) in enumerate(zip(split_samples, all_preds, strict=True)):
        text = per_image_csv(samples, preds, split=k)
        buffer.write(text if k == 0 else text.split("\n", 1)[1])
    atomic_write_text(out / "per_image.csv", buffer.getvalue())
    atomic_write_text(out / "metrics.md", metrics_markdown(summary, type_names))
    title = f"{args.dataset or 'test'}: {n_splits} splits"
    pooled_samples = [s for samples in split_samples for s in samples]
    plot_scatter(out / "scatter.png", pooled_samples, pooled["mean"], title, colour_by=split_ids,
                 legend_title="split")
    plot_srocc_per_type(out / "srocc_per_type.png", summary["overall"]["mean"]["srocc"],
                        {t: v["srocc"] for t, v in summary["per_type"]["mean"].items()}, title,
                        summary["overall_std"]["mean"]["srocc"],
                        {t: v["srocc"] for t, v in summary["per_type_std"]["mean"].items()})
    atomic_write_text(out / "metrics.json", _json_text(summary))
    return summary
