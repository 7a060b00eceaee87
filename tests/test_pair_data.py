"""The two-branch baseline's pair data (``pylayers.pair_data``): what a batch holds and declares, that it is
a pure function of (seed, batch index), and its layer in Caffe (LMDB, bad param_str). Pairs sampled inside
one group are checked in ``tests/test_rank_data.py`` with the ranked batches they are compared against."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pylayers.images import ImageSource
from pylayers.pair_data import PairBatchBuilder, PairDataLayer
from pylayers.prefetch import Prefetcher
from pylayers.rank_data import read_manifest
from rankiqa.errors import InputError
from tests.test_rank_data import data_net, make_rank_set

TOPS = ("data", "data_p", "label")


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    return make_rank_set(tmp_path / "ranks", levels=4, lmdb=True)


def _builder(manifest: Path, seed: int = 0, batch_size: int = 12) -> PairBatchBuilder:
    rank_set = read_manifest(manifest, "train")
    return PairBatchBuilder(rank_set, ImageSource(manifest.parent), batch_size, 16, seed)


def test_the_layer_declares_two_image_blobs_and_one_label_per_pair() -> None:
    assert PairDataLayer.static_tops("{manifest: m.csv, crop: 32}", [], 3) == [
        (None, 3, 32, 32), (None, 3, 32, 32), (None,)]
    with pytest.raises(InputError, match="3 tops"):
        PairDataLayer.static_tops("{manifest: m.csv}", [], 2)


def test_every_ordered_level_pair_is_drawn_and_the_label_follows_the_order(manifest: Path) -> None:
    builder = _builder(manifest)
    seen: Counter = Counter()
    for index in range(40):
        pairs = builder.plan(index)
        seen.update((a[2], b[2]) for a, b in pairs)
    levels = range(4)
    assert set(seen) == {(a, b) for a in levels for b in levels if a != b}
    batch = builder(3)
    assert batch["data"].shape == batch["data_p"].shape == (12, 3, 16, 16) and batch["data"].dtype == np.uint8
    expected = [1.0 if a[2] < b[2] else -1.0 for a, b in builder.plan(3)]
    np.testing.assert_array_equal(batch["label"], np.array(expected, dtype=np.float32))


def test_a_batch_depends_on_seed_and_index_only(manifest: Path) -> None:
    first, again = _builder(manifest, seed=5), _builder(manifest, seed=5)
    with Prefetcher(again, workers=2, shard_index=1, shard_count=2) as shard:
        for index in (1, 3, 5):
            expected, got = first(index), shard.next()
            for top in TOPS:
                np.testing.assert_array_equal(got[top], expected[top])
    assert first.plan(0) != _builder(manifest, seed=6).plan(0) and first.plan(0) != first.plan(1)


def test_the_layer_in_caffe_reads_the_lmdb_as_the_files(manifest: Path, tmp_path: Path, pycaffe) -> None:
    lmdb = manifest.parent / "images.lmdb"
    param = f"{{manifest: '{manifest}', lmdb: '{lmdb}', batch_size: 4, crop: 16, seed: 2, workers: 0}}"
    net = pycaffe.Net(str(data_net(tmp_path, param, "PairDataLayer", "pylayers.pair_data", TOPS)),
                      pycaffe.TRAIN)
    builder = _builder(manifest, seed=2, batch_size=4)
    for index in range(2):
        net.forward()
        for top, values in builder(index).items():
            np.testing.assert_array_equal(net.blobs[top].data, values.astype(np.float32))


@pytest.mark.parametrize(("param", "fragment"), [
    ("batch_size: 0", "batch_size must be >= 1, got 0"),
    ("lmdb: 'TMP/none.lmdb'", "LMDB not found"),
    ("split: test, types_per_batch: 2", "unknown key(s) ['types_per_batch']"),
])
def test_bad_param_str_in_caffe_names_the_problem(manifest: Path, tmp_path: Path, pycaffe, param: str,
                                                  fragment: str) -> None:
    param_str = f"{{manifest: '{manifest}', {param.replace('TMP', str(tmp_path))}}}"
    with pytest.raises(InputError) as err:
        pycaffe.Net(str(data_net(tmp_path, param_str, "PairDataLayer", "pylayers.pair_data", TOPS)),
                    pycaffe.TRAIN)
    assert fragment in str(err.value)
