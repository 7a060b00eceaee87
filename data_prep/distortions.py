"""The distortions of RankIQA's ranking data, with the semantics of the original MATLAB generator.

Three sets (``RANKSETS``): ``tid2013`` (TID2013-style types, 4 levels), ``live`` (the 4 LIVE types at
5 levels) and ``mlive`` (blur then JPEG or noise, 3x3 levels: ``GRID_TYPES``); ``LISTED_TYPES`` are those
the original lists (how many, and why: ``DISTORTIONS.md``). Level 1
is the mildest; level 0 (the pristine image) is not a distortion and is not produced here.
``data_prep/DISTORTIONS.md`` documents every type, its parameters and each deviation from the original.

MATLAB conventions reproduced on purpose, because the rankings were learnt from images made that way:
- ``uint8(x)`` rounds half away from zero and saturates (``_to_uint8``), unlike a bare numpy cast.
- ``imnoise`` works on the image scaled to [0, 1], adds the noise, clips to [0, 1] and converts back.
- ``rgb2ycbcr`` of a uint8 image returns rounded uint8 (studio range); ``ycbcr2rgb`` of a double image
  returns RGB in [0, 1] (clipped).
- ``fspecial('gaussian', hsize, sigma)`` + ``imfilter(..., 'symmetric')``: correlation with a normalised
  Gaussian, borders mirrored including the edge pixel (scipy's ``reflect``).

Images are BGR uint8 in and out (the project's ``cv2.imread`` convention); the functions below work on RGB
internally so that "channel 1" means red as in MATLAB.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

from rankiqa.errors import InputError

# rankset -> type -> parameter per level (index 0 = level 1), in TID2013's numbering order (the order of
# the blocks in our rank lists; the original's lists used another order, which batches drawn at random do
# not see). The parameter's meaning is per type (see DISTORTIONS.md).
RANKSETS: dict[str, dict[str, list]] = {
    "tid2013": {
        "GN": [0.001, 0.005, 0.01, 0.05],          # #01 imnoise variance
        "GNC": [0.0140, 0.0198, 0.0343, 0.0524],   # #02 noise variance on Y, Cb, Cr
        "HFN": [0.001, 0.005, 0.01, 0.05],         # #05 imnoise variance after the FFT "high-pass"
        "IN": [0.005, 0.01, 0.05, 0.1],            # #06 salt & pepper density
        "QN": [9, 7, 5, 3],                        # #07 number of thresholds: int32(255 ./ [27 39 55 76])
        "GB": [7, 15, 39, 91],                     # #08 fspecial hsize (sigma = hsize / 6)
        "ID": [0.001, 0.005, 0.01, 0.05],          # #09 imnoise variance before AWGN 25/255 + CBM3D
        "JPEG": [43, 12, 7, 4],                    # #10 JPEG quality
        "JP2K": [0.46, 0.16, 0.07, 0.04],          # #11 bits per pixel (compression ratio 24 / bpp)
        "NEPN": [30, 70, 150, 300],                # #14 number of displaced 15x15 patches
        "BW": [2, 4, 8, 16],                       # #15 number of 32x32 blocks (colour rule per level)
        "MSH": [15, 30, 45, 60],                   # #16 mean shift up
        "MSL": [-15, -30, -45, -60],               # #16 mean shift down
        "CCL": [0.85, 0.7, 0.55, 0.4],             # #17 contrast factor (lower)
        "CCH": [1.2, 1.4, 1.6, 1.8],               # #17 contrast factor (higher)
        "CS": [0.4, 0.0, -0.4, -0.8],              # #18 chroma factor
        "MGN": [0.05, 0.09, 0.13, 0.2],            # #19 std of the multiplicative noise
        "CQD": [64, 32, 16, 8],                    # #22 number of colours
        "CA": [2, 6, 10, 14],                      # #23 aberration size (shifts level-1 and level/2-1)
    },
    "live": {
        "GB": [7, 15, 39, 91, 199],
        "GN": [2.0 ** e for e in (-10, -7.5, -5.5, -3.5, 0)],
        "JPEG": [43, 12, 7, 4, 0],
        "JP2K": [0.46, 0.16, 0.07, 0.04, 0.02],
    },
}

#: The types of each rank set that the original puts into its rank lists, so that ranking trains on them:
#: its TID2013-style lists draw from 18 folders and leave HFN out, although its generator writes HFN too
#: (``make ranks`` default; ``RANK_TYPES`` / ``--types`` choose others, ``all`` every type).
LISTED_TYPES: dict[str, tuple[str, ...]] = {
    "tid2013": tuple(t for t in RANKSETS["tid2013"] if t != "HFN"),
    "live": tuple(RANKSETS["live"]),
}

#: The ``mlive`` set (the supplementary material's set for the multiply distorted LIVE database): blur, then a
#: second distortion, each at the ``live`` set's levels 1..``GRID_LEVELS`` (GB sigma 1.2, 2.5, 6.5; JPEG
#: quality 43, 12, 7; GN variance 0.001, 0.006, 0.022 as the supplementary text rounds them), a 3x3 grid per
#: type: type -> (first, second) type of the ``live`` set.
GRID_TYPES: dict[str, tuple[str, str]] = {"GBJPEG": ("GB", "JPEG"), "GBGN": ("GB", "GN")}
GRID_LEVELS = 3
# A grid type's "levels" 1..9 number its cells (first level, second level) first-major: level 5 = (2, 2).
# They are storage indices, not a ranking: the cells are only partially ordered, and the rank set's groups
# are chains through them (data_prep/rank_groups.py, DISTORTIONS.md).
RANKSETS["mlive"] = {name: [(first, second) for first in range(1, GRID_LEVELS + 1)
                            for second in range(1, GRID_LEVELS + 1)] for name in GRID_TYPES}
LISTED_TYPES["mlive"] = tuple(GRID_TYPES)


def grid_cell(dtype: str, level: int) -> tuple[int, int]:
    """The (first, second) distortion levels (each 1..``GRID_LEVELS``) of level ``level`` (1..9) of grid type
    ``dtype`` (``GRID_TYPES``); ``InputError`` for another type or a level out of range."""
    if dtype not in GRID_TYPES:
        raise InputError(f"{dtype!r} is not a two-distortion type (known: {', '.join(GRID_TYPES)})")
    cells = RANKSETS["mlive"][dtype]
    if not 1 <= level <= len(cells):
        raise InputError(f"level {level!r} out of range 1..{len(cells)} for {dtype}")
    return cells[level - 1]


def grid_level(dtype: str, first: int, second: int) -> int:
    """The level (1..9) of grid type ``dtype`` that holds the cell (``first``, ``second``)."""
    if dtype not in GRID_TYPES:
        raise InputError(f"{dtype!r} is not a two-distortion type (known: {', '.join(GRID_TYPES)})")
    return RANKSETS["mlive"][dtype].index((first, second)) + 1


def level_name(dtype: str, level: int) -> str:
    """The folder name of a type's level: ``GB3``; for a grid type the cell, ``GB2_JPEG3``."""
    if dtype in GRID_TYPES:
        first, second = grid_cell(dtype, level)
        return f"{GRID_TYPES[dtype][0]}{first}_{GRID_TYPES[dtype][1]}{second}"
    return f"{dtype}{level}"


