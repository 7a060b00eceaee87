"""Scoring with an exported ONNX model (``rankiqa.onnx_export``) in onnxruntime: no Caffe needed.

The crop protocol is the Caffe scorer's own (``rankiqa.scoring.CropScorer``: crops, seeds, batches, mean and
median); only the forward pass differs. What the deploy prototxt tells the Caffe scorer (input blob, crop
size, output blob) comes from the model's metadata, and so does the score direction the export decided.
Only ``onnxruntime`` is imported here (not ``onnx``), and the model file is read once, by the runtime.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from rankiqa import onnx_export, scoring
from rankiqa.errors import InputError


def _runtime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise InputError(f"cannot import onnxruntime ({err}); install the pinned requirements "
                         "(pip install -r requirements.txt)") from None
    return onnxruntime


def open_session(path: str | os.PathLike, gpu: int = -1) -> tuple[Any, scoring.DeployInfo, dict[str, str]]:
    """An onnxruntime session of the exported model ``path``, the ``DeployInfo`` its metadata describe, and
    the metadata (``onnx_export.METADATA_KEYS``).

    ``gpu`` >= 0 asks for onnxruntime's CUDA provider (device ``gpu``); where this onnxruntime has none,
    the CPU runs it and a note says so. Raises ``InputError`` naming the file when it is missing, not an
    ONNX model, or not one this project exported (metadata absent or malformed).
    """
    runtime = _runtime()
    path = str(path)
    if not Path(path).is_file():
        raise InputError("ONNX model not found", path)
    providers: list[Any] = ["CPUExecutionProvider"]
    if gpu >= 0:
        if "CUDAExecutionProvider" in runtime.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": gpu}))
        else:
            print(f"note: --gpu {gpu}: this onnxruntime has no CUDA provider; scoring on the CPU",
                  file=sys.stderr)
    options = runtime.SessionOptions()
    options.log_severity_level = 3  # errors only: the runtime's warnings would drown the progress bar
    try:
        session = runtime.InferenceSession(path, sess_options=options, providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types for unreadable models
        hint = (" (a Caffe model: score it with the Caffe backend, or export it first: make export)"
                if str(path).endswith(".caffemodel") else "")
        reason = str(err).strip().splitlines()[0]
        raise InputError(f"not a readable ONNX model{hint}: {reason}", path) from None
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    missing = [key for key in (onnx_export.META_INPUT_BLOB, onnx_export.META_INPUT_SIZE,
                               onnx_export.META_OUTPUT_BLOB) if key not in metadata]
    if missing:
        raise InputError(f"the model has no {', '.join(missing)} metadata: export it with `make export` "
                         "(python -m tools.export_onnx)", path)
    size = re.fullmatch(r"(\d+)x(\d+)", metadata[onnx_export.META_INPUT_SIZE])
    if size is None:
        raise InputError(f"metadata {onnx_export.META_INPUT_SIZE} is "
                         f"{metadata[onnx_export.META_INPUT_SIZE]!r}, expected HxW", path)
    inputs = [item.name for item in session.get_inputs()]
    outputs = [item.name for item in session.get_outputs()]
    input_blob, output_blob = metadata[onnx_export.META_INPUT_BLOB], metadata[onnx_export.META_OUTPUT_BLOB]
    if input_blob not in inputs or output_blob not in outputs:
        raise InputError(f"the metadata name input {input_blob!r} and output {output_blob!r}; the graph has "
                         f"inputs {inputs} and outputs {outputs}", path)
    info = scoring.DeployInfo(path=path, input_blob=input_blob, channels=3, crop_height=int(size.group(1)),
                              crop_width=int(size.group(2)), output_blob=output_blob)
    return session, info, metadata


def model_direction(metadata: dict[str, str], path: str | os.PathLike, flag: str | None) -> tuple[str, str]:
    """``(direction, source)`` of an exported model's scores: the ``flag`` when given, else what the export
    recorded (``score_direction``, decided there by ``rankiqa.scoring.model_direction``)."""
    if flag:
        return flag, "given on the command line"
    direction = metadata.get(onnx_export.META_DIRECTION, "unknown")
    source = metadata.get(onnx_export.META_DIRECTION_SOURCE, "no record")
    return direction, f"recorded in {Path(path).name} at export: {source}"


class OnnxCropScorer(scoring.CropScorer):
    """``rankiqa.scoring.CropScorer`` with an onnxruntime session as the net: the same crops, batches and
    summaries, the forward pass run by onnxruntime."""

    def _outputs(self, count: int) -> np.ndarray:
        return self.net.run([self.info.output_blob], {self.info.input_blob: self._buffer[:count]})[0]
