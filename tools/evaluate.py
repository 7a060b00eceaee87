"""Evaluate a model on an IQA test set with the paper's protocol (``make eval``): a thin command over
``rankiqa.evaluation`` (crops, mean of the crop outputs, SROCC/KROCC/PLCC on raw outputs, overall, per
distortion type and inside each reference; the expected sign of the correlations stated, never flipped
unless ``--negate``).

Outputs under ``--out``: ``metrics.json``, ``per_image.csv``, ``metrics.md``, ``scatter.png``,
``srocc_per_type.png``. With ``--splits N``, ``--table`` (and optionally ``--model``) hold ``{split}``,
replaced by 0..N-1: each split gets those files in ``<out>/split<k>/`` and ``<out>/`` gets the mean and
standard deviation over the splits.

Initialisation: when the model was written by ``tools/train.py`` (``<run>/snapshots/``), the start of its
weights as that run's ``run.json`` records it (ImageNet weights, random initialisation, the ranking model
and how its ranking started) goes into ``metrics.json`` (``initialisation``) and ``metrics.md``.

Input: a test table CSV (``reference,type,level,path,score,direction``, docs/DESIGN.md) or a
``<path> <score>`` list (no per-type metrics; direction from ``--dataset`` or ``--gt-direction``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rankiqa import evaluation, scoring
from rankiqa.errors import InputError, cli_main


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``make eval``."""
    parser = argparse.ArgumentParser(prog="python -m tools.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deploy", required=True,
                        help="deploy prototxt (input size and score blob are read from it)")
    parser.add_argument("--model", required=True, help="caffemodel (may hold {split} with --splits)")
    parser.add_argument("--table", required=True,
                        help="test table CSV (data/ft/<ds>/split<k>/test.csv) or '<path> <score>' list; "
                             "holds {split} with --splits")
    parser.add_argument("--out", required=True, help="results folder, e.g. results/<run>")
    parser.add_argument("--one-crop-per-forward", action="store_true",
                        help="one crop per forward pass, as the original (same crops, same scores; slow)")
    parser.add_argument("--dataset", default=None,
                        help="dataset name (tid2013, live, csiq, kadid, mlive): type names, and the score "
                             "direction of a plain list")
    parser.add_argument("--negate", action="store_true",
                        help="flip the sign of the predictions before metrics")
    parser.add_argument("--model-direction", "--direction", dest="model_direction",
                        choices=scoring.DIRECTIONS, default=None,
                        help="direction of the model's output (default: inferred, see "
                             "rankiqa/scoring.model_direction)")
    parser.add_argument("--gt-direction", choices=scoring.DIRECTIONS, default=None,
                        help="direction of the ground truth of a plain list (a table CSV states it)")
    parser.add_argument("--splits", type=int, default=0,
                        help="evaluate splits 0..N-1 ({split} in --table/--model) and report mean and std")
    scoring.add_crop_arguments(parser)
    return parser


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    """``make eval``: one evaluation, or ``--splits N`` of them and their mean (``rankiqa.evaluation``)."""
    args = build_parser().parse_args(argv)
    scoring.check_crop_arguments(args)
    batch = 1 if args.one_crop_per_forward else args.batch
    out = Path(args.out)
    if args.splits < 0:
        raise InputError("--splits must be positive")
    if args.splits:
        report = evaluation.evaluate_splits(out, args.deploy, args.model, args.table, args.splits, args,
                                            batch)
    else:
        report = evaluation.evaluate_table(out, args.deploy, args.model, args.table, args, batch)
    _print_summary(report, out)
    return 0


def _print_summary(report: dict, out: Path) -> None:
    """The warnings on stderr, the overall correlations on stdout."""
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    overall = report["overall"]["mean"]
    std = report.get("overall_std", {}).get("mean", {})
    parts = [f"{key.upper()} {evaluation.cell_text(overall[key], std.get(key))}"
             for key in ("srocc", "plcc", "krocc")]
    print(f"{', '.join(parts)} (mean of crops; expected sign {report['direction']['expected_sign']})"
          f" -> {out}/metrics.json")


if __name__ == "__main__":
    sys.exit(main())
