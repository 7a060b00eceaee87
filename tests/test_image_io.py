"""Reading images as the original did (``rankiqa.image_io``): BGR uint8 0-255 from any file OpenCV decodes,
a missing and a corrupt file told apart, and the on-request upscaling of small images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from rankiqa.errors import InputError
from rankiqa.image_io import decode_bgr, read_bgr, upscale_to_min_side


def _encoded(image: np.ndarray, suffix: str = ".png") -> bytes:
    ok, data = cv2.imencode(suffix, image)
    assert ok
    return data.tobytes()


def test_colour_images_decode_to_the_same_bgr_bytes() -> None:
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for suffix in (".png", ".bmp"):
        decoded = decode_bgr(_encoded(image, suffix))
        assert decoded.dtype == np.uint8
        np.testing.assert_array_equal(decoded, image)


def test_grey_and_16_bit_images_become_8_bit_colour_as_cv2_imread_makes_them() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    np.testing.assert_array_equal(decode_bgr(_encoded(grey)), np.repeat(grey[..., None], 3, axis=2))
    deep = np.full((3, 4, 3), 0x1234, dtype=np.uint16)
    assert (decode_bgr(_encoded(deep)) == 0x12).all()  # the high byte


@pytest.mark.parametrize("data", [b"", b"GIF89a but not really"])
def test_bytes_that_are_no_image_are_named(data: bytes) -> None:
    with pytest.raises(InputError) as err:
        decode_bgr(data, "upload.png")
    assert err.value.path == "upload.png" and "cannot decode image" in err.value.message


def test_a_missing_a_corrupt_and_an_unreadable_file_get_distinct_messages(tmp_path: Path) -> None:
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    for name, fragment in (("gone.png", "image not found"), ("corrupt.png", "cannot decode image"),
                           ("", "cannot read image")):  # the folder itself
        with pytest.raises(InputError) as err:
            read_bgr(tmp_path / name)
        assert err.value.message.startswith(fragment) and err.value.path == str(tmp_path / name)


def test_paths_with_spaces_and_non_ascii_letters_read(tmp_path: Path) -> None:
    image = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    path = tmp_path / "qualité photo" / "é 1.png"
    path.parent.mkdir()
    path.write_bytes(_encoded(image))
    np.testing.assert_array_equal(read_bgr(path), image)


def test_upscaling_keeps_the_aspect_and_reaches_both_minimum_sides() -> None:
    image = np.zeros((100, 150, 3), dtype=np.uint8)
    assert upscale_to_min_side(image, 100, 150) is image  # large enough: untouched
    up = upscale_to_min_side(image, 224, 224)
    assert up.shape == (224, 336, 3)  # the short side sets the scale
    odd = upscale_to_min_side(np.zeros((97, 61, 3), dtype=np.uint8), 227, 227)
    assert odd.shape[:2] == (361, 227)  # 97 x 227 / 61 = 360.97, rounded up: never a pixel short
    assert upscale_to_min_side(np.zeros((10, 10, 3), dtype=np.uint8), 30, 20).shape == (30, 30, 3)
