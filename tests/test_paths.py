"""rankiqa.paths: the repository root, prototxts/ and the image suffixes, stated once."""

from __future__ import annotations

from pathlib import Path

from rankiqa import paths


def test_the_root_holds_the_pipeline_and_paths_under_it_read_relative(tmp_path):
    assert (paths.REPO_ROOT / "Makefile").is_file() and (paths.PROTOTXT_DIR / "solvers").is_dir()
    assert paths.repo_relative(paths.PROTOTXT_DIR / "vgg16" / "ft_deploy.prototxt") == \
        "prototxts/vgg16/ft_deploy.prototxt"
    assert paths.repo_relative(tmp_path / "x.prototxt") == str(tmp_path / "x.prototxt")  # outside: as given


def test_image_suffixes_are_lower_case_and_cover_the_databases_files():
    assert all(s == s.lower() and s.startswith(".") for s in paths.IMAGE_SUFFIXES)
    # TID2013 and LIVE ship BMP files, CSIQ and KADID-10k PNG; photographs are mostly JPEG.
    assert {".bmp", ".png", ".jpg", ".jpeg"} <= set(paths.IMAGE_SUFFIXES)
    assert Path("I01_01_1.BMP").suffix.lower() in paths.IMAGE_SUFFIXES
