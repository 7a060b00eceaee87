"""Online ranked batches (pylayers.online_source): the batches of a generated rank set, bit for bit."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep import distortions, make_ranks, pristine
from pylayers import online_source
from pylayers.prefetch import Prefetcher
from pylayers.rank_data import RankBatchBuilder, open_source, read_manifest
from rankiqa.errors import InputError
from rankiqa.manifest import manifest_levels
from tests.caffe_marks import needs_caffe

SIZE = 80   # small photographs keep generation fast
CROP = 48
MIN_SIZE = 64
SEED = 5
# Random (GN, NEPN: patch positions), global (MSL) and codec (JPEG) types: the keyed randomness and every
# kind of distortion function are exercised; ID is left to the precomputed tests.
TYPES = ["GN", "JPEG", "NEPN", "MSL"]


def _write_pristine(folder: Path, n: int = 4) -> Path:
    """``n`` colour crops of scikit-image photographs, PNG and BMP (lossless), one name with a space."""
    folder.mkdir(parents=True, exist_ok=True)
    data = pristine.skimage_data_dir()
    astronaut = cv2.imread(str(data / "astronaut.png"), cv2.IMREAD_COLOR)
    coffee = cv2.imread(str(data / "coffee.png"), cv2.IMREAD_COLOR)
    crops = [astronaut[100:100 + SIZE, 180:180 + SIZE], coffee[150:150 + SIZE, 200:200 + SIZE],
             astronaut[300:300 + SIZE, 0:SIZE], coffee[50:50 + SIZE, 350:350 + SIZE + 10]]
    for index, image in enumerate(crops[:n]):
        name = f"ref {index}.png" if index == 1 else f"ref{index}.{'bmp' if index == 2 else 'png'}"
        assert cv2.imwrite(str(folder / name), np.ascontiguousarray(image))
    return folder


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    return _write_pristine(tmp_path_factory.mktemp("pristine"))


@pytest.fixture(scope="module")
def generated(src, tmp_path_factory) -> Path:
    """The rank set `make ranks` writes for the same pristine images, types and seed."""
    out = tmp_path_factory.mktemp("ranks") / "tid2013"
    make_ranks.generate("tid2013", src, out, seed=SEED, jobs=1, types=TYPES, min_size=MIN_SIZE,
                        progress=False, test_fraction=0.25)
    return out


def _spec(src: Path, **extra) -> dict:
    return {"pristine": str(src), "rankset": "tid2013", "seed": SEED, "types": TYPES, "min_size": MIN_SIZE,
            "test_fraction": 0.25, **extra}


def _assert_same_batch(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("split, types_per_batch, aligned", [
    ("train", 2, False), ("train", 4, True), ("test", 3, False)])
def test_online_batches_equal_the_generated_rank_sets_bit_for_bit(src, generated, split, types_per_batch,
                                                                  aligned):
    on_disk = read_manifest(generated / "manifest.csv", split)
    rank_set, source = online_source.open_online(_spec(src), split, "t")
    assert (rank_set.references, rank_set.types, rank_set.levels) == (
        on_disk.references, on_disk.types, on_disk.levels)
    assert rank_set.paths == on_disk.paths
    files = RankBatchBuilder(on_disk, open_source(on_disk, None, "t"), types_per_batch, 1, CROP, seed=7,
                             aligned_crops=aligned)
    online = RankBatchBuilder(rank_set, source, types_per_batch, 1, CROP, seed=7, aligned_crops=aligned)
    for index in range(5):  # several references and type draws
        _assert_same_batch(online(index), files(index))
    # every image, not only the crops: the pristine ones and each distorted level
    for key, path in on_disk.paths.items():
        np.testing.assert_array_equal(source.read(path), cv2.imread(str(generated / path)), err_msg=str(key))


def test_another_seed_gives_other_images(src, generated):
    rank_set, source = online_source.open_online(_spec(src, seed=SEED + 1), "train", "t")
    path = rank_set.paths[(rank_set.references[0], "GN", 2)]
    assert not np.array_equal(source.read(path), cv2.imread(str(generated / path)))


def test_live_style_groups_of_two_images_match(src, tmp_path):
    out = tmp_path / "live"
    make_ranks.generate("live", src, out, seed=SEED, jobs=1, min_size=MIN_SIZE, progress=False,
                        test_fraction=0)
    on_disk = read_manifest(out / "manifest.csv", "train")
    spec = {"pristine": str(src), "rankset": "live", "seed": SEED, "min_size": MIN_SIZE, "test_fraction": 0}
    rank_set, source = online_source.open_online(spec, "train", "t")
    files = RankBatchBuilder(on_disk, open_source(on_disk, None, "t"), 4, 2, CROP, seed=1)
    online = RankBatchBuilder(rank_set, source, 4, 2, CROP, seed=1)
    for index in range(3):
        _assert_same_batch(online(index), files(index))


def test_grid_rank_set_batches_are_the_chains_make_ranks_lists(src, tmp_path):
    """mlive: the nine cells of a grid type are only partially ordered; online groups are its chains, as
    in the manifest of `make ranks`, so no group ranks e.g. GB1_JPEG3 against GB2_JPEG1."""
    out = tmp_path / "mlive"
    make_ranks.generate("mlive", src, out, seed=SEED, jobs=1, min_size=MIN_SIZE, progress=False,
                        test_fraction=0.25)
    spec = {"pristine": str(src), "rankset": "mlive", "seed": SEED, "min_size": MIN_SIZE,
            "test_fraction": 0.25}
    plan = online_source.plan_online(spec, "t")
    # what the driver sizes the batches by: the top rank of a chain, as it reads it from a manifest
    assert plan.max_level == manifest_levels(out / "manifest.csv")[0] == distortions.GRID_LEVELS
    for split in ("train", "test"):
        on_disk = read_manifest(out / "manifest.csv", split)
        rank_set, source = online_source.open_online(spec, split, "t")
        assert (rank_set.references, rank_set.types, rank_set.levels) == (
            on_disk.references, on_disk.types, on_disk.levels)
        assert rank_set.paths == on_disk.paths
        for key, path in on_disk.paths.items():
            np.testing.assert_array_equal(source.read(path), cv2.imread(str(out / path)), err_msg=str(key))
    on_disk = read_manifest(out / "manifest.csv", "train")
    rank_set, source = online_source.open_online(spec, "train", "t")
    n_chains = len(rank_set.types)
    files = RankBatchBuilder(on_disk, open_source(on_disk, None, "t"), n_chains, 1, CROP, seed=2)
    online = RankBatchBuilder(rank_set, source, n_chains, 1, CROP, seed=2)
    for index in range(2):
        _assert_same_batch(online(index), files(index))
    # every group's cells rise (or stay) in both distortions with its rank: a chain, never a crossing pair
    for index in range(2):
        ranked: dict[int, list[tuple[int, tuple[int, int]]]] = {}
        for reference, group, rank, number in online.plan(index):
            _, dtype, level = source.keys[rank_set.paths[(reference, group, rank)]]
            cell = distortions.grid_cell(dtype, level) if level else (0, 0)
            ranked.setdefault(number, []).append((rank, cell))
        for members in ranked.values():
            cells = [cell for _, cell in sorted(members)]
            assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(cells, cells[1:], strict=False)), cells


def test_prefetch_workers_resume_and_shards_as_for_batches_on_disk(src, generated):
    on_disk = read_manifest(generated / "manifest.csv", "train")
    files = RankBatchBuilder(on_disk, open_source(on_disk, None, "t"), 2, 1, CROP, seed=3)
    rank_set, source = online_source.open_online(_spec(src), "train", "t")
    online = RankBatchBuilder(rank_set, source, 2, 1, CROP, seed=3)
    # 0 or 2 workers: the same bytes, in the same order as the files' batches
    with Prefetcher(online, workers=2, prefetch=3) as workers:
        for index in range(4):
            _assert_same_batch(workers.next(), files(index))
    # a resumed stream continues where it stopped
    with Prefetcher(online, workers=1, start_batch=3) as resumed:
        _assert_same_batch(resumed.next(), files(3))
    # GPU shares (shard s of 2 gets batches s, s + 2, ...): disjoint, and together the unsharded stream
    shares = [Prefetcher(online, workers=1, shard_index=s, shard_count=2) for s in range(2)]
    try:
        got = [[share.next() for _ in range(2)] for share in shares]
    finally:
        for share in shares:
            share.close()
    for local in range(2):
        for s in range(2):
            _assert_same_batch(got[s][local], files(local * 2 + s))


# JPEG stands in for ID below (BM3D takes seconds even on tiny images): `offline` names the types.
SLOW = {"offline": ["JPEG"]}


def test_id_is_not_made_online_by_default_and_offline_none_makes_every_type_online(src):
    every = _spec(src, types="all")
    assert "ID" in online_source.plan_online(every, "t").left_out
    assert online_source.plan_online({**every, "offline": "none"}, "t").online == [
        t for t in make_ranks.parse_types("tid2013", "all")]
    assert online_source.plan_online({**every, "offline": "GN,CQD"}, "t").left_out == ["GN", "CQD"]
    with pytest.raises(InputError, match="offline: unknown distortion type"):
        online_source.plan_online({**every, "offline": ["XX"]}, "t")


def test_slow_types_are_read_from_a_precomputed_folder_or_left_out(src, generated, tmp_path):
    precomputed = tmp_path / "tid2013_JPEG"
    make_ranks.generate("tid2013", src, precomputed, seed=SEED, jobs=1, types=["JPEG"], min_size=MIN_SIZE,
                        progress=False, test_fraction=0.25)
    plan = online_source.plan_online(_spec(src, precomputed=str(precomputed), **SLOW), "t")
    assert (plan.online, plan.precomputed_types, plan.left_out) == (["GN", "NEPN", "MSL"], ["JPEG"], [])
    assert any(f"JPEG read from {precomputed}" in note for note in plan.notes())
    rank_set = plan.rank_set("train")
    source = online_source.OnlineSource(plan, rank_set)
    on_disk = read_manifest(generated / "manifest.csv", "train")
    assert rank_set.paths == on_disk.paths
    files = RankBatchBuilder(on_disk, open_source(on_disk, None, "t"), 4, 1, CROP, seed=2)
    online = RankBatchBuilder(rank_set, source, 4, 1, CROP, seed=2)
    for index in range(3):
        _assert_same_batch(online(index), files(index))
    path = rank_set.paths[(rank_set.references[0], "JPEG", 3)]
    assert source.describe(path) == str(precomputed / path)  # read, not made
    # its images are what is read: a replaced one shows in the batch
    cv2.imwrite(str(precomputed / path), np.zeros((SIZE, SIZE, 3), np.uint8))
    assert not source.read(path).any()

    left = online_source.plan_online(_spec(src, **SLOW), "t")
    assert (left.online, left.precomputed_types, left.left_out) == (["GN", "NEPN", "MSL"], [], ["JPEG"])
    assert left.rank_set("train").types == ["GN", "MSL", "NEPN"]
    assert any("JPEG left out" in note for note in left.notes())


def test_a_precomputed_folder_of_other_settings_or_images_is_refused(src, tmp_path):
    other_seed = tmp_path / "seed9"
    make_ranks.generate("tid2013", src, other_seed, seed=9, jobs=1, types=["JPEG"], min_size=MIN_SIZE,
                        progress=False)
    with pytest.raises(InputError, match="other settings.*seed") as err:
        online_source.plan_online(_spec(src, precomputed=str(other_seed), **SLOW), "t")
    assert err.value.path == str(other_seed / make_ranks.SETTINGS_FILE)
    with pytest.raises(InputError, match="not a `make ranks` output folder"):
        online_source.plan_online(_spec(src, precomputed=str(tmp_path), **SLOW), "t")

    same = tmp_path / "same"
    make_ranks.generate("tid2013", src, same, seed=SEED, jobs=1, types=["JPEG"], min_size=MIN_SIZE,
                        progress=False)
    gone = same / make_ranks.relative_path("ref0", "JPEG", 2)
    gone.unlink()
    with pytest.raises(InputError, match="precomputed image missing") as err:
        online_source.plan_online(_spec(src, precomputed=str(same), **SLOW), "t")
    assert err.value.path == str(gone)

    changed = _write_pristine(tmp_path / "changed")
    image = cv2.imread(str(changed / "ref0.png"))
    cv2.imwrite(str(changed / "ref0.png"), 255 - image)
    make_ranks.generate("tid2013", src, same, seed=SEED, jobs=1, types=["JPEG"], min_size=MIN_SIZE,
                        progress=False)  # complete again
    with pytest.raises(InputError, match="other pristine images.*ref0"):
        online_source.plan_online(_spec(changed, precomputed=str(same), **SLOW), "t")

    # made with another numpy: the images made online beside them would come from other versions
    record_path = same / make_ranks.SETTINGS_FILE
    record = json.loads(record_path.read_text())
    record["libraries"] = {**record["libraries"], "numpy": "1.0.0"}
    record_path.write_text(json.dumps(record))
    with pytest.raises(InputError, match=r"precomputed images: folder was generated with other library "
                                         r"versions \(numpy 1\.0\.0 there") as err:
        online_source.plan_online(_spec(src, precomputed=str(same), **SLOW), "t")
    assert err.value.path == str(record_path)


def test_bad_specs_and_pristine_folders_are_named(src, tmp_path):
    with pytest.raises(InputError, match=r"unknown key\(s\) \['sed'\]"):
        online_source.plan_online({"pristine": str(src), "sed": 1}, "layer")
    with pytest.raises(InputError, match="must be a mapping"):
        online_source.plan_online("dir", "layer")
    with pytest.raises(InputError, match="seed must be an integer"):
        online_source.plan_online(_spec(src, seed="x"), "layer")
    with pytest.raises(InputError, match="unknown distortion type"):
        online_source.plan_online(_spec(src, types=["GN", "XX"]), "layer")
    with pytest.raises(InputError, match="pristine folder not found") as err:
        online_source.plan_online(_spec(tmp_path / "none"), "layer")
    assert err.value.path == str(tmp_path / "none")
    # a bad image is skipped, as `make ranks` skips it, and said
    mixed = _write_pristine(tmp_path / "mixed", 2)
    cv2.imwrite(str(mixed / "grey.png"), np.full((SIZE, SIZE), 128, np.uint8))
    warnings: list[str] = []
    plan = online_source.plan_online(_spec(mixed), "layer", warnings.append)
    assert list(plan.sources) == ["ref 1", "ref0"]
    assert len(warnings) == 1 and "grey.png" in warnings[0] and "grayscale" in warnings[0]
    assert any("grey.png" in note for note in plan.notes())


# ----------------------------------------------------------------------------------------------------
# the Caffe layer and the driver


def _data_net(tmp_path: Path, param: dict) -> Path:
    path = tmp_path / "data_net.prototxt"
    path.write_text("layer { name: 'data' type: 'Python' top: 'data' top: 'label' top: 'group' "
                    "python_param { module: 'pylayers.rank_data' layer: 'RankDataLayer' "
                    f"param_str: '{json.dumps(param)}' }} }}\n")
    return path


@needs_caffe
def test_the_rank_data_layer_takes_online_in_place_of_manifest(src, generated, tmp_path):
    import caffe

    param = {"online": _spec(src), "types_per_batch": 2, "crop": CROP, "seed": 4, "workers": 1}
    net = caffe.Net(str(_data_net(tmp_path, param)), caffe.TRAIN)
    on_disk = read_manifest(generated / "manifest.csv", "train")
    files = RankBatchBuilder(on_disk, open_source(on_disk, None, "t"), 2, 1, CROP, seed=4)
    for index in range(2):
        net.forward()
        expected = files(index)
        np.testing.assert_array_equal(net.blobs["data"].data, expected["data"].astype(np.float32))
        np.testing.assert_array_equal(net.blobs["label"].data, expected["label"])
        np.testing.assert_array_equal(net.blobs["group"].data, expected["group"])


@needs_caffe
@pytest.mark.parametrize("param, fragment", [
    ({"split": "train"}, "give one of 'manifest'"),
    ({"manifest": "m.csv", "online": {}}, "give one of 'manifest'"),
    ({"online": {"pristine": "x"}, "lmdb": "x.lmdb"}, "'lmdb' belongs to a rank set on disk"),
    ({"online": {"pristin": "x"}}, "online: unknown key(s) ['pristin']"),
])
def test_bad_online_param_str_in_caffe(tmp_path, param, fragment):
    import caffe

    with pytest.raises(InputError) as err:
        caffe.Net(str(_data_net(tmp_path, param)), caffe.TRAIN)
    assert fragment in str(err.value)


def _online_args(src: Path, out: Path, *extra: str) -> list[str]:
    return ["rank", "--rankset", "tid2013", "--net", "shallow", "--online", "--pristine", str(src),
            "--types", ",".join(TYPES), "--out", str(out), "--gpu", "-1", "--workers", "0",
            "--types-per-batch", "2", "--seed", str(SEED), *extra]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Three embedded photographs at 240 x 240: `make ranks`'s default minimum size (227) and crop fit."""
    folder = tmp_path_factory.mktemp("photos")
    for path in pristine.default_sources()[:3]:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        small = cv2.resize(image, (240, 240), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{path.stem}.png"), small)
    return folder


def test_the_online_spec_of_a_command_line_and_its_refusals():
    from rankiqa.runprep import online_spec
    from tools import train

    def spec(*argv: str):
        return online_spec(train.run_config(["rank", "--rankset", "tid2013", "--net", "shallow", "--out", "o",
                                             *argv]))

    assert spec("--data", "d") is None and spec("--data", "d", "--pristine", "default") is None
    assert spec("--online") == {"pristine": "default", "rankset": "tid2013", "seed": 0, "types": None,
                                "precomputed": None}
    made = spec("--online", "--pristine", "p", "--precomputed", "q", "--offline-types", "none", "--seed", "3")
    assert made == {"pristine": os.path.abspath("p"), "rankset": "tid2013", "seed": 3, "types": None,
                    "precomputed": os.path.abspath("q"), "offline": "none"}
    for argv, fragment in ((["--data", "d", "--online"], "not both"), ([], "give --data"),
                           (["--data", "d", "--pristine", "p", "--offline-types", "ID"],
                            "--offline-types, --pristine: for --online runs")):
        with pytest.raises(InputError, match=fragment):
            spec(*argv)


@needs_caffe
def test_the_driver_configures_online_layers_and_shares(photos, tmp_path):
    from rankiqa import netconfig
    from rankiqa.devices import GpuShare
    from rankiqa.runprep import prepare_rank
    from tools import train

    src = photos

    run, shares = prepare_rank(train.run_config(_online_args(src, tmp_path / "run", "--iters", "2")))
    assert shares is None
    net = netconfig.read_net_param(tmp_path / "run" / "train.prototxt")
    for layer in netconfig.python_layers(net, "rank_data"):
        params = netconfig.get_param_str(layer, Path("x"))
        assert "manifest" not in params and "lmdb" not in params
        assert params["online"] == {"pristine": str(src.resolve()), "rankset": "tid2013", "seed": SEED,
                                    "types": ",".join(TYPES), "precomputed": None}
        # the layer's batch seed is the driver's (seed + 1 for the test net); the images' seed stays
        assert params["seed"] == (SEED + 1 if netconfig.layer_phase(layer) == "test" else SEED)
    assert "made in the prefetch workers: GN, JPEG, NEPN, MSL" in run.notes[0]
    # the GPU shares of the same run: shard_index = rank, shard_count = number of GPUs, same online spec
    rank_net = netconfig.configure_rank_net(netconfig.read_net_param(REPO_NET), REPO_NET, None, 2, 1, 4, SEED,
                                            0, "quality", GpuShare(1, 1, 1, 2), 0, 0, params["online"])
    layer = next(layer for layer in netconfig.python_layers(rank_net, "rank_data")
                 if netconfig.layer_phase(layer) == "train")
    params = netconfig.get_param_str(layer, Path("x"))
    assert (params["shard_index"], params["shard_count"], params["online"]["seed"]) == (1, 2, SEED)

    for bad, fragment in ((["--data", str(tmp_path)], "not both"), (["--precomputed", str(tmp_path)], None),
                          (["--offline-types", "ID"], None)):
        argv = _online_args(src, tmp_path / "run2", *bad)
        if fragment is None:  # --precomputed without --online
            argv = [a for a in argv if a != "--online"]
            argv[argv.index("--pristine"):argv.index("--pristine") + 2] = ["--data", str(tmp_path)]
            fragment = "for --online runs"
        with pytest.raises(InputError, match=fragment):
            prepare_rank(train.run_config(argv))


REPO_NET = Path(__file__).resolve().parents[1] / "prototxts" / "shallow" / "rank_train.prototxt"


@needs_caffe
def test_online_training_runs_logs_what_it_made_and_resumes(photos, tmp_path, capsys):
    from tools import train

    src = tmp_path / "pristine"  # a copy: one image is changed below
    shutil.copytree(photos, src)
    out = tmp_path / "run"
    argv = _online_args(src, out, "--iters", "2", "--snapshot", "1", "--test-interval", "0")
    argv[argv.index("--types") + 1] = "GN,ID,MSL"
    assert train.main(argv) == 0
    log = (out / "log.txt").read_text()
    assert "made in the prefetch workers: GN, MSL" in log and "ID left out" in log
    assert json.loads((out / "inputs.json").read_text())["lists"] == {}
    # the same command with more iterations resumes from the last snapshot
    argv[argv.index("--iters") + 1] = "3"
    assert train.main(argv) == 0
    assert "start iter=2 " in (out / "log.txt").read_text()
    # a changed pristine image is refused before anything is rewritten
    first = next(iter(sorted(src.iterdir())))
    cv2.imwrite(str(first), 255 - cv2.imread(str(first)))
    argv[argv.index("--iters") + 1] = "4"
    capsys.readouterr()
    assert train.main(argv) == 2
    assert "trained on other data" in capsys.readouterr().err


@needs_caffe
def test_an_online_grid_run_folder_of_the_earlier_cell_order_is_refused(photos, tmp_path):
    # An earlier version ranked a grid rank set's nine cells as one order online; resuming such a run on
    # the chains would change its objective without a word.
    from rankiqa.runprep import prepare_rank
    from tools import train

    argv = ["rank", "--rankset", "mlive", "--net", "shallow", "--online", "--pristine", str(photos),
            "--out", str(tmp_path / "run"), "--gpu", "-1", "--workers", "0", "--types-per-batch", "2",
            "--seed", str(SEED)]
    prepare_rank(train.run_config(argv))
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["groups"] == "chains"
    del record["groups"]
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="holds a run with groups='levels', not 'chains'"):
        prepare_rank(train.run_config(argv))
