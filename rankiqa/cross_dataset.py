"""Cross-dataset matrix: each model evaluated on every image of each target dataset (``make cross``).

The paper's cross-dataset protocol: a model fine-tuned on one database is tested on *all* images of
another (no split). Every (model, dataset) cell is one run of the project's evaluation
(``rankiqa.evaluation.evaluate_one``: random crops, mean of the crop outputs, SROCC/PLCC/KROCC on raw
outputs) on the dataset's ``table.csv`` (``make ft_lists``), and writes that evaluation's files to
``<out>/<model>/<dataset>/``.

Score directions: a model scores higher = better (trained on MOS, or a ranking model) or higher = worse
(trained on DMOS); a dataset's labels are MOS-like or DMOS-like (``direction`` of its table). A model
trained on LIVE's DMOS evaluated on TID2013's MOS gives a *negative* SROCC when it ranks well. Each cell
keeps the raw SROCC/PLCC (as computed) and the direction-corrected ones: the raw value times the expected
sign (``rankiqa.evaluation.direction_report``: +1 when model and labels point the same way, -1 when
opposite), so that 1 is a perfect ranking in every cell. Where the model's direction is unknown
(``rankiqa.scoring.model_direction``: a fine-tuned head without a training record and no direction given)
the corrected value is left empty.

A model evaluated on the dataset it was fine-tuned on (its ``run.json``) is marked: all images include its
training images, so that cell is not a held-out result.

Outputs under ``out``: ``matrix.csv`` (one row per cell), ``matrix.md`` (the corrected and raw SROCC
tables, the directions, the marks), ``matrix.json``, ``heatmap.png`` (corrected SROCC; raw where the
direction is unknown, marked), and ``<model>/<dataset>/`` per cell; the matrix files last.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.datasets import DATASETS
from data_prep.make_ft_lists import lists_record
from rankiqa import evaluation, scoring
from rankiqa.errors import InputError
from rankiqa.fsutil import atomic_path, atomic_write_text

CSV_COLUMNS = ("model", "dataset", "n_images", "model_direction", "direction_source", "label_direction",
               "expected_sign", "srocc_raw", "srocc_corrected", "plcc_raw", "plcc_corrected", "krocc_raw",
               "krocc_corrected", "same_dataset", "model_path", "table")
#: The files of the matrix itself (``write_matrix``), written after every cell's evaluation.
MATRIX_FILES = ("matrix.csv", "matrix.md", "heatmap.png", "matrix.json")


@dataclass(frozen=True)
class ModelSpec:
    """A model of the matrix: its label (a folder name), caffemodel, deploy net, and a direction given on
    the command line (None: ``rankiqa.scoring.model_direction`` infers it)."""

    name: str
    model: str
    deploy: str
    direction: str | None = None


@dataclass(frozen=True)
class TargetSpec:
    """A target dataset: its name (a ``data_prep.datasets`` key for type names, or any label) and the
    table of all its images (``table.csv`` of ``make ft_lists``)."""

    name: str
    table: str
    #: The dataset folder the table must have been made from (``DATA_<name>`` of ``make cross``), if given.
    data: str | None = None


@dataclass(frozen=True)
class Cell:
    """One (model, dataset) evaluation. ``expected_sign`` is +1, -1 or None (direction unknown); the
    ``*_corrected`` values are the raw ones times it (None when it is None)."""

    model: str
    dataset: str
    n_images: int
    model_direction: str
    direction_source: str
    label_direction: str
    expected_sign: int | None
    srocc_raw: float
    srocc_corrected: float | None
    plcc_raw: float
    plcc_corrected: float | None
    krocc_raw: float
    krocc_corrected: float | None
    same_dataset: bool
    model_path: str
    table: str


def model_label(model: str | Path) -> str:
    """A readable folder name for a model: its training run's folder (``runs/<run>/snapshots/x``) plus the
    iteration, else the file's stem; characters other than letters, digits, ``._-`` become ``_``."""
    path = Path(model)
    label = path.stem
    if path.parent.name == "snapshots":
        match = re.search(r"_iter_(\d+)$", path.stem)
        label = path.parent.parent.name + (f"_iter{match.group(1)}" if match else f"_{path.stem}")
    return re.sub(r"[^A-Za-z0-9._-]", "_", label) or "model"


