"""Reading images the way the original did: ``cv2.imread`` colour, BGR, uint8 0-255, no resize."""

from __future__ import annotations

import os

import cv2
import numpy as np

from rankiqa.errors import InputError


def decode_bgr(data: bytes, name: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes (PNG, BMP, JPEG ...) to an HxWx3 BGR uint8 array.

    Grey images become 3 identical channels and 16-bit images are scaled to 8 bits (``IMREAD_COLOR``),
    as ``cv2.imread`` does. Raises ``InputError`` naming ``name`` when the bytes are not an image.
    """
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        raise InputError("cannot decode image (unsupported or corrupt file)", name)
    return image


def read_bgr(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as HxWx3 BGR uint8; ``InputError`` naming the file when it cannot be read.

    The bytes are read by Python and decoded by OpenCV (rather than ``cv2.imread(path)``) so that a
    missing file and a corrupt one get distinct messages, and non-ASCII paths work everywhere.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise InputError("image not found", path) from None
    except OSError as err:
        raise InputError(f"cannot read image: {err.strerror or err}", path) from None
    return decode_bgr(data, path)


def upscale_to_min_side(image: np.ndarray, min_height: int, min_width: int) -> np.ndarray:
    """Upscale (bicubic, aspect ratio kept) so that the image is at least ``min_height`` x ``min_width``.

    Images already large enough are returned unchanged. Used only on request (``--resize-small``):
    the paper's protocol never resizes.
    """
    height, width = image.shape[:2]
    if height >= min_height and width >= min_width:
        return image
    # In integers: the side that sets the scale gets its minimum exactly, the other one is rounded up, so
    # that it is never a pixel short of the crop (a float scale made 100x150 -> 224 into 225x337).
    if min_height * width >= min_width * height:
        new_height, new_width = min_height, max(min_width, -(-width * min_height // height))
    else:
        new_height, new_width = max(min_height, -(-height * min_width // width)), min_width
    return cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_CUBIC)
