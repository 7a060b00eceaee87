"""Score images with a trained model (``make predict``): a CSV of path, score and median.

The protocol is the evaluation's (``rankiqa.scoring``): ``--crops`` random crops of the deploy net's input
size per image (seeded by ``--seed`` and the image's position in the input order), score = mean of the
outputs, median beside it.

With ``--backend onnx`` the net is a model exported by ``tools.export_onnx``, run by onnxruntime
(``rankiqa.onnx_scoring``; no Caffe needed): the same crops, its input size and score direction read from
the model's metadata (the direction as decided at export, or ``--direction``).

Score direction (the ``direction`` and ``scale`` columns): ``rankiqa.scoring.model_direction``, as every
tool: ``--direction`` when given; else the record of the run that trained the model (``run.json`` beside its
``snapshots/``); else the released models by file name (Rank_tid2013/FT_tid2013: higher = better;
Rank_live/FT_live: higher = worse); else a ranking head (``fc8_m``) gives *relative* scores, higher =
better, and a fine-tuned head (``fc8``) scores on the scale of its training labels (MOS: higher = better,
DMOS: higher = worse), reported as ``unknown``.

Images smaller than the crop are skipped with a message, or upscaled (bicubic, aspect kept) with
``--resize-small`` (the ``upscaled_from`` column and the summary name them, with their size). Unreadable
files are reported on stderr and skipped; the exit status is non-zero only
when no image could be scored.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rankiqa import metrics, scoring
from rankiqa.errors import InputError, cli_main
from rankiqa.fsutil import atomic_write_text
from rankiqa.image_io import read_bgr, upscale_to_min_side
from rankiqa.paths import IMAGE_SUFFIXES

#: ``upscaled_from``: the original ``WxH`` of an image ``--resize-small`` upscaled (empty for the others).
COLUMNS = ("path", "score", "median", "direction", "scale", "upscaled_from")
#: Who runs the net: Caffe (``rankiqa.scoring``) or onnxruntime (``rankiqa.onnx_scoring``), same crops.
BACKENDS = ("caffe", "onnx")


def collect_images(inputs: Sequence[str]) -> list[Path]:
    """Files as given, and the image files under each folder (recursive, sorted, by extension)."""
    found: list[Path] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(path)  # a missing file is reported when it is read, like any unreadable one
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=BACKENDS, default="caffe",
                        help="caffe (a caffemodel and its deploy prototxt) or onnx (a model written by "
                             "tools.export_onnx, run by onnxruntime: no Caffe needed)")
    parser.add_argument("--deploy", help="deploy prototxt (input size and score blob are read from it); "
                                         "caffe backend only: an ONNX model carries them")
    parser.add_argument("--model", required=True, help="caffemodel, or the .onnx file with --backend onnx")
    parser.add_argument("--images", required=True, nargs="+", help="image files and/or folders")
    parser.add_argument("--out", required=True, help="output CSV")
    parser.add_argument("--direction", choices=scoring.DIRECTIONS, default=None,
                        help="direction of the model's scores (default: inferred, see above)")
    parser.add_argument("--resize-small", action="store_true",
                        help="upscale images smaller than the crop instead of skipping them")
    scoring.add_crop_arguments(parser)
    return parser


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    scoring.check_crop_arguments(args)
    images = collect_images(args.images)
    if not images:
        raise InputError(f"no image files found in {' '.join(args.images)}")
    if args.backend == "onnx":
        from rankiqa import onnx_scoring

        if args.deploy:
            raise InputError("--deploy is for the caffe backend: an ONNX model carries its input size and "
                             "score blob", args.deploy)
        session, info, metadata = onnx_scoring.open_session(args.model, args.gpu)
        scorer: scoring.CropScorer = onnx_scoring.OnnxCropScorer(session, info, args.crops, args.batch,
                                                                 args.seed)
        direction, source = onnx_scoring.model_direction(metadata, args.model, args.direction)
    else:
        if not args.deploy:
            raise InputError("--deploy is required with the caffe backend")
        net, info = scoring.load_net(args.deploy, args.model, args.gpu)
        scorer = scoring.CropScorer(net, info, args.crops, args.batch, args.seed)
        direction, source = scoring.model_direction(info, args.model, args.direction)
    scale = info.score_scale

    def load(index: int) -> np.ndarray | str:
        """The image ready to crop, or the reason it is skipped."""
        try:
            image = read_bgr(images[index])
        except InputError as err:
            return err.message
        if not scorer.fits(image):
            if not args.resize_small:
                return (f"image {image.shape[1]}x{image.shape[0]} (WxH) is smaller than the "
                        f"{info.crop_width}x{info.crop_height} crop (use --resize-small to upscale it)")
            upscaled[index] = f"{image.shape[1]}x{image.shape[0]}"
            image = upscale_to_min_side(image, info.crop_height, info.crop_width)
        return image

    skipped = 0
    upscaled: dict[int, str] = {}  # image index -> its size (WxH) before --resize-small

    def readable():
        nonlocal skipped
        for index, future in scoring.prefetch(load, range(len(images))):
            result = future.result()
            if isinstance(result, str):
                skipped += 1
                tqdm.write(f"warning: {images[index]}: {result}: skipped", file=sys.stderr)
                continue
            yield index, index, result

    rows: list[tuple[str, float, float, str]] = []
    with tqdm(total=len(images), desc="predict", unit="img", disable=args.quiet, file=sys.stderr) as bar:
        for index, values in scorer.score(readable()):
            mean, median = scoring.summarize(values)
            rows.append((str(images[index]), mean, median, upscaled.get(index, "")))
            bar.update(1)
    if not rows:
        raise InputError(f"none of the {len(images)} images could be scored")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for path, mean, median, original in rows:
        writer.writerow([path, repr(mean), repr(median), direction, scale, original])
    atomic_write_text(args.out, buffer.getvalue())
    resized = [f"{path} ({original})" for path, _, _, original in rows if original]
    upscaled_note = f", {len(resized)} upscaled to the crop (--resize-small): {', '.join(resized)}"
    print(f"{len(rows)} images scored, {skipped} skipped{upscaled_note if resized else ''}"
          + f" -> {args.out} (output {info.output_blob}: {scale} scores, {direction}; {source})",
          file=sys.stderr)
    constant = metrics.constant_scores([mean for _, mean, _, _ in rows])
    if constant:
        print(f"warning: {constant}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
