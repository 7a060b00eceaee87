"""Ranked-batch data layer: batch layout, determinism, prefetch, shards, LMDB, bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from pylayers.images import ImageSource
from pylayers.pair_data import PairBatchBuilder
from pylayers.prefetch import Prefetcher
from pylayers.rank_data import RankBatchBuilder, open_source, read_manifest
from rankiqa.errors import InputError

TYPES = ("GB", "GN", "JPEG")


def image_code(ref: int, type_index: int, level: int) -> int:
    """The value of channel 0 of a fixture image: identifies reference, type and level."""
    return 1 + ref * 30 + type_index * 6 + level


def make_rank_set(root: Path, n_refs: int = 4, types: tuple[str, ...] = TYPES, levels: int = 3,
                  size: tuple[int, int] = (40, 48), test_refs: int = 1, lmdb: bool = False) -> Path:
    """A tiny ``make ranks`` output folder; returns its manifest.csv.

    Image pixels: channel 0 = :func:`image_code`, channel 1 = row, channel 2 = column (mod 256), so a
    crop tells which image it came from and where it was cut.
    """
    height, width = size
    rows, cols = np.mgrid[0:height, 0:width]
    records = []
    for ref in range(n_refs):
        name = f"ref{ref:02d}"
        split = "test" if ref >= n_refs - test_refs else "train"
        for t, distortion in enumerate(types):
            for level in range(levels):
                rel = f"pristine/{name}.png" if level == 0 else f"{distortion}/{distortion}{level}/{name}.png"
                code = np.full((height, width), image_code(ref, t, level))
                image = np.stack([code, rows % 256, cols % 256], axis=2).astype(np.uint8)
                if level == 0:
                    # the pristine file is shared by all types: its code must not depend on the type
                    image[..., 0] = image_code(ref, 0, 0)
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    cv2.imwrite(str(path), image)
                records.append((name, distortion, level, rel, split))
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["reference", "type", "level", "path", "split"])
        writer.writerows(records)
    if lmdb:
        import lmdb as lmdb_module

        env = lmdb_module.open(str(root / "images.lmdb"), map_size=1 << 26)
        with env.begin(write=True) as txn:
            for *_, rel, _split in records:
                txn.put(rel.encode("utf-8"), (root / rel).read_bytes())
        env.close()
    return manifest


def decode(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per item: the image code, crop top and crop left."""
    return data[:, 0, 0, 0].astype(int), data[:, 1, 0, 0].astype(int), data[:, 2, 0, 0].astype(int)


def expected_code(rank_set, reference: str, distortion: str, level: int) -> int:
    ref = rank_set.references.index(reference)
    return image_code(ref, 0 if level == 0 else TYPES.index(distortion), level)


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    return make_rank_set(tmp_path)


def test_tid_style_layout(manifest: Path) -> None:
    rank_set = read_manifest(manifest, "train")
    assert rank_set.references == ["ref00", "ref01", "ref02"] and rank_set.levels == [0, 1, 2]
    builder = RankBatchBuilder(rank_set, ImageSource(manifest.parent), types_per_batch=2, images_per_group=1,
                               crop=32, seed=3)
    assert builder.batch_size == 2 * 1 * 3
    seen_types = set()
    for index in range(7):
        items = builder.plan(index)
        refs = {item[0] for item in items}
        assert refs == {rank_set.references[index % 3]}  # one reference per batch, advancing
        groups = [item[3] for item in items]
        assert groups == [0, 0, 0, 1, 1, 1]  # contiguous groups
        for g in range(2):
            group = [item for item in items if item[3] == g]
            assert [item[2] for item in group] == [0, 1, 2]  # levels in order
            assert len({item[1] for item in group}) == 1  # one type per group
        types = [items[0][1], items[3][1]]
        assert types[0] != types[1]
        seen_types.update(types)
        batch = builder(index)
        assert batch["data"].shape == (6, 3, 32, 32) and batch["data"].dtype == np.uint8
        codes, tops, lefts = decode(batch["data"])
        assert list(codes) == [expected_code(rank_set, *item[:3]) for item in items]
        assert ((0 <= tops) & (tops <= 40 - 32)).all() and ((0 <= lefts) & (lefts <= 48 - 32)).all()
        np.testing.assert_array_equal(batch["label"], [item[2] for item in items])
        np.testing.assert_array_equal(batch["group"], groups)
    assert seen_types == set(TYPES)  # the subset of types is drawn at random