# Smallest side the distortions accept: BW needs a 32x32 block at columns 2..W-32 (1-based), so W >= 34.
MIN_SIDE = 34
#: The version of the generator's output: bumped whenever the same pristine image, type, level and seed
#: would give other bytes, so that a ranking set made by an earlier version is refused, not topped up
#: (``data_prep.make_ranks`` records it).
GENERATOR_VERSION = 1

# MATLAB rgb2ycbcr: ycbcr (0-255 scale) = _YCC_MATRIX @ rgb (0-1 scale) + _YCC_OFFSET.
_YCC_MATRIX = np.array([[65.481, 128.553, 24.966],
                        [-37.797, -74.203, 112.0],
                        [112.0, -93.786, -18.214]])
_YCC_OFFSET = np.array([16.0, 128.0, 128.0])
_YCC_INVERSE = np.linalg.inv(_YCC_MATRIX)

# CQD: k-means refinement passes of Pillow's median-cut palette.
_CQD_KMEANS = 3

# ID: the original re-seeds MATLAB's generator with 0 before the AWGN of the BM3D demo (sigma 25).
_ID_AWGN_SIGMA = 25.0 / 255.0
_ID_AWGN_SEED = 0


def levels(rankset: str) -> int:
    """Number of distortion levels of a rankset (4 for ``tid2013``, 5 for ``live``)."""
    types = _rankset(rankset)
    return len(next(iter(types.values())))