def model_specs(models: Sequence[str], deploys: Sequence[str], directions: Sequence[str] = ()
                ) -> list[ModelSpec]:
    """Pair models with deploy nets and directions, each one for all models or one per model (in order);
    labels made unique by a ``-<k>`` suffix. ``InputError`` for other counts or an unknown direction."""
    if not models:
        raise InputError("no model given")
    per_model = {}
    for what, values in (("--deploy", deploys), ("--model-direction", directions)):
        if len(values) not in ((0, 1, len(models)) if what == "--model-direction" else (1, len(models))):
            raise InputError(f"{len(values)} {what} for {len(models)} models: give one for all or one per "
                             "model")
        per_model[what] = list(values) * len(models) if len(values) == 1 else list(values)
    for direction in directions:
        if direction not in scoring.DIRECTIONS:
            raise InputError(f"model direction {direction!r} must be one of {', '.join(scoring.DIRECTIONS)}")
    specs: list[ModelSpec] = []
    seen: dict[str, int] = {}
    for k, model in enumerate(models):
        label = model_label(model)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}-{seen[label]}"
        direction = per_model["--model-direction"][k] if per_model["--model-direction"] else None
        specs.append(ModelSpec(label, str(model), str(per_model["--deploy"][k]), direction))
    return specs


def parse_target(text: str) -> TargetSpec:
    """``NAME=TABLE`` (a dataset name and its table.csv) -> ``TargetSpec``."""
    name, sep, table = text.partition("=")
    if not sep or not name.strip() or not table.strip():
        raise InputError(f"dataset {text!r}: expected NAME=path/to/table.csv")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name.strip()):
        raise InputError(f"dataset name {name!r}: letters, digits and ._- only (it names a folder)")
    return TargetSpec(name.strip(), table.strip())


def with_data(targets: Sequence[TargetSpec], data: Sequence[str]) -> list[TargetSpec]:
    """``targets`` with the dataset folders of ``data`` (``NAME=DIR`` each) attached by name; ``InputError``
    for a malformed entry or a name that is not a target."""
    folders: dict[str, str] = {}
    for text in data:
        name, sep, folder = text.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise InputError(f"data folder {text!r}: expected NAME=path/to/dataset")
        folders[name.strip()] = folder.strip()
    unknown = sorted(set(folders) - {t.name for t in targets})
    if unknown:
        raise InputError(f"data folder for {', '.join(unknown)}, which is not among the datasets")
    return [replace(t, data=folders.get(t.name, t.data)) for t in targets]


def _known_dataset(name: str) -> str | None:
    """``name`` when ``data_prep.datasets`` knows it (type names, type order), else None."""
    return name if name in DATASETS else None


def _evaluation_args(target: TargetSpec, spec: ModelSpec, crops: int, seed: int, progress: bool
                     ) -> argparse.Namespace:
    """The settings ``rankiqa.evaluation.evaluate_one`` reads, as its command line would give them."""
    return argparse.Namespace(dataset=_known_dataset(target.name), gt_direction=None,
                              model_direction=spec.direction, negate=False, quiet=not progress, crops=crops,
                              seed=seed)


def _corrected(value: float, sign: int | None) -> float | None:
    return None if sign is None else float(value) * sign


def _check_inputs(models: Sequence[ModelSpec], targets: Sequence[TargetSpec]) -> None:
    """Everything that can be checked before the first (long) evaluation: tables readable, labels unique,
    model and deploy files there."""
    if not targets:
        raise InputError("no dataset given")
    for kind, names in (("model", [m.name for m in models]), ("dataset", [t.name for t in targets])):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InputError(f"{kind} name(s) given twice: {', '.join(duplicates)}")
    for target in targets:
        evaluation.read_samples(target.table)
        # A table made from another folder than the one given would be scored in its place, silently.
        folder = Path(target.table).parent
        record = lists_record(folder) or {}
        made_from = record.get("data")
        if target.data is not None and made_from not in (None, str(Path(target.data).resolve())):
            # the lists again as they are, from the other folder: same dataset, folder and number of splits
            remake = (f"make ft_lists DATASET={record.get('dataset', target.name)} DATA={target.data} "
                      f"FT_DIR={folder} SPLITS={record.get('splits', 1)}")
            raise InputError(f"made from {made_from}, not from {target.data} (dataset {target.name}): make "
                             f"its lists from that folder first ({remake}; they replace these) or leave the "
                             "folder out", target.table)
    for spec in models:
        for what, path in (("caffemodel", spec.model), ("deploy prototxt", spec.deploy)):
            if not Path(path).is_file():
                raise InputError(f"{what} not found (model {spec.name})", path)