def test_live_style_layout(tmp_path: Path) -> None:
    manifest = make_rank_set(tmp_path, n_refs=5, levels=4)
    rank_set = read_manifest(manifest, "train")
    builder = RankBatchBuilder(rank_set, None, types_per_batch=3, images_per_group=2, crop=32, seed=0)
    assert builder.batch_size == 3 * 2 * 4
    first, second, third = builder.plan(0), builder.plan(1), builder.plan(2)
    assert {i[0] for i in first} == {"ref00", "ref01"} and {i[0] for i in second} == {"ref02", "ref03"}
    assert {i[0] for i in third} == {"ref00", "ref01"}  # 4 train refs / 2: wraps after two batches
    assert [i[1] for i in first[::8]] == list(TYPES)  # all types: sorted order
    group0 = first[:8]
    assert [(i[2], i[0]) for i in group0] == [(lvl, ref) for lvl in range(4) for ref in ("ref00", "ref01")]


def test_crops_vary_and_batches_are_seeded(manifest: Path) -> None:
    rank_set = read_manifest(manifest, "train")
    source = ImageSource(manifest.parent)
    builder = RankBatchBuilder(rank_set, source, 3, 1, 32, seed=5)
    again = RankBatchBuilder(rank_set, source, 3, 1, 32, seed=5)
    other = RankBatchBuilder(rank_set, source, 3, 1, 32, seed=6)
    np.testing.assert_array_equal(builder(4)["data"], again(4)["data"])
    assert not np.array_equal(builder(4)["data"], other(4)["data"])
    _, tops, lefts = decode(builder(0)["data"])
    assert len(set(zip(tops, lefts, strict=True))) > 1  # each image gets its own crop


def test_aligned_crops_share_one_window_per_reference_and_group(tmp_path: Path) -> None:
    rank_set = read_manifest(make_rank_set(tmp_path, n_refs=5, levels=4), "train")
    source = ImageSource(tmp_path)
    for images_per_group in (1, 2):
        builder = RankBatchBuilder(rank_set, source, 3, images_per_group, 32, seed=3, aligned_crops=True)
        batch = builder(1)
        _, tops, lefts = decode(batch["data"])
        plan = builder.plan(1)
        windows: dict[tuple[str, int], set[tuple[int, int]]] = {}
        for (reference, _, _, group), top, left in zip(plan, tops, lefts, strict=True):
            windows.setdefault((reference, group), set()).add((top, left))
        assert all(len(w) == 1 for w in windows.values())  # every level of a reference: one window
        assert len({next(iter(w)) for w in windows.values()}) > 1  # groups and references differ
    # the default stays the original's: one crop per image
    independent = RankBatchBuilder(rank_set, source, 3, 1, 32, seed=3)
    _, tops, lefts = decode(independent(1)["data"][:4])
    assert len(set(zip(tops, lefts, strict=True))) > 1


def test_mixed_references_spread_one_batch_over_the_references(tmp_path: Path) -> None:
    rank_set = read_manifest(make_rank_set(tmp_path, n_refs=5, levels=3), "train")  # 4 train references
    source = ImageSource(tmp_path)
    builder = RankBatchBuilder(rank_set, source, 3, 1, 32, seed=2, mixed_references=True)
    for index in range(5):
        items = builder.plan(index)
        per_group = {group: {item[0] for item in items if item[3] == group} for group in range(3)}
        # one reference per group, group g is g references further than group 0, all advance per batch
        assert all(len(refs) == 1 for refs in per_group.values())
        assert [next(iter(per_group[g])) for g in range(3)] == [
            rank_set.references[(index + g) % 4] for g in range(3)]
        codes, _, _ = decode(builder(index)["data"])
        assert list(codes) == [expected_code(rank_set, *item[:3]) for item in items]
    # LIVE style: windows of two references, group g starts g windows further (2 windows of 4 refs)
    live = RankBatchBuilder(rank_set, None, 3, 2, 32, seed=2, mixed_references=True)
    groups = [{item[0] for item in live.plan(0) if item[3] == g} for g in range(3)]
    assert groups == [{"ref00", "ref01"}, {"ref02", "ref03"}, {"ref00", "ref01"}]
    # the default stays the original's: one reference for the whole batch
    assert {item[0] for item in RankBatchBuilder(rank_set, None, 3, 1, 32, seed=2).plan(1)} == {"ref01"}