def distort(image_bgr: np.ndarray, rankset: str, dtype: str, level: int, seed: int) -> np.ndarray:
    """Return ``image_bgr`` distorted by type ``dtype`` of ``rankset`` at ``level`` (1 = mildest).

    ``image_bgr`` is uint8 HxWx3 (BGR), at least ``MIN_SIDE`` px on a side; the result has the same shape
    and dtype. The result depends only on
    the image, the names, the level and ``seed`` (random types draw from ``numpy.random.default_rng(seed)``).
    Unknown rankset or type names and levels out of range raise ``InputError``.
    """
    params = _rankset(rankset)
    if dtype not in params:
        raise InputError(f"unknown distortion type {dtype!r} for rankset {rankset!r} "
                         f"(known: {', '.join(params)})")
    n_levels = len(params[dtype])
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 1 <= level <= n_levels:
        raise InputError(f"level {level!r} out of range 1..{n_levels} for {rankset}/{dtype}")
    image_bgr = np.asarray(image_bgr)
    if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {image_bgr.dtype} {image_bgr.shape}")
    if min(image_bgr.shape[:2]) < MIN_SIDE:
        height, width = image_bgr.shape[:2]
        raise ValueError(f"image {width}x{height} is smaller than {MIN_SIDE} px on a side "
                         "(NEPN and BW place patches up to 32 px from random positions)")
    rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
    rng = np.random.default_rng(seed)
    out = _OPERATIONS[dtype](rgb, params[dtype][level - 1], level, rng)
    assert out.shape == rgb.shape and out.dtype == np.uint8, (dtype, out.shape, out.dtype)
    return np.ascontiguousarray(out[:, :, ::-1])


def _rankset(rankset: str) -> dict[str, list]:
    if rankset not in RANKSETS:
        raise InputError(f"unknown rankset {rankset!r} (known: {', '.join(RANKSETS)})")
    return RANKSETS[rankset]


# ---------------------------------------------------------------------------------------------------------
# MATLAB building blocks


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """MATLAB ``uint8(x)``: round half away from zero, saturate to 0..255 (NaN becomes 0)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def imnoise_gaussian(rgb: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    """MATLAB ``imnoise(I, 'gaussian', 0, variance)`` of a uint8 image."""
    noisy = rgb / 255.0 + np.sqrt(variance) * rng.standard_normal(rgb.shape)
    return _to_uint8(np.clip(noisy, 0.0, 1.0) * 255.0)


def rgb2ycbcr_uint8(rgb: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr`` of a uint8 image: studio-range YCbCr, rounded to uint8."""
    return _to_uint8(rgb / 255.0 @ _YCC_MATRIX.T + _YCC_OFFSET)


def ycbcr2rgb_double(ycbcr01: np.ndarray) -> np.ndarray:
    """MATLAB ``ycbcr2rgb`` of a double image (YCbCr / 255): RGB in [0, 1], clipped."""
    rgb = (ycbcr01 * 255.0 - _YCC_OFFSET) @ _YCC_INVERSE.T
    return np.clip(rgb, 0.0, 1.0)


def fspecial_gaussian(hsize: int, sigma: float) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', hsize, sigma)``: hsize x hsize, tiny values zeroed, sum 1."""
    half = (hsize - 1) / 2.0
    axis = np.arange(hsize) - half
    kernel = np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2.0 * sigma ** 2))
    kernel[kernel < np.finfo(np.float64).eps * kernel.max()] = 0.0
    return kernel / kernel.sum()


