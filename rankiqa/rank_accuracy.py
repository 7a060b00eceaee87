"""Pairwise ranking accuracy: the ranking stage's own metric.

A rank set orders images without labels: within one (reference, distortion type), a lower level is better
(level 0 = the pristine image). A model ranks such a group correctly when its score orders every pair of
levels the same way. The accuracy of a type is the share of correctly ordered pairs over all references:

    accuracy(type) = #{(r, i < j) : s(r, type, i) > s(r, type, j)} / #{(r, i < j)}

for a quality-up score s (higher = better; a DMOS-like model's scores are negated first). A tie counts as
wrong, so a collapsed model (every score equal) gets 0, not 0.5. ``overall`` pools the pairs of every type.
With levels 0..L there are L(L+1)/2 pairs per reference and type (10 for the TID2013-style set's 4 levels).

Rows come from a rank manifest (``data_prep.make_ranks``: columns ``reference, type, level, path, split``)
or any table with the first four of those columns.
"""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rankiqa.errors import InputError
from rankiqa.manifest import MANIFEST_COLUMNS, checked_rows, row_level, row_path

#: Columns a table must have to be ranked: the manifest's, but ``split`` is optional.
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c for c in MANIFEST_COLUMNS if c != "split")
OVERALL = "overall"


@dataclass(frozen=True)
class RankedImage:
    """One image of a rank set: ``level`` 0 = pristine, higher = more distorted; ``path`` absolute; ``line``
    the table's line it was read from, for messages about the image."""

    reference: str
    type: str
    level: int
    path: str
    # where the row was read, not what it is: two reads of one image compare equal
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class TypeAccuracy:
    """Correctly ordered pairs of one distortion type (or ``overall``)."""

    type: str
    correct: int
    pairs: int
    references: int

    @property
    def accuracy(self) -> float:
        """Share of correctly ordered pairs in [0, 1] (NaN without pairs)."""
        return self.correct / self.pairs if self.pairs else float("nan")


def read_rank_table(path: str | os.PathLike, split: str | None = None) -> list[RankedImage]:
    """Rows of a rank manifest (relative paths resolved against its folder), optionally of one ``split``.

    Raises ``InputError`` (file and line) for a missing column, a row with more or fewer fields than the
    header, a level that is not a non-negative integer, an empty path, a ``split`` asked for on a table
    without that column, or no row left. Each image keeps its row's line, for messages about the image.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("rank manifest not found", path)
    rows: list[RankedImage] = []
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"missing column(s) {', '.join(missing)} (need {', '.join(REQUIRED_COLUMNS)})",
                             path, 1)
        if split is not None and "split" not in (reader.fieldnames or []):
            raise InputError(f"no 'split' column to select split {split!r} from", path, 1)
        for lineno, row in checked_rows(reader, path):
            if split is not None and row["split"] != split:
                continue
            level = row_level(row["level"], path, lineno)
            image = row_path(row["path"], path, lineno)
            rows.append(RankedImage(row["reference"], row["type"], level, image, lineno))
    if not rows:
        raise InputError("no rows" + (f" in split {split!r}" if split else ""), path)
    return rows


def pairwise_accuracy(rows: Iterable[RankedImage], scores: Mapping[str, float],
                      higher_better: bool = True) -> dict[str, TypeAccuracy]:
    """Accuracy per distortion type and ``overall`` (see the module docstring), in the rows' type order.

    ``scores`` maps an image path to the model's score. Two rows of one (reference, type, level) are an
    error (``ValueError``): the order inside the group would be undefined.
    """
    groups: dict[tuple[str, str], dict[int, float]] = {}
    for row in rows:
        group = groups.setdefault((row.type, row.reference), {})
        if row.level in group:
            raise ValueError(f"two images of reference {row.reference!r}, type {row.type!r}, "
                             f"level {row.level}")
        value = float(scores[row.path])
        group[row.level] = value if higher_better else -value
    by_type: dict[str, list[int]] = {}
    for (dtype, _), group in groups.items():
        counts = by_type.setdefault(dtype, [0, 0, 0])
        for better, worse in itertools.combinations(sorted(group), 2):
            counts[0] += group[better] > group[worse]
            counts[1] += 1
        counts[2] += 1
    result = {t: TypeAccuracy(t, c, p, r) for t, (c, p, r) in by_type.items()}
    result[OVERALL] = TypeAccuracy(OVERALL, sum(a.correct for a in result.values()),
                                   sum(a.pairs for a in result.values()),
                                   len({ref for _, ref in groups}))
    return result


def accuracy_dict(result: Mapping[str, TypeAccuracy]) -> dict[str, float]:
    """``{type: accuracy, ..., "overall": accuracy}``."""
    return {t: a.accuracy for t, a in result.items()}


def accuracy_csv(result: Mapping[str, TypeAccuracy]) -> str:
    """CSV text: ``type, pairs, correct, references, accuracy`` (``overall`` last)."""
    lines = ["type,pairs,correct,references,accuracy"]
    for item in result.values():
        lines.append(f"{item.type},{item.pairs},{item.correct},{item.references},{item.accuracy:.4f}")
    return "\n".join(lines) + "\n"


def plot_accuracy(result: Mapping[str, TypeAccuracy], path: str | os.PathLike, title: str,
                  chance: float = 0.5, goal: float | None = None) -> None:
    """A bar per type (and ``overall``), with a line at ``chance`` and, if given, at ``goal``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rankiqa.fsutil import atomic_path

    names: Sequence[str] = list(result)
    values = [result[n].accuracy for n in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 3.8))
    colours = ["tab:gray" if n == OVERALL else ("tab:red" if v < chance else "tab:blue")
               for n, v in zip(names, values, strict=True)]
    ax.bar(range(len(names)), values, color=colours)
    ax.set_xticks(range(len(names)), names, rotation=60, fontsize=8)
    ax.axhline(chance, color="black", linewidth=0.8, linestyle=":")
    if goal is not None:
        ax.axhline(goal, color="tab:green", linewidth=0.8, linestyle="--")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("pairwise ranking accuracy")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
