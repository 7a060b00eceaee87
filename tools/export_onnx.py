"""Export a deploy net and its caffemodel to ONNX (``make export``): one ``.onnx`` file, scored by
``make predict BACKEND=onnx`` (onnxruntime, no Caffe) or loaded in other frameworks.

The conversion and the metadata it writes (input size, score direction ...) are described in
``rankiqa/onnx_export.py``. Needs no Caffe: the caffemodel is read with the project's protobuf helpers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rankiqa import onnx_export, scoring
from rankiqa.errors import cli_main
from rankiqa.fsutil import format_bytes


def default_out(model: str) -> Path:
    """``x.onnx`` beside the caffemodel ``x.caffemodel``."""
    return Path(model).with_suffix(".onnx")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.export_onnx", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deploy", required=True, help="deploy prototxt of the model")
    parser.add_argument("--model", required=True, help="caffemodel")
    parser.add_argument("--out", help="output .onnx file (default: the caffemodel's name with .onnx)")
    parser.add_argument("--direction", choices=scoring.DIRECTIONS, default=None,
                        help="score direction to record (default: inferred as by make predict)")
    return parser


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out) if args.out else default_out(args.model)
    result = onnx_export.export(args.deploy, args.model, out, args.direction)
    meta = result.metadata
    print(f"{len(result.layers)} layers -> {out} ({format_bytes(out.stat().st_size)}, opset "
          f"{onnx_export.OPSET}); input {meta[onnx_export.META_INPUT_BLOB]} "
          f"Nx3x{meta[onnx_export.META_INPUT_SIZE]} ({onnx_export.INPUT_LAYOUT}), output "
          f"{meta[onnx_export.META_OUTPUT_BLOB]}: {meta[onnx_export.META_SCALE]} scores, "
          f"{meta[onnx_export.META_DIRECTION]} ({meta[onnx_export.META_DIRECTION_SOURCE]})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
