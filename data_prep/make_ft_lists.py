"""Fine-tuning lists for an IQA database: ``table.csv`` and seeded 80/20 splits by reference image.

Output folder (docs/DESIGN.md, "Fine-tuning data")::

    <out>/table.csv                      reference,type,level,path,score,direction (absolute paths)
    <out>/split<k>/train.txt, test.txt   '<path> <score>' lines, k = 0..splits-1
    <out>/split<k>/test.csv              the table.csv rows of the test half
    <out>/splitoriginal/...              with --original-split: the original's own split (TID2013 only)

Every split is drawn independently from the seed, by reference image, so no reference has images in
both halves: with 24 TID2013 references that is 19 train / 5 test, with 29 LIVE references 23 / 6,
as in the original. ``--original-split`` also writes the original's own TID2013 split (``SPLIT=original``):
the test references of its released test list (``ORIGINAL_TEST_REFERENCES``), the other 19 train. TID2013
is the only dataset whose original split is known.

Scores in the split files (lists and ``test.csv``) are written with two decimals for TID2013 and LIVE, as
the original's lists (``SCORE_DECIMALS``); ``table.csv`` keeps the published values.

    python -m data_prep.make_ft_lists --dataset tid2013 --data /data/tid2013 --out data/ft/tid2013 \\
        --splits 10 --seed 0 --test-fraction 0.2 [--original-split] [--score-decimals N|full]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from data_prep.datasets import DATASETS, TABLE_COLUMNS, IQARow, load_dataset, write_table
from rankiqa import provenance
from rankiqa.errors import InputError, cli_main
from rankiqa.fsutil import atomic_write_text
from rankiqa.lists import open_text, write_list
from rankiqa.paths import IMAGE_SUFFIXES

#: The original's own split where it is known: the references of its released fine-tuning test list
#: (``data/ft_tid2013_test.txt`` of the original repository: I04, I11, I13, I17, I19; the other 19 of
#: I01-I24 train). Its LIVE split cannot be recovered (its LIVE train list is not in the repository).
ORIGINAL_TEST_REFERENCES: dict[str, tuple[str, ...]] = {"tid2013": ("I04", "I11", "I13", "I17", "I19")}
#: Name of that split: its files go to ``split<ORIGINAL_SPLIT>/`` (``make ... SPLIT=original``).
ORIGINAL_SPLIT = "original"
#: Decimals of the scores in the split files, per dataset. The original's fine-tuning lists write MOS/DMOS
#: with '%6.2f' (TID2013 and LIVE). It has no CSIQ or KADID lists: those keep the published values (and
#: CSIQ's DMOS, in 0-1, would keep only about 100 distinct values at two decimals).
SCORE_DECIMALS: dict[str, int] = {"tid2013": 2, "live": 2}


def original_split(dataset: str, references: Sequence[str]) -> tuple[list[str], list[str]]:
    """The original's (train refs, test refs) of ``dataset`` among ``references`` (sorted, unique).

    Raises ``InputError`` for a dataset whose original split is unknown (all but TID2013), and when one of
    the original's test references, or every training one, is missing from ``references``.
    """
    _require_original_split(dataset)
    unique = sorted(set(references))
    test = list(ORIGINAL_TEST_REFERENCES[dataset])
    missing = [ref for ref in test if ref not in unique]
    if missing:
        raise InputError(f"the original's test reference(s) {', '.join(missing)} are not in the {dataset} "
                         "rows (a partial dataset, or filtered by --types?)")
    train = [ref for ref in unique if ref not in test]
    if not train:
        raise InputError(f"no {dataset} reference is left for training beside the original's test ones")
    return train, test


def _require_original_split(dataset: str) -> None:
    if dataset not in ORIGINAL_TEST_REFERENCES:
        raise InputError(f"the original's split is known for {', '.join(ORIGINAL_TEST_REFERENCES)} only "
                         f"(its released test list), not for {dataset}: use the random splits")


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


def check_split_settings(splits: int, seed: int, test_fraction: float) -> None:
    """Refuse split settings that cannot work (``InputError``)."""
    if splits < 1:
        raise InputError(f"--splits must be at least 1, got {splits}")
    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test fraction {test_fraction} must lie strictly between 0 and 1")


def write_ft_lists(rows: Sequence[IQARow], out_dir: str | os.PathLike, splits: int = 1, seed: int = 0,
                   test_fraction: float = 0.2, before_writing: Callable[[], None] | None = None,
                   original_of: str | None = None, decimals: int | None = None
                   ) -> list[dict[str, int | str]]:
    """Write ``table.csv`` and ``split<k>/`` for ``rows``; return per-split counts.

    ``original_of`` (a dataset name) also writes ``split<ORIGINAL_SPLIT>/``, the original's split of that
    dataset (:func:`original_split`). ``decimals`` rounds the scores of the split files (lists and
    ``test.csv``; ``table.csv`` keeps them as given); None writes them in full. All splits are drawn before
    anything is written (then ``before_writing`` is called), so bad arguments leave ``out_dir`` untouched;
    each file is written atomically.
    """
    check_split_settings(splits, seed, test_fraction)
    if not rows:
        raise InputError("no rows to write")
    if decimals is not None and decimals < 0:
        raise InputError(f"--score-decimals must be >= 0, got {decimals}")
    references = [row.reference for row in rows]
    drawn: list[tuple[int | str, tuple[list[str], list[str]]]] = [
        (k, split_references(references, k, seed, test_fraction)) for k in range(splits)]
    if original_of is not None:
        drawn.append((ORIGINAL_SPLIT, original_split(original_of, references)))
    # test.csv holds the scores as the lists write them: what is trained on is what is evaluated against.
    split_rows = rows if decimals is None else [
        dataclasses.replace(row, score=float(f"{row.score:.{decimals}f}")) for row in rows]
    plans = []
    for k, (train_refs, test_refs) in drawn:
        test_set = set(test_refs)
        train = [row for row in split_rows if row.reference not in test_set]
        test = [row for row in split_rows if row.reference in test_set]
        plans.append((k, train, test, len(train_refs), len(test_refs)))

    out_dir = Path(out_dir)
    if before_writing is not None:
        before_writing()
    write_table(out_dir / "table.csv", rows)
    summary: list[dict[str, int | str]] = []
    for k, train, test, n_train_refs, n_test_refs in plans:
        split_dir = out_dir / f"split{k}"
        write_list(split_dir / "train.txt", [(row.path, row.score) for row in train], decimals)
        write_list(split_dir / "test.txt", [(row.path, row.score) for row in test], decimals)
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


#: The record of what a lists folder was made from (written last: its presence means the lists are whole).
STAMP = ".make_ft_lists.json"
#: Bumped when the same data and settings would give other lists (a loader or split change).
LISTS_VERSION = 2  # 2: scores with the original's two decimals (TID2013, LIVE)
_OUTPUTS = ("train.txt", "test.txt", "test.csv")


def _stamp_definition(dataset: str, data_dir: Path, splits: int, seed: int, test_fraction: float,
                      types: Sequence[str] | None, options: dict[str, bool], original: bool = False,
                      decimals: int | None = None) -> dict:
    return {"version": LISTS_VERSION, "dataset": dataset, "data": str(data_dir.resolve()), "splits": splits,
            "seed": seed, "test_fraction": test_fraction, "types": sorted(types) if types else None,
            "options": options, "original": original, "decimals": decimals}


def lists_record(out_dir: str | os.PathLike) -> dict | None:
    """What the lists in ``out_dir`` were made from, as their record says (``dataset``, ``data``: the
    dataset folder resolved, ``splits``, ...); None without a record (lists this tool did not make, or none).
    """
    return provenance.read_json(Path(out_dir) / STAMP)


def _fingerprint_data(data_dir: Path) -> dict[str, list]:
    """Every file of the dataset folder: the images by size and modification time, the label files (text,
    .mat, .xlsx) with their content hash too."""
    files = provenance.folder_files(data_dir)
    labels = {name: path for name, path in files.items() if Path(name).suffix.lower() not in IMAGE_SUFFIXES}
    images = {name: path for name, path in files.items() if name not in labels}
    return {**provenance.fingerprint(images), **provenance.fingerprint(labels, hash_below=1 << 62)}


def _outputs(out_dir: Path, splits: int, original: bool = False) -> dict[str, Path]:
    files = {"table.csv": out_dir / "table.csv"}
    for k in [*range(splits), *([ORIGINAL_SPLIT] if original else [])]:
        files.update({f"split{k}/{name}": out_dir / f"split{k}" / name for name in _OUTPUTS})
    return files


def _is_our_table(path: Path) -> bool:
    """Whether ``table.csv`` has the header only ``write_table`` writes (lists of an earlier version)."""
    try:
        with open_text(path, errors="replace") as handle:
            return handle.readline().strip() == ",".join(TABLE_COLUMNS)
    except OSError:
        return False


def _stale_reasons(old: dict | None, definition: dict, data_dir: Path, out_dir: Path) -> list[str] | None:
    """Why the lists in ``out_dir`` must be (re)built; None when they are up to date. Refuses to overwrite
    lists this tool did not make, and lists edited since it made them."""
    if old is None:
        if _is_our_table(out_dir / "table.csv"):
            return ["no record of what made these lists (an earlier version): rebuilt"]
        foreign = [name for name in ("train.txt", "test.txt") if any(out_dir.glob(f"*/{name}"))]
        if foreign or (out_dir / "table.csv").exists():
            raise InputError(f"holds lists that make_ft_lists did not make (no {STAMP}): not overwritten; "
                             "use another --out (FT_DIR) or move them away", out_dir)
        return []
    edited = provenance.compare_content(old.get("outputs", {}),
                                        _outputs(out_dir, old.get("splits", 0), bool(old.get("original"))))
    reasons = provenance.differences(old, definition, ("version", "dataset", "data", "splits", "seed",
                                                        "test_fraction", "types", "options", "original",
                                                        "decimals"))
    inputs = provenance.compare(old.get("inputs", {}), provenance.folder_files(data_dir))
    if inputs:
        reasons.append(f"files of {data_dir} changed since the lists were made: {inputs.describe()}")
    if edited.modified:
        message = f"{', '.join(edited.modified)} changed since make_ft_lists wrote them (edited by hand?)"
        if reasons:
            raise InputError(f"{message}; not overwritten (needed: {'; '.join(reasons)}): use another --out "
                             "(FT_DIR) or move them away", out_dir)
        print(f"note: {out_dir}: {message}; left as they are", file=sys.stderr)
    if edited.removed and not reasons:
        reasons.append(f"{edited.describe()} since they were made")
    return reasons or None


def make_lists(dataset: str, data_dir: str | os.PathLike, out_dir: str | os.PathLike, splits: int = 1,
               seed: int = 0, test_fraction: float = 0.2, include_synthetic_ref: bool = False,
               live_realigned: bool = False, live_drop_refs: bool = False,
               types: Sequence[str] | None = None, original: bool = False,
               score_decimals: int | str | None = None) -> list[dict[str, int | str]]:
    """Load ``dataset`` from ``data_dir`` and write its fine-tuning lists to ``out_dir``, unless they are up
    to date: ``out_dir/.make_ft_lists.json`` records what they were made from (dataset, the folder and the
    size, modification time and, for label files, content hash of every file in it, splits, seed, types,
    options) and the lists written; any difference rebuilds them and says which (stderr). Lists that
    this tool did not make, or that were edited since, are never overwritten (``InputError``).

    The dataset-specific flags apply only to their dataset; passing one for another dataset is an
    error rather than silently ignored. ``types`` keeps only those distortion type codes (e.g. the paper's
    CSIQ protocol: ``PAPER_CSIQ_TYPES``); the reference copies of LIVE (type code of their folder) follow
    their folder. ``original`` also writes the original's split (TID2013 only: ``InputError`` otherwise,
    before anything is read). ``score_decimals``: decimals of the split files' scores; None = the
    dataset's ``SCORE_DECIMALS`` (the original's two for TID2013 and LIVE), ``"full"`` = as published.
    """
    if dataset not in DATASETS:
        raise InputError(f"unknown dataset {dataset!r} (expected one of {', '.join(DATASETS)})")
    if original:
        _require_original_split(dataset)
    if score_decimals is None:
        decimals = SCORE_DECIMALS.get(dataset)
    elif score_decimals == "full":
        decimals = None
    elif isinstance(score_decimals, int):
        decimals = score_decimals
    else:
        raise InputError(f"--score-decimals must be a number or 'full', got {score_decimals!r}")
    options: dict[str, bool] = {}
    if include_synthetic_ref:
        if dataset != "tid2013":
            raise InputError("--include-synthetic-ref applies to tid2013 only")
        if original:
            raise InputError("the original's split covers references I01-I24: leave out "
                             "--include-synthetic-ref with --original-split")
        options["include_synthetic_ref"] = True
    if live_realigned or live_drop_refs:
        if dataset != "live":
            raise InputError("--live-realigned / --live-drop-refs apply to live only")
        options.update(realigned=live_realigned, drop_refs=live_drop_refs)
    check_split_settings(splits, seed, test_fraction)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    definition = _stamp_definition(dataset, data_dir, splits, seed, test_fraction, types, options, original,
                                   decimals)
    old = provenance.read_json(out_dir / STAMP)
    reasons = _stale_reasons(old, definition, data_dir, out_dir) if data_dir.is_dir() or old is None else None
    if reasons is None and old is not None:
        where = "" if data_dir.is_dir() else f" ({data_dir} is not there: the lists are kept as they are)"
        print(f"{out_dir}: up to date, made from {old['data']}{where}", file=sys.stderr)
        return list(old["summary"])
    rows = load_dataset(dataset, data_dir, **options)
    if types:
        known = DATASETS[dataset].types
        unknown = [t for t in types if t not in known]
        if unknown:
            raise InputError(f"unknown {dataset} type code(s) {', '.join(unknown)} "
                             f"(known: {', '.join(known)})")
        rows = [row for row in rows if row.type in set(types)]
    inputs = _fingerprint_data(data_dir)
    if reasons:
        print(f"{out_dir}: rebuilding the lists: {'; '.join(reasons)}", file=sys.stderr)
    # An interrupted rebuild must leave no record of the old lists.
    summary = write_ft_lists(rows, out_dir, splits=splits, seed=seed, test_fraction=test_fraction,
                             before_writing=(out_dir / STAMP).unlink if (out_dir / STAMP).exists() else None,
                             original_of=dataset if original else None, decimals=decimals)
    # Splits of the old lists that the new ones do not have (beyond the new count, or the original's).
    gone = [*range(splits, (old or {}).get("splits", 0)),
            *([ORIGINAL_SPLIT] if (old or {}).get("original") and not original else [])]
    for k in gone:
        for name in _OUTPUTS:
            (out_dir / f"split{k}" / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (out_dir / f"split{k}").rmdir()
    record = {**definition, "inputs": inputs, "summary": summary,
              "outputs": provenance.content(_outputs(out_dir, splits, original))}
    atomic_write_text(out_dir / STAMP, json.dumps(record, indent=1) + "\n")
    return summary


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
    parser.add_argument("--original-split", action="store_true",
                        help=f"tid2013: also write split{ORIGINAL_SPLIT}/, the original's own split (test "
                             f"references {', '.join(ORIGINAL_TEST_REFERENCES['tid2013'])}; the only "
                             "dataset whose original split is known)")
    parser.add_argument("--score-decimals", type=_decimals, default=None,
                        help="decimals of the scores in the split files, or 'full' (default: 2 for tid2013 "
                             "and live, as the original's lists; full for the others)")
    return parser


def _decimals(text: str) -> int | str:
    if text == "full":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number or 'full', not {text!r}") from None


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    summary = make_lists(args.dataset, args.data, args.out, splits=args.splits, seed=args.seed,
                         test_fraction=args.test_fraction, include_synthetic_ref=args.include_synthetic_ref,
                         live_realigned=args.live_realigned, live_drop_refs=args.live_drop_refs,
                         types=_parse_types(args.dataset, args.types), original=args.original_split,
                         score_decimals=args.score_decimals)
    first = summary[0]
    total = first["train_images"] + first["test_images"]
    refs = first["train_refs"] + first["test_refs"]
    # said whether the lists were made now or found up to date (make_lists says which on stderr)
    print(f"{DATASETS[args.dataset].title}: {total} images of {refs} references; table {args.out}/table.csv")
    print_split_summary(summary)
    return 0


def print_split_summary(summary: list[dict]) -> None:
    """One line per split: images and references on each side (shared with ``data_prep.synthetic_iqa``)."""
    for entry in summary:
        print(f"  split{entry['split']}: train {entry['train_images']} images ({entry['train_refs']} refs), "
              f"test {entry['test_images']} images ({entry['test_refs']} refs)")


if __name__ == "__main__":
    sys.exit(main())
