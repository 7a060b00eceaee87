"""Fine-tuning data layer: epochs, shuffling, seeding, crops, prefetch, shards, bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pylayers.ft_data import FTBatchBuilder
from pylayers.images import ImageSource
from pylayers.prefetch import Prefetcher
from rankiqa.errors import InputError
from rankiqa.lists import read_list, write_list


def make_ft_list(root: Path, count: int = 7, size: tuple[int, int] = (36, 40)) -> Path:
    """``count`` images whose channel 0 is their row number in the list (+1), and a list of them.

    Channel 1/2 hold the pixel row/column, so a crop shows where it was cut. Relative paths, as the
    list reader resolves them against the list's folder.
    """
    height, width = size
    rows, cols = np.mgrid[0:height, 0:width]
    entries = []
    for index in range(count):
        image = np.stack([np.full((height, width), index + 1), rows, cols], axis=2).astype(np.uint8)
        name = f"img{index}.png"
        cv2.imwrite(str(root / name), image)
        entries.append((name, 0.5 * index + 1))
    list_path = root / "train.txt"
    write_list(list_path, entries)
    return list_path


def builder_for(list_path: Path, batch_size: int = 3, crop: int = 32, seed: int = 0,
                shuffle: bool = True) -> FTBatchBuilder:
    return FTBatchBuilder(read_list(list_path), ImageSource(), batch_size, crop, seed, shuffle)


def test_each_epoch_visits_every_image_once(tmp_path: Path) -> None:
    builder = builder_for(make_ft_list(tmp_path, count=7), batch_size=3)
    stream = [row for index in range(14) for row in builder.plan(index)]  # 42 = 6 epochs of 7
    epochs = [stream[k:k + 7] for k in range(0, 42, 7)]
    assert all(sorted(epoch) == list(range(7)) for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1  # reshuffled every epoch
    sequential = builder_for(tmp_path / "train.txt", batch_size=3, shuffle=False)
    assert [row for index in range(3) for row in sequential.plan(index)] == [0, 1, 2, 3, 4, 5, 6, 0, 1]
    assert sequential.plan(3) == [0, 1, 2]  # each pass of ceil(7 / 3) batches starts at the top


def test_batch_content_scores_and_crops(tmp_path: Path) -> None:
    list_path = make_ft_list(tmp_path)
    builder = builder_for(list_path, batch_size=5, seed=9)
    rows = read_list(list_path)
    batch = builder(2)
    data = batch["data"]
    assert data.shape == (5, 3, 32, 32) and data.dtype == np.uint8
    picked = builder.plan(2)
    np.testing.assert_array_equal(data[:, 0, 0, 0], [row + 1 for row in picked])
    np.testing.assert_allclose(batch["score"], [rows[row][1] for row in picked])
    assert batch["score"].dtype == np.float32
    tops, lefts = data[:, 1, 0, 0], data[:, 2, 0, 0]
    assert (tops <= 36 - 32).all() and (lefts <= 40 - 32).all()
    np.testing.assert_array_equal(data, builder_for(list_path, batch_size=5, seed=9)(2)["data"])
    assert not np.array_equal(data, builder_for(list_path, batch_size=5, seed=8)(2)["data"])


def test_workers_shards_and_resume_follow_the_same_stream(tmp_path: Path) -> None:
    builder = builder_for(make_ft_list(tmp_path), batch_size=4, seed=1)
    with Prefetcher(builder, workers=2, prefetch=2) as prefetcher:
        for index in range(4):
            np.testing.assert_array_equal(prefetcher.next()["data"], builder(index)["data"])
    shards = [Prefetcher(builder, workers=0, shard_index=s, shard_count=3) for s in range(3)]
    seen = [[shard.next()["data"] for _ in range(2)] for shard in shards]
    for s in range(3):
        for local in range(2):
            np.testing.assert_array_equal(seen[s][local], builder(local * 3 + s)["data"])
    resumed = Prefetcher(builder, workers=1, start_batch=5)
    try:
        np.testing.assert_array_equal(resumed.next()["data"], builder(5)["data"])
    finally:
        resumed.close()


def test_image_smaller_than_crop_names_the_image(tmp_path: Path) -> None:
    builder = builder_for(make_ft_list(tmp_path, size=(20, 40)), crop=32)
    with pytest.raises(InputError, match=r"img\d\.png: image 40x20 is smaller than the 32x32 crop"):
        builder(0)


# ----------------------------------------------------------------------------------------------------
# the Caffe layer


def ft_net(tmp_path: Path, param_str: str) -> Path:
    path = tmp_path / "ft_net.prototxt"
    path.write_text("layer { name: 'data' type: 'Python' top: 'data' top: 'score' python_param { "
                    f"module: 'pylayers.ft_data' layer: 'FTDataLayer' param_str: \"{param_str}\" }} }}\n")
    return path


@pytest.mark.caffe
def test_ft_data_layer_in_caffe(tmp_path: Path) -> None:
    caffe = pytest.importorskip("caffe")
    list_path = make_ft_list(tmp_path)
    net = caffe.Net(str(ft_net(tmp_path, f"{{list: '{list_path}', batch_size: 4, crop: 32, seed: 2}}")),
                    caffe.TRAIN)
    builder = builder_for(list_path, batch_size=4, seed=2)
    for index in range(3):
        net.forward()
        assert net.blobs["data"].data.shape == (4, 3, 32, 32) and net.blobs["data"].data.dtype == np.float32
        np.testing.assert_array_equal(net.blobs["data"].data, builder(index)["data"])
        np.testing.assert_allclose(net.blobs["score"].data, builder(index)["score"])


@pytest.mark.parametrize("param_str, fragment", [
    ("{list: MISSING}", "list file not found"),
    ("{list: LIST, shuffle: maybe}", "shuffle must be true or false"),
    ("{list: LIST, batch_size: 0}", "batch_size must be >= 1"),
    ("{lst: LIST}", "unknown key"),
    ("{list: LIST, crop: [224, 224]}", "crop must be an integer"),
])
@pytest.mark.caffe
def test_bad_param_str_in_caffe(tmp_path: Path, param_str: str, fragment: str) -> None:
    caffe = pytest.importorskip("caffe")
    list_path = make_ft_list(tmp_path)
    param_str = param_str.replace("LIST", f"'{list_path}'").replace("MISSING", f"'{tmp_path}/none.txt'")
    with pytest.raises(InputError) as err:
        caffe.Net(str(ft_net(tmp_path, param_str)), caffe.TRAIN)
    assert fragment in str(err.value)


@pytest.mark.caffe
def test_missing_image_in_list_names_the_line(tmp_path: Path) -> None:
    caffe = pytest.importorskip("caffe")
    list_path = make_ft_list(tmp_path)
    (tmp_path / "img3.png").unlink()
    with pytest.raises(InputError, match=r"train.txt:4: image not found"):
        caffe.Net(str(ft_net(tmp_path, f"{{list: '{list_path}'}}")), caffe.TRAIN)
