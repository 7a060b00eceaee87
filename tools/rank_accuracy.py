"""Pairwise ranking accuracy of a model on a rank set (``make rank_accuracy``): the ranking stage's metric.

    python -m tools.rank_accuracy --deploy prototxts/shallow/rank_deploy.prototxt \\
        --model runs/rank_tid2013_shallow/snapshots/x.caffemodel --ranks data/ranks/tid2013 \\
        [--split test] [--out results/rank_accuracy/<...>] [--crops 10] [--seed 0]

Every image of the rank set's ``manifest.csv`` (optionally one split) is scored with the evaluation
protocol (random crops, mean of the crop outputs); inside each (reference, distortion type) every pair of
levels is checked (``rankiqa.rank_accuracy``). The crop windows are drawn per reference, so every level of a
reference is scored on the same windows (a paired comparison: the levels differ only by their distortion);
images of one reference must then have one size (a rank set's do). Works for ranking and fine-tuned
heads: the model's score direction comes from ``rankiqa.scoring.model_direction`` (``--direction``
overrides).

Outputs under ``--out``: ``rank_accuracy.csv`` (type, pairs, correct, references, accuracy; ``overall``
last), ``rank_accuracy.json`` (the settings, the SHA-256 of the model, deploy net and rank table, the
accuracies; written last), ``rank_accuracy.png`` (a bar per type), ``scores.csv`` (every image's score).
Without ``--out``: ``results/rank_accuracy/<model>-<rank set>[-<split>]-<digest>`` (``default_out``), one
folder per model, rank set and scoring settings, so that scoring another rank set or another model of the
same file name (every run's ``rank_iter_N.caffemodel``) does not replace an earlier result.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rankiqa import rank_accuracy as ra
from rankiqa import scoring
from rankiqa.errors import InputError, cli_main
from rankiqa.fsutil import atomic_write_text
from rankiqa.image_io import read_bgr
from rankiqa.manifest import MANIFEST_NAME
from rankiqa.provenance import sha256_file, sha256_json

#: Where ``default_out`` puts its folders (relative to the working directory, the repository root for make).
RESULTS_DIR = Path("results/rank_accuracy")
#: The columns of ``scores.csv``.
SCORES_COLUMNS = ("path", "score")
#: The inputs of a scoring that are files: ``default_out`` resolves their paths, and ``rank_accuracy.json``
#: records their SHA-256 (``sha256``), so that a model, net or rank table since replaced under the same path
#: is told apart (``record_is_current``).
FILE_INPUTS = ("model", "deploy", "ranks")


def model_rank_accuracy(deploy: str, model: str, rows: Sequence[ra.RankedImage], source: str,
                        crops: int = 10, batch: int = 1, seed: int = 0, gpu: int = -1,
                        direction: str | None = None, progress: bool = True,
                        ) -> tuple[dict[str, ra.TypeAccuracy], dict[str, float], str]:
    """Score ``rows`` with the model; returns (accuracy per type, score per path, model direction)."""
    net, info = scoring.load_net(deploy, model, gpu)
    model_dir, why = scoring.model_direction(info, model, direction)
    if model_dir not in scoring.DIRECTIONS:
        raise InputError(f"the direction of this model's output is unknown ({why}): give --direction", model)
    scorer = scoring.CropScorer(net, info, crops, batch, seed)
    references = sorted({row.reference for row in rows})
    owner = {row.path: references.index(row.reference) for row in rows}
    paths = list(owner)  # the pristine image appears once per type: scored once
    lines: dict[str, int | None] = {}
    for row in rows:  # an image listed on several rows is named by the first
        lines.setdefault(row.path, row.line)
    sizes: dict[int, tuple[int, int]] = {}

    def load(path: str) -> np.ndarray:
        try:
            image = read_bgr(path)
        except InputError as err:  # it names the image alone: say which row of the table listed it
            raise InputError(f"{err.message}: {path}", source, lines[path]) from None
        if not scorer.fits(image):
            raise InputError(f"image {image.shape[1]}x{image.shape[0]} (WxH) is smaller than the "
                             f"{info.crop_width}x{info.crop_height} crop: {path}", source, lines[path])
        if sizes.setdefault(owner[path], image.shape[:2]) != image.shape[:2]:
            raise InputError(f"images of one reference differ in size (paired crops need one size): {path}",
                             source, lines[path])
        return image

    items = ((path, owner[path], future.result()) for path, future in scoring.prefetch(load, paths))
    scores: dict[str, float] = {}
    with tqdm(total=len(paths), desc="rank accuracy", unit="img", disable=not progress) as bar:
        for path, values in scorer.score(items):
            scores[path] = float(np.mean(values))
            bar.update(1)
    result = ra.pairwise_accuracy(rows, scores, higher_better=model_dir == "higher_better")
    return result, scores, model_dir


def default_out(record: dict) -> Path:
    """The results folder of one scoring when ``--out`` is not given: ``RESULTS_DIR /
    <model file stem>-<rank set name>[-<split>]-<8 hex digits>``, the digest over ``record`` (the resolved
    model, deploy net and rank table paths, the split and the scoring settings). The rank set's name is its
    folder for a ``manifest.csv``, else the CSV's stem."""
    resolved = {**record, **{key: str(Path(record[key]).resolve()) for key in FILE_INPUTS}}
    table = Path(resolved["ranks"])  # resolved: "--ranks ." still names its folder
    name = table.parent.name if table.name == MANIFEST_NAME else table.stem
    parts = [Path(record["model"]).stem, name] + ([record["split"]] if record.get("split") else [])
    return RESULTS_DIR / "-".join([*parts, sha256_json(resolved)[:8]])