def gaussian_blur(rgb: np.ndarray, hsize: int, sigma: float) -> np.ndarray:
    """``imfilter(I, fspecial('gaussian', hsize, sigma), 'symmetric')`` of a uint8 image.

    The kernel is separable (its thresholded tail never triggers for sigma >= hsize / 6), so two 1-D
    passes in float64 give the 2-D correlation up to float rounding, at a fraction of the cost for the
    199-tap kernel. scipy's ``reflect`` mode is MATLAB's ``symmetric`` (the edge pixel is repeated) and it
    keeps mirroring for kernels larger than the image.
    """
    half = (hsize - 1) / 2.0
    taps = np.exp(-((np.arange(hsize) - half) ** 2) / (2.0 * sigma ** 2))
    taps /= taps.sum()
    out = ndimage.correlate1d(rgb.astype(np.float64), taps, axis=0, mode="reflect")
    out = ndimage.correlate1d(out, taps, axis=1, mode="reflect")
    return _to_uint8(out)


def multithresh(values: np.ndarray, n_thresholds: int) -> np.ndarray:
    """Multi-level Otsu thresholds of uint8 ``values`` (MATLAB ``multithresh``), ascending.

    Maximises the between-class variance over the 256-bin histogram exactly, by dynamic programming over
    contiguous classes (the objective sum_k S_k^2 / P_k is additive over classes). MATLAB searches with
    fminsearch for N > 2, which can stop at a local optimum; the global one is the defined answer.
    Threshold t_k is the last grey level of class k (values <= t_1 form class 1).
    """
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    prob = hist / hist.sum()
    cum_p = np.concatenate([[0.0], np.cumsum(prob)])
    cum_s = np.concatenate([[0.0], np.cumsum(prob * np.arange(256))])
    # score[a, b] = S^2 / P of the class holding grey levels a..b-1 (a < b), -inf elsewhere.
    mass = cum_p[None, :] - cum_p[:, None]
    moment = cum_s[None, :] - cum_s[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(mass > 1e-15, moment ** 2 / np.where(mass > 1e-15, mass, 1.0), 0.0)
    score[np.tril_indices(257)] = -np.inf
    n_classes = n_thresholds + 1
    best = score[0].copy()            # best[b]: one class covering levels 0..b-1
    choice = np.zeros((n_classes, 257), dtype=np.int64)
    for k in range(1, n_classes):
        total = best[:, None] + score  # [a, b]: k classes on 0..a-1, then class a..b-1
        choice[k] = np.argmax(total, axis=0)
        best = total[choice[k], np.arange(257)]
    bounds = []
    end = 256
    for k in range(n_classes - 1, 0, -1):
        end = int(choice[k][end])
        bounds.append(end - 1)       # last grey level of the class before
    return np.array(sorted(bounds), dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------
# The distortions: (rgb uint8, parameter, level, rng) -> rgb uint8


def _gaussian_noise(rgb, variance, level, rng):
    return imnoise_gaussian(rgb, variance, rng)


def _colour_noise(rgb, variance, level, rng):
    ycbcr = rgb2ycbcr_uint8(rgb) / 255.0
    noisy = ycbcr + np.sqrt(variance) * rng.standard_normal(ycbcr.shape)
    return _to_uint8(ycbcr2rgb_double(noisy) * 255.0)


def _high_frequency_noise(rgb, variance, level, rng):
    # The original multiplies the *unshifted* spectrum by a Gaussian high-pass centred on (rows/2, cols/2)
    # (1-based), i.e. it damps the frequencies near Nyquist and keeps DC: almost a no-op, reproduced as is.
    rows, cols = rgb.shape[:2]
    i = np.arange(1, rows + 1)[:, None] - rows / 2.0
    j = np.arange(1, cols + 1)[None, :] - cols / 2.0
    mask = 1.0 - np.exp(-(i ** 2 + j ** 2) / (2.0 * 10.0 ** 2))
    spectrum = np.fft.fft2(rgb.astype(np.float64), axes=(0, 1)) * mask[:, :, None]
    filtered = _to_uint8(np.real(np.fft.ifft2(spectrum, axes=(0, 1))))
    return imnoise_gaussian(filtered, variance, rng)


def _impulse_noise(rgb, density, level, rng):
    draw = rng.random(rgb.shape)
    out = rgb.copy()
    out[draw < density / 2.0] = 0
    out[(draw >= density / 2.0) & (draw < density)] = 255
    return out


def _quantisation_noise(rgb, n_thresholds, level, rng):
    thresholds = multithresh(rgb, n_thresholds)
    values = np.concatenate([[0], thresholds[1:], [255]]).astype(np.uint8)
    return values[np.searchsorted(thresholds, rgb, side="left")]


def _gaussian_blur(rgb, hsize, level, rng):
    return gaussian_blur(rgb, hsize, hsize / 6.0)


def _image_denoising(rgb, variance, level, rng):
    import bm3d  # slow to import; only this type needs it

    noisy = imnoise_gaussian(rgb, variance, rng) / 255.0
    awgn = np.random.default_rng(_ID_AWGN_SEED).standard_normal(rgb.shape)
    # The default profile ('np', as CBM3D's normal profile) with one thread: the library's threads sum the
    # aggregation in a varying order, which changes a few pixels by one grey level from run to run.
    profile = bm3d.BM3DProfile()
    profile.num_threads = 1
    estimate = bm3d.bm3d_rgb(noisy + _ID_AWGN_SIGMA * awgn, _ID_AWGN_SIGMA, profile=profile)
    return _to_uint8(np.asarray(estimate) * 255.0)


def _jpeg(rgb, quality, level, rng):
    # libjpeg treats quality 0 (LIVE level 5) as 1; OpenCV's default 4:2:0 chroma subsampling.
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])


