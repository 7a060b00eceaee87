"""Pristine images for the ranking data (``data_prep.pristine``): which files of a folder count, the
embedded default set, names that can go into the lists, and which images are refused with which reason
(the generator's warn-and-skip around them is tested in ``tests/test_make_ranks.py``)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep import pristine
from rankiqa.errors import InputError


def test_a_folders_images_are_listed_by_name_whatever_the_suffixs_case(tmp_path: Path, write_image) -> None:
    for name in ("b.JPG", "a.png", "c.Tiff", ".hidden.png"):
        write_image(name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in pristine.list_images(tmp_path)] == ["a.png", "b.JPG", "c.Tiff"]
    assert pristine.resolve_sources(tmp_path) == pristine.list_images(tmp_path)


def test_missing_empty_and_colliding_folders_are_refused(tmp_path: Path, write_image) -> None:
    with pytest.raises(InputError, match="pristine folder not found"):
        pristine.list_images(tmp_path / "gone")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no images \(png/.*\) in the pristine folder"):
        pristine.list_images(tmp_path / "empty")
    write_image("twice/a.png")
    write_image("twice/a.bmp")
    with pytest.raises(InputError) as err:
        pristine.list_images(tmp_path / "twice")
    assert err.value.path == str(tmp_path / "twice" / "a.png")  # sorted: a.bmp first, a.png collides
    assert "same reference name 'a' as" in err.value.message


def test_the_default_set_is_the_embedded_colour_photographs() -> None:
    sources = pristine.resolve_sources("default")
    assert [p.name for p in sources] == sorted(pristine.DEFAULT_NAMES)
    assert all(p.parent == pristine.skimage_data_dir() for p in sources)


@pytest.mark.parametrize(("name", "ok"), [
    ("a b.png", True), ("ünïcode.png", True), ("a,b.png", False), ('a"b.png', False), (" a.png", False),
    ("a .png", False), ("a\nb.png", False),
])
def test_names_that_cannot_go_into_a_list_are_refused(name: str, ok: bool) -> None:
    if ok:
        pristine.check_name(name)
        return
    with pytest.raises(InputError, match="cannot go into a list"):
        pristine.check_name(name)


def _write(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda p: p.write_bytes(b"junk"), "unreadable or corrupt image"),
    (lambda p: p.write_bytes(b""), "unreadable or corrupt image"),
    (lambda p: _write(p, np.full((40, 40), 9, np.uint8)), "grayscale image: the distortions need a colour"),
    (lambda p: _write(p, np.full((40, 40, 3), 9, np.uint8)), "grayscale image (three equal channels)"),
    (lambda p: _write(p, np.zeros((40, 40, 4), np.uint8)), "alpha channel (RGBA)"),
    (lambda p: _write(p, np.zeros((40, 40, 3), np.uint16)), "uint16 image: only 8-bit"),
    (lambda p: _write(p, np.dstack([np.zeros((40, 30), np.uint8)] * 2 + [np.ones((40, 30), np.uint8)])),
     "image is 30x40, smaller than the 32x32 crop"),
    (lambda p: None, "image not found"),
])
def test_images_the_distortions_cannot_use_are_refused_naming_the_file(tmp_path: Path, make, fragment: str
                                                                      ) -> None:
    path = tmp_path / "img.png"
    make(path)
    with pytest.raises(InputError) as err:
        pristine.load_pristine(path, 32)
    assert fragment in err.value.message and err.value.path == str(path)


def test_a_colour_image_loads_as_its_bgr_bytes(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    loaded = pristine.load_pristine(_write(tmp_path / "a b.png", image), 32)
    np.testing.assert_array_equal(loaded, image)
    assert loaded.flags["C_CONTIGUOUS"] and pristine.reference_name(tmp_path / "a b.png") == "a b"
