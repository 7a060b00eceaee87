"""Fine-tuning lists for an IQA database: ``table.csv`` and seeded 80/20 splits by reference image.

Output folder (docs/DESIGN.md, "Fine-tuning data")::

    <out>/table.csv                      reference,type,level,path,score,direction (absolute paths)
    <out>/split<k>/train.txt, test.txt   '<path> <score>' lines, k = 0..splits-1
    <out>/split<k>/test.csv              the table.csv rows of the test half

Every split is drawn independently from the seed, by reference image, so no reference has images in
both halves: with 24 TID2013 references that is 19 train / 5 test, with 29 LIVE references 23 / 6,
as in the original.

    python -m data_prep.make_ft_lists --dataset tid2013 --data /data/tid2013 --out data/ft/tid2013 \\
        --splits 10 --seed 0 --test-fraction 0.2
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_prep.datasets import DATASETS, IQARow, load_dataset, write_table
from rankiqa.errors import InputError, cli_main
from rankiqa.lists import write_list


def split_references(references: Sequence[str], split_index: int, seed: int = 0,
                     test_fraction: float = 0.2) -> tuple[list[str], list[str]]:
    """Draw split ``split_index`` of the sorted unique references: (train refs, test refs).

    The test half holds ``round(test_fraction * n)`` references (at least 1, at most n - 1). The
    draw depends only on (seed, split_index) and the set of references, not on row order.
    """
    unique = sorted(set(references))
    if len(unique) < 2:
        raise InputError(f"need at least 2 reference images to split, found {len(unique)}")
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test fraction {test_fraction} must lie strictly between 0 and 1")
    n_test = min(max(1, round(test_fraction * len(unique))), len(unique) - 1)
    order = np.random.default_rng([seed, split_index]).permutation(len(unique))
    test = sorted(unique[i] for i in order[:n_test])
    train = sorted(unique[i] for i in order[n_test:])
    return train, test


def write_ft_lists(rows: Sequence[IQARow], out_dir: str | os.PathLike, splits: int = 1, seed: int = 0,
                   test_fraction: float = 0.2) -> list[dict[str, int]]:
    """Write ``table.csv`` and ``split<k>/`` for ``rows``; return per-split counts.

    All splits are drawn before anything is written, so bad arguments leave ``out_dir`` untouched;
    each file is written atomically.
    """
    if splits < 1:
        raise InputError(f"--splits must be at least 1, got {splits}")
    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    if not rows:
        raise InputError("no rows to write")
    references = [row.reference for row in rows]
    plans = []
    for k in range(splits):
        train_refs, test_refs = split_references(references, k, seed, test_fraction)
        test_set = set(test_refs)
        train = [row for row in rows if row.reference not in test_set]
        test = [row for row in rows if row.reference in test_set]
        plans.append((k, train, test, len(train_refs), len(test_refs)))

    out_dir = Path(out_dir)
    write_table(out_dir / "table.csv", rows)
    summary = []
    for k, train, test, n_train_refs, n_test_refs in plans:
        split_dir = out_dir / f"split{k}"
        write_list(split_dir / "train.txt", [(row.path, row.score) for row in train])
        write_list(split_dir / "test.txt", [(row.path, row.score) for row in test])
        write_table(split_dir / "test.csv", test)
        summary.append({"split": k, "train_images": len(train), "test_images": len(test),
                        "train_refs": n_train_refs, "test_refs": n_test_refs})
    return summary


#: The paper's CSIQ protocol: the 4 distortion types CSIQ shares with LIVE (10 splits in the paper).
PAPER_CSIQ_TYPES = ("AWGN", "JPEG", "jpeg2000", "BLUR")


def _parse_types(dataset: str, text: str) -> list[str] | None:
    if not text.strip():
        return None
    if text.strip() == "paper":
        if dataset != "csiq":
            raise InputError("--types paper applies to csiq only")
        return list(PAPER_CSIQ_TYPES)
    return [t.strip() for t in text.split(",") if t.strip()]


def make_lists(dataset: str, data_dir: str | os.PathLike, out_dir: str | os.PathLike, splits: int = 1,
               seed: int = 0, test_fraction: float = 0.2, include_synthetic_ref: bool = False,
               live_realigned: bool = False, live_drop_refs: bool = False,
               types: Sequence[str] | None = None) -> list[dict[str, int]]:
    """Load ``dataset`` from ``data_dir`` and write its fine-tuning lists to ``out_dir``.

    The dataset-specific flags apply only to their dataset; passing one for another dataset is an
    error rather than silently ignored. ``types`` keeps only those distortion type codes (e.g. the paper's
    CSIQ protocol: ``PAPER_CSIQ_TYPES``); the reference copies of LIVE (type code of their folder) follow
    their folder.
    """
    if dataset not in DATASETS:
        raise InputError(f"unknown dataset {dataset!r} (expected one of {', '.join(DATASETS)})")
    options: dict[str, bool] = {}
    if include_synthetic_ref:
        if dataset != "tid2013":
            raise InputError("--include-synthetic-ref applies to tid2013 only")
        options["include_synthetic_ref"] = True
    if live_realigned or live_drop_refs:
        if dataset != "live":
            raise InputError("--live-realigned / --live-drop-refs apply to live only")
        options.update(realigned=live_realigned, drop_refs=live_drop_refs)
    rows = load_dataset(dataset, data_dir, **options)
    if types:
        known = DATASETS[dataset].types
        unknown = [t for t in types if t not in known]
        if unknown:
            raise InputError(f"unknown {dataset} type code(s) {', '.join(unknown)} "
                             f"(known: {', '.join(known)})")
        rows = [row for row in rows if row.type in set(types)]
    return write_ft_lists(rows, out_dir, splits=splits, seed=seed, test_fraction=test_fraction)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep.make_ft_lists", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--data", required=True, help="the database folder, in its published layout")
    parser.add_argument("--out", required=True, help="output folder, e.g. data/ft/tid2013")
    parser.add_argument("--splits", type=int, default=1, help="independent random splits (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="share of reference images in the test half (default 0.2)")
    parser.add_argument("--include-synthetic-ref", action="store_true",
                        help="tid2013: keep reference 25 (synthetic; the original excludes it)")
    parser.add_argument("--live-realigned", action="store_true",
                        help="live: dmos_new of dmos_realigned.mat instead of dmos of dmos.mat")
    parser.add_argument("--live-drop-refs", action="store_true",
                        help="live: leave out the 203 reference copies (orgs == 1; the original keeps them)")
    parser.add_argument("--types", default="",
                        help="comma-separated type codes to keep (default: all); 'paper' for csiq = the "
                             "paper's 4 LIVE-like types " + ",".join(PAPER_CSIQ_TYPES))
    return parser


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    summary = make_lists(args.dataset, args.data, args.out, splits=args.splits, seed=args.seed,
                         test_fraction=args.test_fraction, include_synthetic_ref=args.include_synthetic_ref,
                         live_realigned=args.live_realigned, live_drop_refs=args.live_drop_refs,
                         types=_parse_types(args.dataset, args.types))
    first = summary[0]
    total = first["train_images"] + first["test_images"]
    refs = first["train_refs"] + first["test_refs"]
    print(f"{DATASETS[args.dataset].title}: {total} images of {refs} references -> {args.out}/table.csv")
    print_split_summary(summary)
    return 0


def print_split_summary(summary: list[dict]) -> None:
    """One line per split: images and references on each side (shared with ``data_prep.synthetic_iqa``)."""
    for entry in summary:
        print(f"  split{entry['split']}: train {entry['train_images']} images ({entry['train_refs']} refs), "
              f"test {entry['test_images']} images ({entry['test_refs']} refs)")


if __name__ == "__main__":
    sys.exit(main())