def encode_jp2k(rgb: np.ndarray, bpp: float) -> bytes:
    """JPEG 2000 (.jp2, lossy 9/7 wavelet) of an RGB uint8 image at ``bpp`` bits per pixel.

    MATLAB's ``CompressionRatio`` is relative to the 24-bit input, as OpenJPEG's ``rates``; both count the
    whole file, so ``len(result) * 8 / (H * W)`` tracks ``bpp`` (up to the header, on tiny images).
    """
    buffer = io.BytesIO()
    # mct=1: the standard irreversible RGB -> YCbCr component transform, as MATLAB's writer applies to
    # colour images; Pillow's default (0) codes R, G, B separately, 2-3.5 dB worse at the same size.
    Image.fromarray(rgb, mode="RGB").save(buffer, format="JPEG2000", quality_mode="rates",
                                          quality_layers=[24.0 / bpp], irreversible=True, mct=1)
    return buffer.getvalue()


def _jpeg2000(rgb, bpp, level, rng):
    with Image.open(io.BytesIO(encode_jp2k(rgb, bpp))) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8).copy()


def _non_eccentricity_noise(rgb, n_patches, level, rng):
    rows, cols = rgb.shape[:2]
    out = rgb.copy()
    for _ in range(n_patches):
        # MATLAB randi([1, W-30]) -> 0-based 0..W-31; the patch is copied from the *original* image.
        r = int(rng.integers(0, rows - 30))
        c = int(rng.integers(0, cols - 30))
        out[r:r + 15, c:c + 15] = rgb[r + 5:r + 20, c + 5:c + 20]
    return out


def _block_wise(rgb, n_blocks, level, rng):
    mean = rgb.reshape(-1, 3).mean(axis=0)
    colour = {1: [0.0, mean[1], mean[2]], 2: [mean[0] + 50, mean[1], mean[2]],
              3: [mean[0] + 30, mean[1], mean[2]]}.get(level, list(mean))
    block = _to_uint8(np.array(colour))
    rows, cols = rgb.shape[:2]
    out = rgb.copy()
    for _ in range(n_blocks):
        # randi([1, W-32]) for rows and randi([2, H-32]) for columns (the original's bounds), 0-based.
        r = int(rng.integers(0, rows - 32))
        c = int(rng.integers(1, cols - 32))
        out[r:r + 32, c:c + 32] = block
    return out