def run_inputs(args: argparse.Namespace) -> dict:
    """The settings of one scoring as asked on the command line (``default_out``'s digest is over them): the
    model, the deploy net, the rank table (a folder's ``manifest.csv``), the split, crops, seed, direction."""
    ranks = Path(args.ranks)
    table = ranks / MANIFEST_NAME if ranks.is_dir() else ranks
    return {"model": args.model, "deploy": args.deploy, "ranks": str(table), "split": args.split,
            "crops": args.crops, "seed": args.seed, "direction": args.direction}


def input_hashes(inputs: dict) -> dict[str, str]:
    """The SHA-256 of each file among ``inputs`` (``FILE_INPUTS``): ``rank_accuracy.json``'s ``sha256``."""
    return {key: sha256_file(inputs[key]) for key in FILE_INPUTS}


def record_is_current(record: dict | None, args: argparse.Namespace) -> bool:
    """Whether ``record`` (a ``rank_accuracy.json``) is the result of a scoring with ``args``' settings, of
    files that still hold what they held then; False for None, or for a record made before the files' hashes
    were recorded."""
    if record is None:
        return False
    inputs = run_inputs(args)
    if any(record.get(key) != value for key, value in inputs.items()):
        return False
    try:
        hashes = input_hashes(inputs)
    except OSError:  # a file gone: nothing to reuse (scoring again says what is missing)
        return False
    return record.get("sha256") == hashes


def write_outputs(out: Path, result: dict[str, ra.TypeAccuracy], scores: dict[str, float],
                  record: dict, title: str) -> None:
    """The CSV, plot, per-image scores and JSON (each written atomically; the JSON last)."""
    # An earlier run's record beside this run's other files would pass for a finished scoring.
    (out / "rank_accuracy.json").unlink(missing_ok=True)
    atomic_write_text(out / "rank_accuracy.csv", ra.accuracy_csv(result))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")  # quotes a path with a comma or a quote
    writer.writerow(SCORES_COLUMNS)
    writer.writerows((path, repr(score)) for path, score in scores.items())
    atomic_write_text(out / "scores.csv", buffer.getvalue())
    ra.plot_accuracy(result, out / "rank_accuracy.png", title)
    record = {**record, "accuracy": ra.accuracy_dict(result),
              "pairs": {t: a.pairs for t, a in result.items()}}
    atomic_write_text(out / "rank_accuracy.json", json.dumps(record, indent=2) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.rank_accuracy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deploy", required=True, help="deploy prototxt of the model")
    parser.add_argument("--model", required=True, help="caffemodel")
    parser.add_argument("--ranks", required=True,
                        help="rank set folder (with manifest.csv) or a manifest-like CSV "
                             "(reference,type,level,path)")
    parser.add_argument("--split", default=None, help="only this split of the manifest (train or test)")
    parser.add_argument("--out", default=None,
                        help="results folder (default: one per model, rank set and settings, see above)")
    parser.add_argument("--direction", choices=scoring.DIRECTIONS, default=None,
                        help="direction of the model's output (default: inferred)")
    scoring.add_crop_arguments(parser)
    parser.set_defaults(crops=10, batch=1)
    return parser


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    scoring.check_crop_arguments(args)
    inputs = run_inputs(args)
    table = Path(inputs["ranks"])
    out = Path(args.out) if args.out else default_out(inputs)
    rows = ra.read_rank_table(table, args.split)
    result, scores, model_dir = model_rank_accuracy(args.deploy, args.model, rows, str(table), args.crops,
                                                    args.batch, args.seed, args.gpu, args.direction,
                                                    progress=not args.quiet)
    # The run's settings as asked (the folder's digest is over them), with what the model's direction
    # resolved to and the contents of the files read.
    record = {**inputs, "crop_windows": "per reference (paired)", "model_direction": model_dir,
              "sha256": input_hashes(inputs)}
    title = f"{Path(args.model).name} on {table.parent.name}" + (f" ({args.split})" if args.split else "")
    write_outputs(out, result, scores, record, title)
    for item in result.values():
        print(f"{item.type:>8}  {item.accuracy:.3f}  ({item.correct}/{item.pairs})")
    print(f"-> {out / 'rank_accuracy.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