ScorerLoader = Callable[[ModelSpec], Any]


def caffe_scorer_loader(crops: int, batch: int, seed: int, gpu: int = -1) -> ScorerLoader:
    """The scorer of a model as ``make eval`` builds it: the deploy net with the caffemodel's weights
    (``rankiqa.scoring.load_net``, checked first) in a ``CropScorer``."""

    def load(spec: ModelSpec) -> Any:
        net, info = scoring.load_net(spec.deploy, spec.model, gpu)
        return scoring.CropScorer(net, info, crops, batch, seed)

    return load


def evaluate_matrix(models: Sequence[ModelSpec], targets: Sequence[TargetSpec], out: str | Path,
                    load_scorer: ScorerLoader, progress: bool = False) -> list[Cell]:
    """Evaluate every model on every target (models in the outer loop: each net is built once) and write
    each cell's evaluation files to ``<out>/<model>/<dataset>/``; return the cells in that order.

    ``load_scorer`` builds a model's scorer (:func:`caffe_scorer_loader`, or any object with the
    ``CropScorer`` interface). Bad input raises ``InputError`` before any model is scored.
    """
    _check_inputs(models, targets)
    out = Path(out)
    cells: list[Cell] = []
    for spec in models:
        scorer = load_scorer(spec)
        trained_on = scoring.run_record(spec.model).get("dataset")
        for target in targets:
            args = _evaluation_args(target, spec, scorer.crops, scorer.seed, progress)
            report, samples, preds = evaluation.evaluate_one(scorer, target.table, spec.model, args,
                                                           progress_desc=f"{spec.name} on {target.name}")
            type_names = dict(DATASETS[args.dataset].type_names) if args.dataset else {}
            evaluation.write_outputs(out / spec.name / target.name, report, samples, preds, type_names)
            direction = report["direction"]
            overall = report["overall"]["mean"]
            sign = direction["expected_sign"]
            cells.append(Cell(
                model=spec.name, dataset=target.name, n_images=report["n_images"],
                model_direction=direction["model"], direction_source=direction["model_source"],
                label_direction=direction["ground_truth"], expected_sign=sign,
                srocc_raw=overall["srocc"], srocc_corrected=_corrected(overall["srocc"], sign),
                plcc_raw=overall["plcc"], plcc_corrected=_corrected(overall["plcc"], sign),
                krocc_raw=overall["krocc"], krocc_corrected=_corrected(overall["krocc"], sign),
                same_dataset=trained_on == target.name, model_path=spec.model, table=target.table))
    return cells


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def matrix_csv(cells: Sequence[Cell]) -> str:
    """One row per cell (``CSV_COLUMNS``), values in full precision, empty where unknown."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for cell in cells:
        row = asdict(cell)
        writer.writerow(["" if row[c] is None else (repr(row[c]) if isinstance(row[c], float) else row[c])
                         for c in CSV_COLUMNS])
    return buffer.getvalue()


def _grid(cells: Sequence[Cell]) -> tuple[list[str], list[str], dict[tuple[str, str], Cell]]:
    models = list(dict.fromkeys(c.model for c in cells))
    datasets = list(dict.fromkeys(c.dataset for c in cells))
    return models, datasets, {(c.model, c.dataset): c for c in cells}


def matrix_markdown(cells: Sequence[Cell], crops: int, seed: int) -> str:
    """The matrix as Markdown: direction-corrected SROCC, raw SROCC, PLCC, and where the directions come
    from; ``*`` marks a model on the dataset it was fine-tuned on (training images included)."""
    models, datasets, grid = _grid(cells)
    header = "| model | " + " | ".join(datasets) + " |"
    rule = "|---|" + "---|" * len(datasets)
    lines = ["# Cross-dataset evaluation", "",
             f"Every model on every image of each dataset (its `table.csv`), {crops} random crops per image "
             f"(seed {seed}), score = mean of the crop outputs; correlations on raw outputs.", "",
             "Direction-corrected = raw x expected sign (+1 when the model and the labels point the same "
             "way, -1 when opposite), so that 1 is a perfect ranking everywhere; empty where the model's "
             "direction is unknown. `*`: the dataset the model was fine-tuned on (all images, its training "
             "images included: not a held-out result).", ""]

    def table(title: str, value: Callable[[Cell], float | None]) -> None:
        lines.extend([f"## {title}", "", header, rule])
        for model in models:
            row = []
            for dataset in datasets:
                cell = grid.get((model, dataset))
                text = "" if cell is None else _fmt(value(cell))
                row.append(text + ("*" if cell is not None and cell.same_dataset and text else ""))
            lines.append(f"| {model} | " + " | ".join(row) + " |")
        lines.append("")

    table("SROCC, direction-corrected", lambda c: c.srocc_corrected)
    table("SROCC, raw (as computed)", lambda c: c.srocc_raw)
    table("PLCC, direction-corrected", lambda c: c.plcc_corrected)
    table("PLCC, raw (as computed)", lambda c: c.plcc_raw)
    lines.extend(["## Directions", "", "| model | scores | from |", "|---|---|---|"])
    for model in models:
        first = next(c for c in cells if c.model == model)
        lines.append(f"| {model} | {first.model_direction} | {first.direction_source} |")
    lines.extend(["", "| dataset | labels | images |", "|---|---|---|"])
    for dataset in datasets:
        first = next(c for c in cells if c.dataset == dataset)
        lines.append(f"| {dataset} | {first.label_direction} | {first.n_images} |")
    return "\n".join(lines) + "\n"


def plot_heatmap(path: Path, cells: Sequence[Cell]) -> None:
    """Direction-corrected SROCC per (model, dataset), colour -1..1, the value (and the raw one) in each
    square; a square whose direction is unknown shows the raw value with ``?``, one on the model's own
    dataset a ``*``."""
    plt = evaluation.pyplot()
    models, datasets, grid = _grid(cells)
    values = np.full((len(models), len(datasets)), np.nan)
    fig, ax = plt.subplots(figsize=(1.6 * len(datasets) + 3.5, 0.7 * len(models) + 2.0))
    for i, model in enumerate(models):
        for j, dataset in enumerate(datasets):
            cell = grid.get((model, dataset))
            if cell is None:
                continue
            shown = cell.srocc_corrected if cell.srocc_corrected is not None else cell.srocc_raw
            values[i, j] = shown
            mark = ("?" if cell.srocc_corrected is None else "") + ("*" if cell.same_dataset else "")
            text = f"{shown:.3f}{mark}\n(raw {cell.srocc_raw:.3f})"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if abs(shown) > 0.6 else "black")
    image = ax.imshow(values, cmap="RdBu", vmin=-1.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_yticks(range(len(models)), models, fontsize=7)
    ax.set_xlabel("evaluated on (all images)")
    ax.set_title("SROCC, direction-corrected (? = direction unknown: raw; * = its own dataset)", fontsize=9)
    fig.colorbar(image, ax=ax, label="SROCC")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_matrix(out: str | Path, cells: Sequence[Cell], crops: int, seed: int) -> None:
    """Write ``MATRIX_FILES`` (each atomically; ``matrix.json`` last: its presence means the matrix is
    complete)."""
    out = Path(out)
    (out / "matrix.json").unlink(missing_ok=True)
    atomic_write_text(out / "matrix.csv", matrix_csv(cells))
    atomic_write_text(out / "matrix.md", matrix_markdown(cells, crops, seed))
    plot_heatmap(out / "heatmap.png", cells)
    record = {"crops": crops, "seed": seed, "cells": [asdict(c) for c in cells]}
    atomic_write_text(out / "matrix.json", json.dumps(record, indent=2, allow_nan=False) + "\n")