def _mean_shift(rgb, shift, level, rng):
    return np.clip(rgb.astype(np.int16) + int(shift), 0, 255).astype(np.uint8)


def _contrast_change(rgb, factor, level, rng):
    return _to_uint8(rgb.astype(np.float64) * factor)


def _colour_saturation(rgb, factor, level, rng):
    ycbcr = rgb2ycbcr_uint8(rgb) / 255.0
    ycbcr[:, :, 1:] = 0.5 + (ycbcr[:, :, 1:] - 0.5) * factor
    return _to_uint8(ycbcr2rgb_double(ycbcr) * 255.0)


def _multiplicative_noise(rgb, std, level, rng):
    out = rgb.astype(np.float64)
    for channel in range(3):  # one noise field per channel, drawn in R, G, B order
        out[:, :, channel] *= 1.0 + std * rng.standard_normal(rgb.shape[:2])
    return _to_uint8(out)


def _colour_quantisation(rgb, n_colours, level, rng):
    # rgb2ind(I, n): minimum-variance palette + Floyd-Steinberg dithering. Pillow: median-cut palette refined
    # by k-means (which lowers the variance, as minimum-variance quantisation aims to), then a dithered
    # mapping onto it (Pillow only dithers when mapping onto a given palette).
    image = Image.fromarray(rgb, mode="RGB")
    palette = image.quantize(colors=int(n_colours), method=Image.Quantize.MEDIANCUT, kmeans=_CQD_KMEANS,
                             dither=Image.Dither.NONE)
    mapped = image.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
    return np.asarray(mapped.convert("RGB"), dtype=np.uint8).copy()


def _chromatic_aberration(rgb, size, level, rng):
    # The original shifts channel 1 (red) right by size-1 px and channel 2 (green; named B in the code) by
    # size/2-1 px, keeping the first columns, then blurs with a 3x3 Gaussian (sigma 0.5).
    out = rgb.copy()
    for channel, shift in ((0, int(size) - 1), (1, int(size) // 2 - 1)):
        if shift > 0:
            out[:, shift:, channel] = rgb[:, :-shift, channel]
    return gaussian_blur(out, 3, 0.5)


_OPERATIONS: dict[str, Callable[[np.ndarray, float, int, np.random.Generator], np.ndarray]] = {
    "GN": _gaussian_noise,
    "GNC": _colour_noise,
    "HFN": _high_frequency_noise,
    "IN": _impulse_noise,
    "QN": _quantisation_noise,
    "GB": _gaussian_blur,
    "ID": _image_denoising,
    "JPEG": _jpeg,
    "JP2K": _jpeg2000,
    "NEPN": _non_eccentricity_noise,
    "BW": _block_wise,
    "MSH": _mean_shift,
    "MSL": _mean_shift,
    "CCL": _contrast_change,
    "CCH": _contrast_change,
    "CS": _colour_saturation,
    "MGN": _multiplicative_noise,
    "CQD": _colour_quantisation,
    "CA": _chromatic_aberration,
}


_Operation = Callable[[np.ndarray, tuple[int, int], int, np.random.Generator], np.ndarray]


def _two_distortions(first: str, second: str) -> _Operation:
    """The operation of a grid type: ``first`` of the ``live`` set at the cell's first level, then ``second``
    at its second level, on the first one's uint8 result (as the multiply distorted LIVE database was made:
    blur, then JPEG or noise), with one generator for both."""

    def apply(rgb: np.ndarray, cell: tuple[int, int], level: int, rng: np.random.Generator) -> np.ndarray:
        out = rgb
        for dtype, step in ((first, cell[0]), (second, cell[1])):
            out = _OPERATIONS[dtype](out, RANKSETS["live"][dtype][step - 1], step, rng)
        return out

    return apply


_OPERATIONS.update({name: _two_distortions(*parts) for name, parts in GRID_TYPES.items()})
assert all(name in _OPERATIONS for types in RANKSETS.values() for name in types)