def test_prefetch_workers_give_the_same_bytes_and_shards_are_disjoint(manifest: Path) -> None:
    rank_set = read_manifest(manifest, "train")
    builder = RankBatchBuilder(rank_set, ImageSource(manifest.parent), 2, 1, 32, seed=1)
    with Prefetcher(builder, workers=0) as sync, Prefetcher(builder, workers=2, prefetch=3) as workers:
        for index in range(5):
            a, b = sync.next(), workers.next()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
            np.testing.assert_array_equal(a["data"], builder(index)["data"])
    shards = [Prefetcher(builder, workers=1, shard_index=s, shard_count=2) for s in range(2)]
    try:
        got = [[shard.next()["data"] for _ in range(3)] for shard in shards]
    finally:
        for shard in shards:
            shard.close()
    for local in range(3):
        for s in range(2):
            np.testing.assert_array_equal(got[s][local], builder(local * 2 + s)["data"])
    resumed = Prefetcher(builder, workers=0, start_batch=3)
    np.testing.assert_array_equal(resumed.next()["data"], builder(3)["data"])


def test_worker_errors_reach_the_caller(manifest: Path) -> None:
    rank_set = read_manifest(manifest, "train")
    (manifest.parent / "GN" / "GN2" / "ref01.png").write_bytes(b"not a png")
    builder = RankBatchBuilder(rank_set, ImageSource(manifest.parent), 3, 1, 32, seed=1)
    with Prefetcher(builder, workers=2) as prefetcher:
        prefetcher.next()  # ref00
        with pytest.raises(InputError, match=r"GN2/ref01.png.*not decodable"):
            prefetcher.next()
    too_big = RankBatchBuilder(rank_set, ImageSource(manifest.parent), 3, 1, 64, seed=1)
    with pytest.raises(InputError, match="smaller than the 64x64 crop"):
        too_big(0)


def test_lmdb_source_gives_the_same_batches(tmp_path: Path) -> None:
    manifest = make_rank_set(tmp_path, lmdb=True)
    rank_set = read_manifest(manifest, "train")
    from_files = RankBatchBuilder(rank_set, open_source(rank_set, None, "t"), 2, 1, 32, seed=2)
    from_lmdb = RankBatchBuilder(rank_set, open_source(rank_set, str(tmp_path / "images.lmdb"), "t"),
                                 2, 1, 32, seed=2)
    with Prefetcher(from_lmdb, workers=2) as prefetcher:
        for index in range(3):
            np.testing.assert_array_equal(prefetcher.next()["data"], from_files(index)["data"])


def test_pair_builder_samples_pairs_within_groups(manifest: Path) -> None:
    rank_set = read_manifest(manifest, "train")
    builder = PairBatchBuilder(rank_set, ImageSource(manifest.parent), batch_size=40, crop=32, seed=0)
    batch = builder(0)
    codes_a, _, _ = decode(batch["data"])
    codes_b, _, _ = decode(batch["data_p"])
    labels = set()
    for (a, b), label, code_a, code_b in zip(builder.plan(0), batch["label"], codes_a, codes_b, strict=True):
        assert a[:2] == b[:2] and a[2] != b[2]
        assert label == (1.0 if a[2] < b[2] else -1.0)
        assert code_a == expected_code(rank_set, *a) and code_b == expected_code(rank_set, *b)
        labels.add(float(label))
    assert labels == {1.0, -1.0}


# ----------------------------------------------------------------------------------------------------
# bad input


def test_missing_manifest_and_images(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "nope.csv", "train")
    manifest = make_rank_set(tmp_path)
    (tmp_path / "GB" / "GB1" / "ref01.png").unlink()
    rank_set = read_manifest(manifest, "train")
    with pytest.raises(InputError, match=r"manifest.csv:\d+: 1 image\(s\) missing, first .*GB1/ref01.png"):
        open_source(rank_set, None, "RankDataLayer")
    with pytest.raises(InputError, match="LMDB not found"):
        open_source(rank_set, str(tmp_path / "none.lmdb"), "RankDataLayer")


def test_incomplete_or_malformed_manifest(tmp_path: Path) -> None:
    manifest = make_rank_set(tmp_path)
    lines = manifest.read_text().splitlines()
    dropped = [line for line in lines if not line.startswith("ref01,GN,2,")]
    manifest.write_text("\n".join(dropped) + "\n")
    with pytest.raises(InputError, match="'ref01' has no image for type 'GN' level 2"):
        read_manifest(manifest, "train")
    manifest.write_text("\n".join(lines[:3] + ["ref00,GB,x,a.png,train"]) + "\n")
    with pytest.raises(InputError, match=r"manifest.csv:4: level 'x' is not an integer"):
        read_manifest(manifest, "train")
    manifest.write_text("reference,type,path\nref00,GB,a.png\n")
    with pytest.raises(InputError, match="missing column"):
        read_manifest(manifest, "train")
    make_rank_set(tmp_path)
    with pytest.raises(InputError, match="no rows with split 'val'"):
        read_manifest(manifest, "val")


