"""Tests of experiments.rank_speed: the crop, the measured table's shape, the projection and its table."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from data_prep import distortions
from experiments import rank_speed
from rankiqa.errors import InputError


def test_the_crop_is_centred_and_a_small_image_is_refused(tmp_path):
    image = np.arange(40 * 60 * 3, dtype=np.uint32).reshape(40, 60, 3).astype(np.uint8)
    path = tmp_path / "i.png"
    assert cv2.imwrite(str(path), image)
    crop = rank_speed.crop_image(str(path), 20, 10)
    assert crop.shape == (10, 20, 3) and np.array_equal(crop, image[15:25, 20:40])
    assert rank_speed.crop_image(None, 512, 384).shape == (384, 512, 3)  # scikit-image's coffee, 600x400
    with pytest.raises(InputError, match="60x40, smaller than the 64x48 crop") as err:
        rank_speed.crop_image(str(path), 64, 48)
    assert err.value.path == str(path)


def test_measure_times_every_level_of_each_type(monkeypatch):
    monkeypatch.setitem(distortions.RANKSETS, "mini", {"GN": [0.01, 0.05], "MSH": [15, 30]})
    table = rank_speed.measure(np.full((48, 64, 3), 128, np.uint8), "mini", repeats=2)
    assert list(table) == ["GN", "MSH"] and all(len(levels) == 2 for levels in table.values())
    for levels in table.values():
        for entry in levels:
            assert entry["runs"] == 2 and entry["seconds"] >= 0 and entry["wall_seconds"] >= 0
            assert entry["png_bytes"] > 0


def test_projection_multiplies_seconds_and_sizes_by_the_references():
    table = {"A": [{"seconds": 1.0, "png_bytes": 100}, {"seconds": 3.0, "png_bytes": 300}],
             "B": [{"seconds": 36.0, "png_bytes": 1000}, {"seconds": 0.0, "png_bytes": 0}]}
    both = rank_speed.projection(table, pristine_bytes=50, references=3600, types=["A", "B"])
    assert both == {"images": 3600 * 4, "core_hours": 40.0, "disk_gb": (100 + 300 + 1000 + 50) * 3600 / 1e9}
    only_a = rank_speed.projection(table, pristine_bytes=50, references=3600, types=["A"])
    assert only_a["images"] == 7200 and only_a["core_hours"] == 4.0


def test_the_table_has_a_row_per_type_and_a_line_per_projection():
    levels = [{"seconds": 0.5, "wall_seconds": 1.5, "png_bytes": 2048}] * 4
    result = {"table": {"GN": levels, "ID": levels},
              "projections": {"all (2 types)": {"images": 37952, "core_hours": 21.1, "disk_gb": 0.4}}}
    lines = rank_speed.markdown(result).splitlines()
    assert lines[0].startswith("| type | level 1 | level 2 | level 3 | level 4 | mean | mean wall |")
    assert lines[2] == "| GN | 0.5 | 0.5 | 0.5 | 0.5 | 0.5 | 1.5 | 2 |"
    assert lines[-1] == "- all (2 types): 37,952 images, 21 core-hours, 0 GB of PNG files"
