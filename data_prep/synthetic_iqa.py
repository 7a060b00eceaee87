"""A synthetic stand-in for an IQA database, for the demo's fine-tuning stage.

SYNTHETIC STAND-IN, NOT HUMAN OPINION SCORES: references that the ranking stage never saw are
distorted with the project's generator (``data_prep.distortions``) and each distorted image is
scored by MS-SSIM against its reference (computed here, on luminance), in place of a MOS. The
output has the layout of ``make_ft_lists`` (``table.csv`` with direction ``higher_better``,
``split<k>/train.txt, test.txt, test.csv``) plus a ``README.txt`` that says what it is.

    python -m data_prep.synthetic_iqa --pristine-dir data/pristine --refs a,b,c,d,e \\
        --out data/ft/synthetic --rankset tid2013 --seed 0 --splits 1

MS-SSIM follows Wang, Simoncelli and Bovik (2003): 5 scales, weights (0.0448, 0.2856, 0.3001,
0.2363, 0.1333), 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, statistics over
the window's "valid" positions, 2x2 average and subsampling between scales; contrast-structure
terms below zero are clipped to zero so that the fractional powers stay real.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from data_prep import distortions
from data_prep.datasets import HIGHER_BETTER, IQARow
from data_prep.make_ft_lists import print_split_summary, write_ft_lists
from rankiqa.errors import InputError, cli_main
from rankiqa.fsutil import atomic_write_bytes, atomic_write_text
from rankiqa.image_io import read_bgr
from rankiqa.lists import open_text
from rankiqa.paths import IMAGE_SUFFIXES

#: The direction of the stand-in scores (MS-SSIM: 1 = identical to the reference).
DIRECTION = HIGHER_BETTER
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WINDOW = 11
_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03


# ----------------------------------------------------------------------------------------------
# MS-SSIM


def luminance(image: np.ndarray) -> np.ndarray:
    """Luma (ITU-R BT.601 weights, as MATLAB's rgb2gray) of a BGR image, float64; 2-D input passes."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")
    blue, green, red = image[..., 0], image[..., 1], image[..., 2]
    return 0.299 * red + 0.587 * green + 0.114 * blue


def _gaussian_1d(size: int = _WINDOW, sigma: float = _SIGMA) -> np.ndarray:
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    weights = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return weights / weights.sum()


def _filter_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable Gaussian weighting, kept only where the window lies inside the image."""
    out = ndimage.correlate1d(image, kernel, axis=0, mode="reflect")
    out = ndimage.correlate1d(out, kernel, axis=1, mode="reflect")
    radius = kernel.size // 2
    return out[radius:-radius, radius:-radius]


def _ssim_terms(x: np.ndarray, y: np.ndarray, data_range: float) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure term of two same-size 2-D images."""
    kernel = _gaussian_1d()
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    mu_x, mu_y = _filter_valid(x, kernel), _filter_valid(y, kernel)
    var_x = _filter_valid(x * x, kernel) - mu_x**2
    var_y = _filter_valid(y * y, kernel) - mu_y**2
    cov = _filter_valid(x * y, kernel) - mu_x * mu_y
    contrast_structure = (2.0 * cov + c2) / (var_x + var_y + c2)
    lum = (2.0 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return float(np.mean(lum * contrast_structure)), float(np.mean(contrast_structure))


def _downsample(image: np.ndarray) -> np.ndarray:
    """2x2 mean (symmetric padding at the far edges), then every second row and column."""
    padded = np.pad(image, ((0, 1), (0, 1)), mode="symmetric")
    mean = (padded[:-1, :-1] + padded[1:, :-1] + padded[:-1, 1:] + padded[1:, 1:]) / 4.0
    return mean[::2, ::2]


def _prepare_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = luminance(a), luminance(b)
    if x.shape != y.shape:
        raise ValueError(f"images differ in size: {x.shape} vs {y.shape}")
    return x, y


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Single-scale SSIM (Wang et al. 2004) of the luminance of two images."""
    x, y = _prepare_pair(a, b)
    if min(x.shape) < _WINDOW:
        raise ValueError(f"images must be at least {_WINDOW} pixels on a side, got {x.shape}")
    return _ssim_terms(x, y, data_range)[0]


def ms_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0,
            weights: Sequence[float] = MS_SSIM_WEIGHTS) -> float:
    """Multi-scale SSIM of the luminance of two images (1 for identical images, symmetric).

    Needs sides of at least 11 x 2^(scales-1) pixels (176 for the standard 5 scales).
    """
    x, y = _prepare_pair(a, b)
    scales = len(weights)
    smallest = _WINDOW * 2 ** (scales - 1)
    if min(x.shape) < smallest:
        raise ValueError(f"MS-SSIM with {scales} scales needs images of at least {smallest} pixels "
                         f"on a side, got {x.shape[1]}x{x.shape[0]}")
    result = 1.0
    for scale, weight in enumerate(weights):
        ssim_mean, cs_mean = _ssim_terms(x, y, data_range)
        if scale < scales - 1:
            result *= max(cs_mean, 0.0) ** weight
            x, y = _downsample(x), _downsample(y)
        else:
            result *= max(ssim_mean, 0.0) ** weight
    return float(result)


# ----------------------------------------------------------------------------------------------
# the synthetic set


def _image_seed(seed: int, reference: str, dtype: str, level: int) -> int:
    """A per-image seed that does not depend on the order images are made in."""
    digest = hashlib.sha256(f"{seed}:{reference}:{dtype}:{level}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _find_reference(pristine_dir: Path, name: str) -> Path:
    """``name`` as a file in ``pristine_dir``, with or without its image suffix."""
    exact = pristine_dir / name
    if exact.is_file():
        return exact
    matches = sorted(p for p in pristine_dir.iterdir()
                     if p.is_file() and p.stem == name and p.suffix.lower() in IMAGE_SUFFIXES)
    if not matches:
        raise InputError(f"reference image {name!r} not found", pristine_dir)
    if len(matches) > 1:
        raise InputError(f"reference {name!r} matches {', '.join(p.name for p in matches)}", pristine_dir)
    return matches[0]


def _check_unseen(references: Sequence[str], manifest: Path) -> None:
    """The stand-in must use references the ranking stage never saw."""
    if not manifest.is_file():
        raise InputError("rank manifest not found", manifest)
    wanted = set(references)
    with open_text(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        if "reference" not in (reader.fieldnames or []):
            raise InputError("no 'reference' column", manifest, 1)
        for record in reader:
            if record["reference"] in wanted:
                raise InputError(f"reference {record['reference']!r} is used by the ranking stage; "
                                 "the synthetic set needs unseen references", manifest, reader.line_num)


def build_synthetic_rows(pristine_dir: str | os.PathLike, references: Sequence[str],
                         out_dir: str | os.PathLike, rankset: str = "tid2013", seed: int = 0,
                         types: Sequence[str] | None = None) -> list[IQARow]:
    """Distort each reference with every type and level of ``rankset``, write the images under
    ``out_dir/images/<ref>/<type>_<level>.png`` and return rows scored by MS-SSIM.
    """
    pristine_dir, out_dir = Path(pristine_dir), Path(out_dir)
    if not pristine_dir.is_dir():
        raise InputError("pristine folder not found", pristine_dir)
    if rankset not in distortions.RANKSETS:
        raise InputError(f"unknown rank set {rankset!r} (expected one of {', '.join(distortions.RANKSETS)})")
    all_types = list(distortions.RANKSETS[rankset])
    chosen = list(all_types) if not types else list(types)
    unknown = [t for t in chosen if t not in all_types]
    if unknown:
        raise InputError(f"unknown type(s) {', '.join(unknown)} for {rankset} "
                         f"(known: {', '.join(all_types)})")
    if len(set(references)) != len(references):
        raise InputError("a reference is named twice in --refs")
    levels = range(1, distortions.levels(rankset) + 1)  # level 0, the reference itself, is not scored

    # Read and check every reference before writing anything, so bad input leaves no images behind.
    smallest = _WINDOW * 2 ** (len(MS_SSIM_WEIGHTS) - 1)
    sources = []
    for name in references:
        source = _find_reference(pristine_dir, name)
        pristine = read_bgr(source)
        if min(pristine.shape[:2]) < smallest:
            raise InputError(f"MS-SSIM needs images of at least {smallest} pixels on a side, got "
                             f"{pristine.shape[1]}x{pristine.shape[0]}", source)
        sources.append((source, pristine))
    if len({source.stem for source, _ in sources}) != len(sources):
        raise InputError("two references share a name", pristine_dir)

    rows: list[IQARow] = []
    progress = tqdm(total=len(sources) * len(chosen) * len(levels), desc="synthetic set", unit="image",
                    file=sys.stderr, disable=None)  # None: no bar when stderr is not a terminal
    for source, pristine in sources:
        reference = source.stem
        for dtype in chosen:
            for level in levels:
                progress.update(1)
                distorted = distortions.distort(pristine, rankset, dtype, level,
                                                _image_seed(seed, reference, dtype, level))
                score = ms_ssim(pristine, distorted)
                target = out_dir / "images" / reference / f"{dtype}_{level}.png"
                ok, encoded = cv2.imencode(".png", distorted)
                if not ok:
                    raise RuntimeError(f"PNG encoding failed for {target}")
                atomic_write_bytes(target, encoded.tobytes())
                rows.append(IQARow(reference, dtype, level, str(target.resolve()), score, DIRECTION,
                                   f"{dtype} (synthetic stand-in)"))
    progress.close()
    return rows


def make_synthetic(pristine_dir: str | os.PathLike, references: Sequence[str], out_dir: str | os.PathLike,
                   rankset: str = "tid2013", seed: int = 0, splits: int = 1, test_fraction: float = 0.2,
                   types: Sequence[str] | None = None,
                   rank_manifest: str | os.PathLike | None = None) -> list[dict[str, int]]:
    """Build the synthetic stand-in set and its fine-tuning lists; return per-split counts."""
    if len(references) < 2:
        raise InputError("--refs needs at least 2 references (one for each half of a split)")
    if rank_manifest is not None:
        _check_unseen(references, Path(rank_manifest))
    rows = build_synthetic_rows(pristine_dir, references, out_dir, rankset, seed, types)
    summary = write_ft_lists(rows, out_dir, splits=splits, seed=seed, test_fraction=test_fraction)
    atomic_write_text(Path(out_dir) / "README.txt", (
        "SYNTHETIC STAND-IN for an IQA database (not human opinion scores).\n"
        f"References {', '.join(references)} from {pristine_dir}, distorted with data_prep.distortions "
        f"(rank set {rankset}, seed {seed}); score = MS-SSIM against the reference (luminance, 5 scales), "
        "higher = better.\n"))
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep.synthetic_iqa", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pristine-dir", required=True, help="folder of pristine reference images")
    parser.add_argument("--refs", required=True,
                        help="comma-separated reference names (file names, with or without suffix)")
    parser.add_argument("--out", required=True, help="output folder, e.g. data/ft/synthetic")
    parser.add_argument("--rankset", default="tid2013", help="distortion set of data_prep.distortions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits", type=int, default=1)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--types", default="", help="comma-separated subset of the rank set's types")
    parser.add_argument("--rank-manifest", default=None,
                        help="manifest.csv of the ranking data: refuse references it contains")
    return parser


def _split_names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    references = _split_names(args.refs)
    summary = make_synthetic(args.pristine_dir, references, args.out, rankset=args.rankset, seed=args.seed,
                             splits=args.splits, test_fraction=args.test_fraction,
                             types=_split_names(args.types) or None, rank_manifest=args.rank_manifest)
    total = summary[0]["train_images"] + summary[0]["test_images"]
    print(f"synthetic stand-in (MS-SSIM scores, not MOS): {total} images of {len(references)} references "
          f"-> {args.out}/table.csv")
    print_split_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