def test_layouts_that_cannot_be_formed(manifest: Path) -> None:
    rank_set = read_manifest(manifest, "train")
    with pytest.raises(InputError, match="types_per_batch 9 cannot be formed from 3"):
        RankBatchBuilder(rank_set, None, 9, 1, 32, 0)
    with pytest.raises(InputError, match="images_per_group 4 cannot be formed from 3"):
        RankBatchBuilder(rank_set, None, 3, 4, 32, 0)


# ----------------------------------------------------------------------------------------------------
# the Caffe layer


def data_net(tmp_path: Path, param_str: str, layer: str = "RankDataLayer", module: str = "pylayers.rank_data",
             tops: tuple[str, ...] = ("data", "label", "group")) -> Path:
    top_lines = " ".join(f"top: '{t}'" for t in tops)
    path = tmp_path / "data_net.prototxt"
    path.write_text(f"layer {{ name: 'data' type: 'Python' {top_lines} python_param {{ module: '{module}' "
                    f"layer: '{layer}' param_str: \"{param_str}\" }} }}\n")
    return path


@pytest.mark.caffe
def test_rank_data_layer_in_caffe(manifest: Path, tmp_path: Path) -> None:
    caffe = pytest.importorskip("caffe")
    param = f"{{manifest: '{manifest}', types_per_batch: 3, crop: 32, seed: 4, workers: 1, prefetch: 2}}"
    net = caffe.Net(str(data_net(tmp_path, param)), caffe.TRAIN)
    builder = RankBatchBuilder(read_manifest(manifest, "train"), ImageSource(manifest.parent), 3, 1, 32, 4)
    for index in range(2):
        net.forward()
        data = net.blobs["data"].data
        assert data.shape == (9, 3, 32, 32) and data.dtype == np.float32
        assert 0 <= data.min() and data.max() <= 255
        expected = builder(index)
        np.testing.assert_array_equal(data, expected["data"].astype(np.float32))
        np.testing.assert_array_equal(net.blobs["label"].data, expected["label"])
        np.testing.assert_array_equal(net.blobs["group"].data, expected["group"])


@pytest.mark.caffe
def test_pair_data_layer_in_caffe(manifest: Path, tmp_path: Path) -> None:
    caffe = pytest.importorskip("caffe")
    param = f"{{manifest: '{manifest}', batch_size: 5, crop: 32, seed: 6, workers: 0}}"
    net = caffe.Net(str(data_net(tmp_path, param, "PairDataLayer", "pylayers.pair_data",
                                 ("data", "data_p", "label"))), caffe.TRAIN)
    builder = PairBatchBuilder(read_manifest(manifest, "train"), ImageSource(manifest.parent), 5, 32, 6)
    for index in range(2):
        net.forward()
        assert net.blobs["data"].data.shape == net.blobs["data_p"].data.shape == (5, 3, 32, 32)
        expected = builder(index)
        for top in ("data", "data_p", "label"):
            np.testing.assert_array_equal(net.blobs[top].data, expected[top].astype(np.float32))
        assert set(np.unique(net.blobs["label"].data)) <= {-1.0, 1.0}


@pytest.mark.parametrize("param_str, fragment", [
    ("{split: train}", "give one of 'manifest' (a rank set on disk) and 'online'"),
    ("{manifest: MANIFEST, crop: big}", "crop must be an integer"),
    ("{manifest: MANIFEST, shard_index: 2, shard_count: 2}", "shard_index 2"),
    ("{manifest: MANIFEST, types_per_batch: 4}", "types_per_batch 4 cannot be formed"),
    ("{manifest: MANIFEST, batchsize: 4}", "unknown key"),
    ("manifest", "must be a mapping"),
    ("{manifest: MISSING}", "manifest not found"),
])
@pytest.mark.caffe
def test_bad_param_str_in_caffe(manifest: Path, tmp_path: Path, param_str: str, fragment: str) -> None:
    caffe = pytest.importorskip("caffe")
    param_str = param_str.replace("MANIFEST", f"'{manifest}'").replace("MISSING", f"'{tmp_path}/x.csv'")
    with pytest.raises(InputError) as err:
        caffe.Net(str(data_net(tmp_path, param_str)), caffe.TRAIN)
    assert fragment in str(err.value)


def test_a_manifest_with_a_byte_order_mark_reads_as_without(manifest: Path, tmp_path: Path) -> None:
    from rankiqa.manifest import manifest_levels

    plain = read_manifest(manifest, "train")
    levels = manifest_levels(manifest)
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes())
    again = read_manifest(manifest, "train")
    assert (again.references, again.types, again.levels) == (plain.references, plain.types, plain.levels)
    assert manifest_levels(manifest) == levels
