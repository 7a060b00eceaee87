"""Cross-dataset matrix (``make cross``): every model on every image of each dataset, raw and
direction-corrected SROCC/PLCC, as Markdown, CSV and a heatmap (``rankiqa.cross_dataset``).

    python -m tools.cross_dataset --model runs/ft_live_vgg16_split0/snapshots/x.caffemodel
        --model y.caffemodel --deploy prototxts/vgg16/ft_deploy.prototxt [--deploy ... one per model]
        --dataset tid2013=data/ft/tid2013/table.csv --dataset live=data/ft/live/table.csv
        --out results/cross [--model-direction higher_better|lower_better ...]
        [--crops 30 --batch 60 --seed 0]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rankiqa import cross_dataset, scoring
from rankiqa.errors import cli_main


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``make cross``."""
    parser = argparse.ArgumentParser(prog="python -m tools.cross_dataset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="caffemodel (repeat for each model)")
    parser.add_argument("--deploy", action="append", required=True,
                        help="deploy prototxt: one for all models, or one per model in their order")
    parser.add_argument("--dataset", action="append", required=True, type=cross_dataset.parse_target,
                        help="NAME=path/to/table.csv (all images of the dataset; repeat for each)")
    parser.add_argument("--model-direction", action="append", default=[], choices=scoring.DIRECTIONS,
                        help="direction of a model's output: one for all or one per model (default: "
                             "inferred, see rankiqa/scoring.model_direction)")
    parser.add_argument("--data", action="append", default=[], metavar="NAME=DIR",
                        help="the folder a dataset's table must have been made from (make ft_lists' record): "
                             "a table made from another is refused")
    parser.add_argument("--out", required=True, help="results folder, e.g. results/cross")
    scoring.add_crop_arguments(parser)
    return parser


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    """``make cross``: the matrix (``rankiqa.cross_dataset``), one line per cell on stdout."""
    args = build_parser().parse_args(argv)
    scoring.check_crop_arguments(args)
    models = cross_dataset.model_specs(args.model, args.deploy, args.model_direction)
    loader = cross_dataset.caffe_scorer_loader(args.crops, args.batch, args.seed, args.gpu)
    targets = cross_dataset.with_data(args.dataset, args.data)
    cells = cross_dataset.evaluate_matrix(models, targets, args.out, loader, progress=not args.quiet)
    cross_dataset.write_matrix(args.out, cells, args.crops, args.seed)
    for cell in cells:
        corrected = "unknown direction" if cell.srocc_corrected is None else f"{cell.srocc_corrected:.4f}"
        print(f"{cell.model} on {cell.dataset}: SROCC {cell.srocc_raw:.4f} raw, {corrected} corrected"
              f"{' (its own dataset)' if cell.same_dataset else ''}")
    print(f"-> {args.out}/{', '.join(cross_dataset.MATRIX_FILES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
