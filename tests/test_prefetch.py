"""The data layers' shared machinery (``pylayers.params``, ``pylayers.images``, ``pylayers.prefetch``):
param_str parsing and checks, image sources, crops, per-batch generators and the prefetcher, through their
public names."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from pylayers.images import ImageSource, batch_rng, random_crop
from pylayers.params import check_shard, loader_params, param_bool, param_int, parse_params
from pylayers.prefetch import Prefetcher
from rankiqa.errors import InputError

LOADER = {"crop": 32, "seed": 0, "workers": 0, "prefetch": 2, "shard_index": 0, "shard_count": 1,
          "start_batch": 0}

# ----------------------------------------------------------------------------------------------------
# param_str


def test_parse_params_fills_defaults_and_reads_yaml_or_json() -> None:
    defaults = {"crop": 224, "seed": 0}
    assert parse_params("{crop: 32}", "L", defaults) == {"crop": 32, "seed": 0}
    assert parse_params('{"seed": 5, "list": "a b.txt"}', "L", defaults, required=("list",)) == {
        "crop": 224, "seed": 5, "list": "a b.txt"}
    assert parse_params("", "L", defaults) == defaults and parse_params(None, "L", defaults) == defaults
    assert defaults == {"crop": 224, "seed": 0}  # the defaults themselves are left as they were


@pytest.mark.parametrize(("param_str", "fragment"), [
    ("{crop: 32, cropp: 3}", "unknown key(s) ['cropp']; known: ['crop', 'list', 'seed']"),
    ("{crop: [1, 2", "param_str is not valid YAML"),
    ("- crop", "param_str must be a mapping"),
    ("crop", "param_str must be a mapping"),
    ("{crop: 32}", "missing required key(s) ['list']"),
    ("{crop: !!python/object:os.system x}", "param_str is not valid YAML"),  # never constructs objects
])
def test_parse_params_refuses_what_would_silently_change_nothing(param_str: str, fragment: str) -> None:
    with pytest.raises(InputError) as err:
        parse_params(param_str, "MyLayer", {"crop": 224, "seed": 0}, required=("list",))
    assert fragment in err.value.message and err.value.path == "MyLayer"


@pytest.mark.parametrize(("value", "minimum", "fragment"), [
    (True, None, "n must be an integer, got True"),
    (2.0, None, "n must be an integer, got 2.0"),
    ("3", None, "n must be an integer, got '3'"),
    (0, 1, "n must be >= 1, got 0"),
])
def test_param_int_refuses_bools_floats_strings_and_values_below_minimum(value: object, minimum: int | None,
                                                                          fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        param_int({"n": value}, "n", "L", minimum)


def test_param_int_and_param_bool_return_valid_values() -> None:
    assert param_int({"n": 0}, "n", "L", 0) == 0 and param_int({"n": -4}, "n", "L") == -4
    assert param_bool({"b": False}, "b", "L") is False
    with pytest.raises(InputError, match="b must be true or false, got 1"):
        param_bool({"b": 1}, "b", "L")


def test_shards_must_lie_in_the_shard_count() -> None:
    check_shard(1, 2, "L")
    for index, count in ((2, 2), (-1, 2)):
        with pytest.raises(InputError, match=rf"shard_index {index} must be in \[0, shard_count={count}\)"):
            check_shard(index, count, "L")


def test_loader_params_checks_every_shared_key() -> None:
    assert loader_params(dict(LOADER, shard_index=1, shard_count=3), "L") == dict(LOADER, shard_index=1,
                                                                                 shard_count=3)
    for key, bad in (("crop", 0), ("prefetch", 0), ("workers", -1), ("start_batch", -1), ("seed", 1.5),
                     ("shard_count", 0)):
        with pytest.raises(InputError, match=key):
            loader_params(dict(LOADER, **{key: bad}), "L")
    with pytest.raises(InputError, match="shard_index 3"):
        loader_params(dict(LOADER, shard_index=3, shard_count=3), "L")


# ----------------------------------------------------------------------------------------------------
# Image sources and crops


def test_image_source_reads_files_under_its_root_or_as_given(write_image) -> None:
    path = write_image("set/a b.png", seed=3)
    expected = cv2.imread(str(path), cv2.IMREAD_COLOR)
    source = ImageSource(path.parent)
    np.testing.assert_array_equal(source.read("a b.png"), expected)
    np.testing.assert_array_equal(ImageSource().read(str(path)), expected)
    assert source.describe("a b.png") == str(path) and ImageSource().describe("x.png") == "x.png"
    assert source.missing(["a b.png", "gone.png", "sub/x.png"]) == ["gone.png", "sub/x.png"]


def test_an_unreadable_image_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    for name in ("broken.png", "gone.png"):
        with pytest.raises(InputError) as err:
            ImageSource(tmp_path).read(name)
        assert err.value.path == str(tmp_path / name) and "not decodable" in err.value.message


def test_an_lmdb_source_reads_the_encoded_bytes_by_relative_path(tmp_path: Path, write_image) -> None:
    lmdb = pytest.importorskip("lmdb")
    path = write_image("pristine/ref.png", seed=1)
    env = lmdb.open(str(tmp_path / "images.lmdb"), map_size=1 << 22)
    with env.begin(write=True) as txn:
        txn.put(b"pristine/ref.png", path.read_bytes())
    env.close()
    source = ImageSource(lmdb_path=tmp_path / "images.lmdb")
    np.testing.assert_array_equal(source.read("pristine/ref.png"), cv2.imread(str(path), cv2.IMREAD_COLOR))
    assert source.missing(["pristine/ref.png", "GB/GB1/ref.png"]) == ["GB/GB1/ref.png"]
    assert source.describe("x.png") == f"{tmp_path / 'images.lmdb'}[x.png]"
    with pytest.raises(InputError, match=r"key not in LMDB: GB/GB1/ref.png"):
        source.read("GB/GB1/ref.png")
    with pytest.raises(InputError, match="LMDB not found"):
        ImageSource(lmdb_path=tmp_path / "other.lmdb")


def test_random_crop_is_a_chw_window_anywhere_in_the_image_and_nowhere_outside() -> None:
    rows, cols = np.mgrid[0:6, 0:9]
    image = np.stack([rows, cols, rows * 0], axis=2).astype(np.uint8)
    rng = np.random.default_rng(0)
    corners = set()
    for _ in range(400):
        window = random_crop(image, 4, rng)
        assert window.shape == (3, 4, 4)
        top, left = int(window[0, 0, 0]), int(window[1, 0, 0])
        np.testing.assert_array_equal(window.transpose(1, 2, 0), image[top:top + 4, left:left + 4])
        corners.add((top, left))
    assert corners == {(top, left) for top in range(3) for left in range(6)}  # every offset, uniformly drawn
    np.testing.assert_array_equal(random_crop(image[:4, :4], 4, rng).transpose(1, 2, 0), image[:4, :4])
    with pytest.raises(InputError) as err:
        random_crop(image, 7, rng, "a.png")
    assert str(err.value) == "a.png: image 9x6 is smaller than the 7x7 crop"


def test_batch_generators_depend_on_seed_batch_and_stream_only() -> None:
    draw = [batch_rng(seed, batch, stream).integers(0, 1 << 30, 4).tolist()
            for seed, batch, stream in ((1, 7, 0), (1, 7, 0), (2, 7, 0), (1, 8, 0), (1, 7, 1))]
    assert draw[0] == draw[1]
    assert len({tuple(d) for d in draw}) == 4


# ----------------------------------------------------------------------------------------------------
# Prefetcher


def _build(index: int) -> dict[str, np.ndarray]:
    return {"data": np.full((2, 3), index, dtype=np.uint8), "label": np.array([index, -index], np.float32)}


@pytest.mark.parametrize("workers", [0, 2])
def test_the_prefetcher_delivers_the_shards_batches_in_order(workers: int) -> None:
    with Prefetcher(_build, workers=workers, prefetch=3, shard_index=1, shard_count=3, start_batch=2) as pf:
        got = [int(pf.next()["data"][0, 0]) for _ in range(5)]
        assert pf.global_index(0) == 1 and pf.global_index(4) == 13
    assert got == [7, 10, 13, 16, 19]  # shard 1 of 3 after 2 batches of its own


def test_a_closed_prefetcher_refuses_and_closing_twice_is_harmless() -> None:
    prefetcher = Prefetcher(_build, workers=1)
    prefetcher.next()
    prefetcher.close()
    prefetcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        prefetcher.next()
    with pytest.raises(ValueError, match="bad shard 2/2"):
        Prefetcher(_build, shard_index=2, shard_count=2)


def _fail_on_three(index: int) -> dict[str, np.ndarray]:
    if index == 3:
        raise InputError("image 3 is broken", "list.txt", 4)
    if index == 5:
        raise ZeroDivisionError("a bug in a builder")
    return _build(index)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_workers_input_error_reaches_the_caller_with_its_file_and_line(workers: int) -> None:
    with Prefetcher(_fail_on_three, workers=workers, start_batch=1) as prefetcher:
        assert int(prefetcher.next()["data"][0, 0]) == 1
        prefetcher.next()
        with pytest.raises(InputError) as err:
            prefetcher.next()
    assert str(err.value) == "list.txt:4: image 3 is broken"


def test_another_failure_in_a_worker_is_reported_with_its_traceback() -> None:
    with Prefetcher(_fail_on_three, workers=1, start_batch=5) as prefetcher:
        with pytest.raises(RuntimeError) as err:
            prefetcher.next()
    assert "data worker failed on batch 5" in str(err.value) and "ZeroDivisionError: a bug" in str(err.value)


def _die(index: int) -> dict[str, np.ndarray]:
    os._exit(7)


def test_a_worker_that_dies_is_reported_instead_of_waited_for() -> None:
    prefetcher = Prefetcher(_die, workers=1)
    with pytest.raises(RuntimeError, match=r"data worker died \(exit code 7\)"):
        prefetcher.next()
    with pytest.raises(RuntimeError, match="closed"):
        prefetcher.next()
