"""pylayers/crops_data.py: the saved-crops data layer checks its param_str and file before Caffe builds."""

from __future__ import annotations

import numpy as np
import pytest

from pylayers.crops_data import CropsDataLayer
from rankiqa.errors import InputError


def test_the_top_is_batch_crops_of_the_files_shape(tmp_path):
    crops = tmp_path / "crops.npy"
    np.save(crops, np.zeros((5, 3, 8, 6), dtype=np.float32))
    assert CropsDataLayer.static_tops(f"{{crops: '{crops}', batch: 2}}", [], 1) == [(2, 3, 8, 6)]


def test_bad_param_str_or_file_is_refused_naming_it(tmp_path):
    crops = tmp_path / "crops.npy"
    np.save(crops, np.zeros((5, 3, 8, 6), dtype=np.float32))
    with pytest.raises(InputError, match=r"unknown key\(s\) \['batches'\]"):
        CropsDataLayer.static_tops(f"{{crops: '{crops}', batches: 2}}", [], 1)
    with pytest.raises(InputError, match=r"missing required key\(s\) \['batch'\]"):
        CropsDataLayer.static_tops(f"{{crops: '{crops}'}}", [], 1)
    with pytest.raises(InputError, match="batch must be >= 1"):
        CropsDataLayer.static_tops(f"{{crops: '{crops}', batch: 0}}", [], 1)
    with pytest.raises(InputError, match="needs no bottoms and 1 top; got 0/2"):
        CropsDataLayer.static_tops(f"{{crops: '{crops}', batch: 2}}", [], 2)
    missing = tmp_path / "none.npy"
    with pytest.raises(InputError) as caught:
        CropsDataLayer.static_tops(f"{{crops: '{missing}', batch: 2}}", [], 1)
    assert caught.value.path == str(missing) and "cannot read the crops" in caught.value.message
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((5, 8, 6), dtype=np.float32))
    with pytest.raises(InputError, match=r"must be \(K, 3, H, W\)"):
        CropsDataLayer.static_tops(f"{{crops: '{flat}', batch: 2}}", [], 1)
