"""Tests of data_prep.make_ranks and data_prep.pristine: layout, determinism, resume, bad input."""

from __future__ import annotations

import csv
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest

from data_prep import distortions, make_ranks, pristine
from data_prep.make_ranks import generate, image_seed, lmdb_bytes, split_references
from rankiqa.errors import InputError
from rankiqa.fsutil import READ_ONLY_ADVICE, StorageError
from rankiqa.lists import read_list
from tests.small_fs import remount, small_fs

REPO = Path(__file__).resolve().parents[1]
# Every tid2013 type but ID (BM3D takes seconds per image; tests/test_distortions.py covers it).
FAST_TID_TYPES = [t for t in distortions.RANKSETS["tid2013"] if t != "ID"]
SIZE = 96  # small images keep the runs fast; min_size is lowered to match


def crops() -> dict[str, np.ndarray]:
    """Four different colour crops of scikit-image photographs, SIZE x SIZE."""
    data = pristine.skimage_data_dir()
    astronaut = cv2.imread(str(data / "astronaut.png"), cv2.IMREAD_COLOR)
    coffee = cv2.imread(str(data / "coffee.png"), cv2.IMREAD_COLOR)
    return {"astro": astronaut[100:100 + SIZE, 180:180 + SIZE], "flag": astronaut[300:300 + SIZE, 0:SIZE],
            "coffee": coffee[150:150 + SIZE, 200:200 + SIZE], "cup b": coffee[50:50 + SIZE, 350:350 + SIZE]}


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory) -> Path:
    """Pristine folder with lossless files of several formats (and a name with a space)."""
    folder = tmp_path_factory.mktemp("pristine")
    for (name, image), ext in zip(crops().items(), (".png", ".bmp", ".PNG", ".tif"), strict=True):
        assert cv2.imwrite(str(folder / f"{name}{ext}"), np.ascontiguousarray(image))
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), the lock file excepted."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".make_ranks.lock"}


def finished_distortions(out: Path) -> list[Path]:
    """Distorted images present in ``out`` (pathlib's glob also matches hidden temporary files)."""
    return [p for p in out.glob("*/*/*.png") if not p.name.startswith(".")]


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "data_prep.make_ranks", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def reference_run(source_dir, tmp_path_factory) -> Path:
    """An uninterrupted run (18 tid2013 types x 4 levels x 4 references), 2 jobs."""
    out = tmp_path_factory.mktemp("ref") / "tid2013"
    result = generate("tid2013", source_dir, out, seed=0, jobs=2, types=FAST_TID_TYPES, min_size=64,
                      progress=False)
    assert result.n_written == len(FAST_TID_TYPES) * 4 * 4
    return out


def test_layout_manifest_lists_lmdb(source_dir, tmp_path):
    out = tmp_path / "live"
    result = generate("live", source_dir, out, seed=3, jobs=1, lmdb=True, min_size=64, progress=False)
    names = sorted(crops())
    assert result.references == names and len(result.train) == 3 and len(result.test) == 1
    assert result.types == ["GB", "GN", "JPEG", "JP2K"]
    # pristine/<name>.png holds the source pixels, <TYPE>/<TYPE><level>/<name>.png the distortions.
    for name, image in crops().items():
        assert np.array_equal(cv2.imread(str(out / "pristine" / f"{name}.png")), image)
        for dtype in result.types:
            for level in range(1, 6):
                written = cv2.imread(str(out / dtype / f"{dtype}{level}" / f"{name}.png"))
                expected = distortions.distort(image, "live", dtype, level, image_seed(3, name, dtype, level))
                assert np.array_equal(written, expected), (name, dtype, level)

    with open(out / "manifest.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["reference", "type", "level", "path", "split"]
    assert len(rows) == result.n_rows == 4 * 4 * 6  # types x references x (pristine + 5 levels)
    split = {row["reference"]: row["split"] for row in rows}
    assert sorted(split) == names and sorted(split.values()) == ["test", "train", "train", "train"]
    for row in rows:
        level = int(row["level"])
        assert split[row["reference"]] == row["split"]
        expected = (f"pristine/{row['reference']}.png" if level == 0
                    else f"{row['type']}/{row['type']}{level}/{row['reference']}.png")
        assert row["path"] == expected and (out / row["path"]).is_file()

    # Lists: '<path> <level>', blocks per type, inside a block level 0..5, inside a level the references.
    for part in ("train", "test"):
        refs = sorted(n for n in names if split[n] == part)
        lines = (out / f"{part}.txt").read_text(encoding="utf-8").splitlines()
        expected = [f"{'pristine' if lv == 0 else f'{t}/{t}{lv}'}/{r}.png {lv}"
                    for t in result.types for lv in range(6) for r in refs]
        assert lines == expected
        assert len(read_list(out / f"{part}.txt")) == len(expected)  # the shared reader accepts them

    env = lmdb.open(str(out / "images.lmdb"), readonly=True, lock=False)
    with env.begin() as txn:
        keys = [key.decode() for key, _ in txn.cursor()]
        assert sorted(keys) == sorted({row["path"] for row in rows})
        for key in keys[:10]:
            assert txn.get(key.encode()) == (out / key).read_bytes()
    env.close()


@pytest.mark.slow
def test_deterministic_and_independent_of_jobs(source_dir, reference_run, tmp_path):
    out = tmp_path / "tid2013"
    generate("tid2013", source_dir, out, seed=0, jobs=1, types=FAST_TID_TYPES, min_size=64, progress=False)
    assert snapshot(out) == snapshot(reference_run)
    # Another seed changes the random distortions and not the deterministic ones.
    other = tmp_path / "seed1"
    generate("tid2013", source_dir, other, seed=1, jobs=2, types=["GN", "MSH"], min_size=64, progress=False)
    assert (other / "GN/GN1/astro.png").read_bytes() != (reference_run / "GN/GN1/astro.png").read_bytes()
    assert (other / "MSH/MSH1/astro.png").read_bytes() == (reference_run / "MSH/MSH1/astro.png").read_bytes()


@pytest.mark.slow
def test_resume_after_kill(source_dir, reference_run, tmp_path):
    out = tmp_path / "tid2013"
    proc = subprocess.Popen(
        [sys.executable, "-m", "data_prep.make_ranks", "--rankset", "tid2013", "--pristine", str(source_dir),
         "--out", str(out), "--seed", "0", "--jobs", "1", "--quiet", "--min-size", "64",
         "--types", ",".join(FAST_TID_TYPES)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(finished_distortions(out)) >= 10:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = finished_distortions(out)
    assert 10 <= len(done) < len(FAST_TID_TYPES) * 16, "not killed midway"
    assert not (out / "manifest.csv").exists() and not (out / "train.txt").exists()
    # What a kill during a write leaves behind: a temporary file, which the next run must clear.
    stale = out / "GN" / "GN1" / ".astro.png.x1y2.tmp.png"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half a png")
    before = {p: p.stat().st_mtime_ns for p in done}

    result = generate("tid2013", source_dir, out, seed=0, jobs=2, types=FAST_TID_TYPES, min_size=64,
                      progress=False)
    assert result.n_written == len(FAST_TID_TYPES) * 16 - len(done)
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in before.items()), "finished files were redone"
    assert not stale.exists() and not [p for p in out.rglob(".*") if ".tmp" in p.name]
    assert snapshot(out) == snapshot(reference_run)


def test_rerun_redoes_nothing_and_fills_gaps(source_dir, reference_run, tmp_path):
    out = tmp_path / "copy"
    generate("tid2013", source_dir, out, seed=0, jobs=1, types=["GB", "BW"], min_size=64, progress=False)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    again = generate("tid2013", source_dir, out, seed=0, jobs=1, types=["GB", "BW"], min_size=64,
                     progress=False)
    assert again.n_written == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes
    (out / "BW/BW3/flag.png").unlink()
    assert generate("tid2013", source_dir, out, seed=0, jobs=1, types=["GB", "BW"], min_size=64,
                    progress=False).n_written == 1
    assert (out / "BW/BW3/flag.png").read_bytes() == (reference_run / "BW/BW3/flag.png").read_bytes()
    # Other settings in the same folder would mix two datasets: refused, naming the settings file.
    with pytest.raises(InputError, match="seed") as err:
        generate("tid2013", source_dir, out, seed=5, jobs=1, types=["GB"], min_size=64, progress=False)
    assert err.value.path == str(out / ".make_ranks.json")


def test_split_default_is_the_originals_first_80_percent_of_sorted_names():
    # The original sorts the pristine names and trains on the first int(0.8 N) (its shuffle is commented out).
    names = [f"img{i:03d}" for i in range(50)]
    split = split_references(list(reversed(names)), 0.2, seed=3)
    assert [n for n in names if split[n] == "train"] == names[:40]
    assert split == split_references(names, 0.2, seed=0, rule="sorted")  # no seed involved
    # The embedded default set: astronaut, chelsea, coffee, ihc train; motorcycle_left, rocket test.
    default = split_references([Path(name).stem for name in pristine.DEFAULT_NAMES], 0.2, seed=0)
    assert sorted(n for n, part in default.items() if part == "test") == ["motorcycle_left", "rocket"]
    with pytest.raises(InputError, match="unknown split rule 'shuffled'"):
        split_references(names, 0.2, 0, rule="shuffled")


def test_default_types_are_the_18_folders_the_original_lists(source_dir, tmp_path, monkeypatch):
    # The original's TID2013-style lists (generate_rank_txt_tid2013.py) draw from 18 folders; its generator
    # writes HFN too, but no list holds it.
    original = {"JPEG", "GN", "GB", "JP2K", "GNC", "MSL", "MSH", "CCL", "CCH", "IN", "ID", "BW", "NEPN", "QN",
                "CA", "CS", "MGN", "CQD"}
    assert set(distortions.LISTED_TYPES["tid2013"]) == original and len(original) == 18
    assert distortions.LISTED_TYPES["live"] == tuple(distortions.RANKSETS["live"])
    # The lists are under test here, not the pixels (jobs=1 runs the distortions in this process).
    monkeypatch.setattr(distortions, "distort", lambda image, *args: image)
    out = tmp_path / "default"
    result = generate("tid2013", source_dir, out, jobs=1, limit_refs=2, min_size=64, progress=False)
    assert set(result.types) == original
    assert (result.train, result.test) == (["astro"], ["coffee"])  # the original's rule: sorted, first 80%
    with open(out / "manifest.csv", newline="") as handle:
        assert {row["type"] for row in csv.DictReader(handle)} == original
    listed = {Path(path).parts[-3] for path, level in read_list(out / "train.txt") if level > 0}
    assert listed == original and not (out / "HFN").exists()
    # 'all' (RANK_TYPES=all) lists HFN as well: 19 types.
    every = generate("tid2013", source_dir, tmp_path / "all", seed=2, jobs=1, types="all", min_size=64,
                     progress=False, split_rule="seeded")
    assert set(every.types) == original | {"HFN"} and (tmp_path / "all" / "HFN" / "HFN4").is_dir()
    assert every.test == ["coffee"]  # seed 2's permutation, not the sorted rule's last name ("flag")


def test_seeded_split_rule_is_an_80_20_permutation():
    names = [f"img{i:03d}" for i in range(50)]
    split = split_references(names, 0.2, seed=0, rule="seeded")
    assert sorted(split) == names and list(split.values()).count("test") == 10
    # order of discovery is irrelevant
    assert split == split_references(list(reversed(names)), 0.2, seed=0, rule="seeded")
    assert split != split_references(names, 0.2, seed=1, rule="seeded")
    assert split != split_references(names, 0.2, seed=0)  # not the first 40
    assert list(split_references(["a", "b"], 0.2, 0).values()).count("test") == 1  # never an empty side
    assert set(split_references(["a", "b", "c"], 0.0, 0).values()) == {"train"}
    assert split_references(["a"], 0.2, 0) == {"a": "train"}


def write_bad_inputs(folder: Path) -> dict[str, str]:
    """One good image plus one of each bad kind; returns file name -> expected message fragment."""
    good = crops()["astro"]
    cv2.imwrite(str(folder / "good.png"), good)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    (folder / "empty.jpg").write_bytes(b"")
    cv2.imwrite(str(folder / "gray.png"), good[:, :, 0])
    cv2.imwrite(str(folder / "gray3.bmp"), np.repeat(good[:, :, :1], 3, axis=2))
    cv2.imwrite(str(folder / "rgba.png"), np.dstack([good, np.full(good.shape[:2], 255, np.uint8)]))
    cv2.imwrite(str(folder / "tiny.png"), good[:40, :40])
    cv2.imwrite(str(folder / "deep.png"), good.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "comma,name.png"), good)
    (folder / "notes.txt").write_text("not an image")
    return {"corrupt.png": "corrupt", "empty.jpg": "corrupt", "gray.png": "grayscale",
            "gray3.bmp": "grayscale", "rgba.png": "alpha", "tiny.png": "smaller than the 64x64 crop",
            "deep.png": "uint16", "comma,name.png": "cannot go into a list"}


def test_bad_images_are_skipped_with_a_warning(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    expected = write_bad_inputs(folder)
    warnings: list[str] = []
    result = generate("live", folder, tmp_path / "out", jobs=2, types="GB", min_size=64, progress=False,
                      warn=warnings.append)
    assert result.references == ["good"] and result.train == ["good"] and result.test == []
    assert len(result.skipped) == len(expected)
    for name, fragment in expected.items():
        assert any(str(folder / name) in w and fragment in w for w in warnings), (name, warnings)
    assert sorted(p.name for p in (tmp_path / "out" / "pristine").iterdir()) == ["good.png"]


def test_bad_input_errors(tmp_path, source_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(InputError, match="no images") as err:
        generate("live", empty, tmp_path / "o1", progress=False)
    assert err.value.path == str(empty)
    with pytest.raises(InputError, match="not found"):
        generate("live", tmp_path / "missing", tmp_path / "o2", progress=False)
    all_bad = tmp_path / "allbad"
    all_bad.mkdir()
    (all_bad / "x.png").write_bytes(b"garbage")
    with pytest.raises(InputError, match="no usable pristine image"):
        generate("live", all_bad, tmp_path / "o3", progress=False, warn=lambda message: None)
    assert not (tmp_path / "o3").exists()  # the folder this run made, record and lock: nothing left
    kept = tmp_path / "mine"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="no usable pristine image"):
        generate("live", all_bad, kept, progress=False, warn=lambda message: None)
    assert (kept / "notes.txt").read_text() == "mine"  # a folder that was there before is never removed
    twins = tmp_path / "twins"
    twins.mkdir()
    for ext in (".png", ".bmp"):
        cv2.imwrite(str(twins / f"a{ext}"), crops()["astro"])
    with pytest.raises(InputError, match="same reference name 'a'"):
        generate("live", twins, tmp_path / "o4", progress=False)
    with pytest.raises(InputError, match="unknown distortion type.*XX"):
        generate("live", source_dir, tmp_path / "o5", types="GB,XX", progress=False)
    with pytest.raises(InputError, match="unknown rankset"):
        generate("kadid", source_dir, tmp_path / "o6", progress=False)
    with pytest.raises(InputError, match="test fraction"):
        generate("live", source_dir, tmp_path / "o7", test_fraction=1.0, progress=False)
    assert not (tmp_path / "o5").exists() and not (tmp_path / "o7").exists()  # nothing half made


@pytest.mark.slow
def test_cli_exit_codes(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    failed = run_cli("--rankset", "live", "--pristine", str(empty), "--out", str(tmp_path / "o"))
    assert failed.returncode == 2 and failed.stderr.startswith(f"error: {empty}: no images")
    failed = run_cli("--rankset", "tid2013", "--types", "GN,NOPE", "--out", str(tmp_path / "o"))
    assert failed.returncode == 2 and "unknown distortion type(s) NOPE" in failed.stderr
    # The embedded default set, one reference, one type: a real end-to-end run.
    out = tmp_path / "default"
    done = run_cli("--rankset", "tid2013", "--pristine", "default", "--out", str(out), "--types", "MSH",
                   "--limit-refs", "1", "--jobs", "2", "--lmdb", "--quiet")
    assert done.returncode == 0, done.stderr
    assert (out / "pristine" / "astronaut.png").is_file()
    assert (out / "MSH" / "MSH4" / "astronaut.png").is_file()
    assert len((out / "manifest.csv").read_text().splitlines()) == 1 + 5
    assert (out / "images.lmdb" / "data.mdb").is_file()


def test_default_pristine_set_is_usable():
    sources = pristine.default_sources()
    assert [p.name for p in sources] == sorted(pristine.DEFAULT_NAMES)
    for path in sources:
        image = pristine.load_pristine(path, 227)  # colour, 8-bit, at least the Shallow crop
        assert image.dtype == np.uint8 and image.ndim == 3 and min(image.shape[:2]) >= 300


@pytest.mark.slow
def test_parallel_cli_run_prints_no_warning_and_matches_one_job(source_dir, tmp_path):
    args = ["--rankset", "live", "--pristine", str(source_dir), "--types", "GB,GN", "--min-size", "64",
            "--quiet"]
    parallel = run_cli(*args, "--out", str(tmp_path / "parallel"), "--jobs", "2")
    assert parallel.returncode == 0 and parallel.stderr == ""  # runpy warned once per worker here
    generate("live", source_dir, tmp_path / "one", seed=0, jobs=1, types="GB,GN", min_size=64, progress=False)
    assert snapshot(tmp_path / "parallel") == snapshot(tmp_path / "one")


# ----------------------------------------------------------------------------------------------
# What the set was made from (.make_ranks.json)


def _pristine(folder: Path, names: dict[str, str]) -> Path:
    """``folder`` with the crops ``names`` maps to (file name -> crop key)."""
    folder.mkdir()
    for file_name, key in names.items():
        assert cv2.imwrite(str(folder / file_name), np.ascontiguousarray(crops()[key]))
    return folder


@pytest.mark.slow
def test_other_pristine_images_under_the_same_names_are_refused(tmp_path):
    """PRISTINE=B after PRISTINE=A, B's files named as A's: refused, not '0 images written'."""
    a = _pristine(tmp_path / "A", {"x.png": "astro", "y.png": "coffee"})
    b = _pristine(tmp_path / "B", {"x.png": "flag", "y.png": "coffee"})  # x differs, y is the same picture
    out = tmp_path / "ranks"
    args = ["--rankset", "live", "--types", "GB", "--min-size", "64", "--out", str(out), "--quiet"]
    assert run_cli(*args, "--pristine", str(a)).returncode == 0
    before = snapshot(out)
    refused = run_cli(*args, "--pristine", str(b))
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: {out / '.make_ranks.json'}: the pristine images differ from "
                                     f"those this folder was made from ({a} -> {b}): 1 modified (x)")
    assert snapshot(out) == before  # A's set untouched


def test_touched_added_and_removed_pristine_images(tmp_path):
    import os

    src = _pristine(tmp_path / "src", {"x.png": "astro", "y.png": "coffee"})
    out = tmp_path / "ranks"
    messages: list[str] = []
    kwargs = dict(types="GB", min_size=64, jobs=1, progress=False, warn=messages.append)
    generate("live", src, out, **kwargs)
    os.utime(src / "x.png", ns=(1, 1))  # touched (a copy, a restore): the content hash says unchanged
    assert generate("live", src, out, **kwargs).n_written == 0 and messages == []
    assert cv2.imwrite(str(src / "z.png"), np.ascontiguousarray(crops()["flag"]))
    (src / "y.png").unlink()
    result = generate("live", src, out, **kwargs)
    assert result.n_written == 5 and result.references == ["x", "z"]
    assert messages == [f"{out}: new pristine image(s) added to the set: 1 added (z)",
                        f"{out}: pristine image(s) of the set no longer in {src}, left out of the manifest: "
                        "1 removed (y)"]
    assert {line.split(",")[0] for line in (out / "manifest.csv").read_text().splitlines()[1:]} == {"x", "z"}
    # y comes back as another picture: it is checked against its old record, not taken as new.
    assert cv2.imwrite(str(src / "y.png"), np.ascontiguousarray(crops()["cup b"]))
    with pytest.raises(InputError, match=r"1 modified \(y\)"):
        generate("live", src, out, **kwargs)


def test_other_types_in_a_set_are_said_and_the_images_of_those_left_out_stay(tmp_path):
    import json

    src = _pristine(tmp_path / "src", {"x.png": "astro", "y.png": "coffee"})
    out = tmp_path / "ranks"
    messages: list[str] = []
    kwargs = dict(min_size=64, jobs=1, progress=False, warn=messages.append)
    generate("live", src, out, types="GB,GN", **kwargs)
    assert json.loads((out / ".make_ranks.json").read_text())["types"] == ["GB", "GN"]
    assert messages == []
    result = generate("live", src, out, types="GB", **kwargs)
    assert result.n_written == 0
    assert messages == [f"{out}: the set's distortion types change from GB,GN to GB; left out of the "
                        "manifest (their images stay): GN"]
    assert {line.split(",")[1] for line in (out / "manifest.csv").read_text().splitlines()[1:]} == {"GB"}
    assert any((out / "GN").rglob("*.png"))
    assert json.loads((out / ".make_ranks.json").read_text())["types"] == ["GB"]


def test_an_lmdb_made_for_another_manifest_is_written_again(tmp_path):
    import lmdb as lmdb_module

    src = _pristine(tmp_path / "src", {"x.png": "astro", "y.png": "coffee"})
    out = tmp_path / "ranks"
    messages: list[str] = []
    generate("live", src, out, types="GB", min_size=64, jobs=1, progress=False, lmdb=True)
    generate("live", src, out, types="GB,GN", min_size=64, jobs=1, progress=False, warn=messages.append)
    assert messages == [f"{out}: the set's distortion types change from GB to GB,GN; added: GN",
                        f"{out / 'images.lmdb'}: made for another manifest: written again"]
    env = lmdb_module.open(str(out / "images.lmdb"), readonly=True, lock=False)
    with env.begin() as txn:
        keys = {key.decode() for key, _ in txn.cursor()}
    env.close()
    manifest_paths = {line.split(",")[3] for line in (out / "manifest.csv").read_text().splitlines()[1:]}
    assert keys == manifest_paths and any(path.startswith("GN/") for path in keys)


def test_a_folder_of_an_earlier_version_gets_its_pristine_images_recorded(tmp_path):
    import json

    src = _pristine(tmp_path / "src", {"x.png": "astro", "y.png": "coffee"})
    out = tmp_path / "ranks"
    generate("live", src, out, types="GB", min_size=64, jobs=1, progress=False)
    settings = json.loads((out / ".make_ranks.json").read_text())
    legacy = {key: settings[key] for key in ("format", "rankset", "seed", "min_size")}
    (out / ".make_ranks.json").write_text(json.dumps(legacy))
    messages: list[str] = []
    generate("live", src, out, types="GB", min_size=64, jobs=1, progress=False, warn=messages.append)
    assert len(messages) == 2 and "no record of the pristine images" in messages[0]
    assert "did not record the library versions its images were made with" in messages[1]
    assert set(json.loads((out / ".make_ranks.json").read_text())["pristine"]) == {"x", "y"}


def test_the_record_names_the_library_versions_and_other_versions_are_refused(tmp_path):
    import json

    src = _pristine(tmp_path / "src", {"x.png": "astro", "y.png": "coffee"})
    out = tmp_path / "ranks"
    generate("live", src, out, types="GB", min_size=64, jobs=1, progress=False)
    record_path = out / make_ranks.SETTINGS_FILE
    record = json.loads(record_path.read_text())
    here = make_ranks.libraries()
    assert record["libraries"] == here and set(here) == {"generator", *make_ranks.BYTE_PACKAGES}
    assert "missing" not in here.values()
    # The record a run with another numpy writes: an image missing here would be made with other bytes.
    record["libraries"] = {**here, "numpy": "1.0.0"}
    record_path.write_text(json.dumps(record))
    # complete, it stays usable as it is (nothing would be made here), said; its lists, manifest and record
    # are written again with the same content
    complete = snapshot(out)
    messages: list[str] = []
    assert generate("live", src, out, types="GB", min_size=64, jobs=1, progress=False,
                    warn=messages.append).n_written == 0
    assert messages == [f"{out}: folder was generated with other library versions (numpy 1.0.0 there, "
                        f"{here['numpy']} here): nothing to add, kept as it is"]
    again = snapshot(out)
    settings = make_ranks.SETTINGS_FILE
    assert json.loads(again.pop(settings)) == json.loads(complete.pop(settings)) and again == complete
    (out / "GB/GB2/y.png").unlink()
    before = snapshot(out)
    with pytest.raises(InputError, match=rf"other library versions.*numpy 1\.0\.0 there, {here['numpy']} "
                                         r"here.*use another --out \(RANKS_DIR with make\), delete") as err:
        generate("live", src, out, types="GB", min_size=64, jobs=1, progress=False)
    assert err.value.path == str(out)
    assert snapshot(out) == before  # nothing added, the record untouched
    refused = run_cli("--rankset", "live", "--types", "GB", "--min-size", "64", "--pristine", str(src),
                      "--out", str(out), "--quiet")
    assert refused.returncode == 2 and refused.stderr.startswith(f"error: {out}: folder was generated with "
                                                                 "other library versions")
    assert snapshot(out) == before
    # a new pristine image is refused before anything is written (its copy's bytes are the library's too)
    (out / "GB/GB2/y.png").write_bytes(complete["GB/GB2/y.png"])
    cv2.imwrite(str(src / "z.png"), np.ascontiguousarray(crops()["flag"]))
    before = snapshot(out)
    with pytest.raises(InputError, match=r"other library versions.*new pristine images cannot be added"):
        generate("live", src, out, types="GB", min_size=64, jobs=1, progress=False)
    assert snapshot(out) == before and not (out / "pristine" / "z.png").exists()


def test_a_folder_of_unknown_library_versions_gets_no_new_images(tmp_path):
    """A record of an earlier version names no library versions: a complete folder stays usable, but
    nothing is added to it, since its images may have been made with other versions."""
    import json

    src = _pristine(tmp_path / "src", {"x.png": "astro", "y.png": "coffee"})
    out = tmp_path / "ranks"
    generate("live", src, out, types="GB", min_size=64, jobs=1, progress=False)
    record_path = out / make_ranks.SETTINGS_FILE
    record = json.loads(record_path.read_text())
    del record["libraries"]
    record_path.write_text(json.dumps(record))
    messages: list[str] = []
    assert generate("live", src, out, types="GB", min_size=64, jobs=1, progress=False,
                    warn=messages.append).n_written == 0
    assert messages == [f"{out}: folder was made by an earlier version that did not record the library "
                        "versions its images were made with: nothing to add, kept as it is"]
    assert "libraries" not in json.loads(record_path.read_text())  # not claimed for images it did not make
    (out / "GB/GB2/y.png").unlink()
    before = snapshot(out)
    with pytest.raises(InputError, match="earlier version that did not record the library versions.*use "
                                         r"another --out \(RANKS_DIR with make\), delete the folder") as err:
        generate("live", src, out, types="GB", min_size=64, jobs=1, progress=False)
    assert err.value.path == str(out)
    assert not (out / "GB/GB2/y.png").exists() and snapshot(out) == before


# --------------------------------------------------------------------------------------------------------
# A full disk


@pytest.mark.slow
def test_a_full_disk_stops_with_one_message_and_the_same_command_resumes(source_dir, reference_run, tmp_path):
    with small_fs(tmp_path / "fs", 160 << 10) as fs:
        out = fs / "r"
        args = ("--rankset", "tid2013", "--types", "GN,GB", "--pristine", str(source_dir), "--out", str(out),
                "--min-size", "64", "--jobs", "2", "--quiet")
        failed = run_cli(*args)
        assert failed.returncode == 2, failed.stderr
        message = failed.stderr.strip().splitlines()[-1]
        assert message.startswith(f"error: {out}/")
        assert ".png: cannot write: No space left on device (needs " in message
        assert " free); free some space" in message and "Traceback" not in failed.stderr
        # Whatever is there is finished, and nothing half-written is left.
        assert not [p for p in out.rglob("*") if ".tmp" in p.name]
        assert not (out / "manifest.csv").exists()
        written = [p for p in out.rglob("*.png")]
        assert written
        for path in written:
            assert path.read_bytes() == (reference_run / path.relative_to(out)).read_bytes(), path
        remount(fs, "size=4M")
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr
        rows = list(csv.DictReader(open(out / "manifest.csv", newline="")))
        assert len(rows) == 4 * 2 * 5
        for row in rows:  # every row readable, with the bytes of the uninterrupted run
            assert (out / row["path"]).read_bytes() == (reference_run / row["path"]).read_bytes()


def test_the_lmdb_space_is_checked_before_writing_and_bounds_the_database(source_dir, tmp_path):
    with small_fs(tmp_path / "fs", 4 << 20) as fs:
        out = fs / "r"
        generate("live", source_dir, out, jobs=1, types="GN", min_size=64, progress=False)
        paths = list(dict.fromkeys(row["path"] for row in csv.DictReader(open(out / "manifest.csv"))))
        needed = lmdb_bytes([p.encode() for p in paths], [(out / p).stat().st_size for p in paths])
        free = shutil.disk_usage(fs).free
        assert free > needed  # leave less than the LMDB needs, more than its images take
        (fs / "filler").write_bytes(b"\0" * (free - needed + (64 << 10)))
        with pytest.raises(StorageError) as caught:
            generate("live", source_dir, out, jobs=1, types="GN", min_size=64, lmdb=True, progress=False)
        assert caught.value.needed == needed and caught.value.path == str(out)
        assert "not enough free space for the LMDB" in str(caught.value)
        assert not (out / "images.lmdb").exists() and not list(out.glob(".images.lmdb*"))
        (fs / "filler").unlink()
        generate("live", source_dir, out, jobs=1, types="GN", min_size=64, lmdb=True, progress=False)
        size = sum(p.stat().st_blocks * 512 for p in (out / "images.lmdb").iterdir())
        assert size <= needed <= 1.2 * size + (1 << 20), (size, needed)  # an upper bound, and a close one
        with lmdb.open(str(out / "images.lmdb"), readonly=True, lock=False) as env, env.begin() as txn:
            assert all(txn.get(p.encode()) == (out / p).read_bytes() for p in paths)


def test_an_lmdb_write_cut_short_by_a_full_disk_is_reported_and_removed(source_dir, tmp_path, monkeypatch):
    # Another program filling the disk after the check: LMDB reports an I/O error; the cause is named.
    with small_fs(tmp_path / "fs", 4 << 20) as fs:
        out = fs / "r"
        generate("live", source_dir, out, jobs=1, types="GN", min_size=64, progress=False)
        monkeypatch.setattr(make_ranks, "require_free_space", lambda *args: None)
        (fs / "filler").write_bytes(b"\0" * (shutil.disk_usage(fs).free - (96 << 10)))
        with pytest.raises(StorageError) as caught:
            generate("live", source_dir, out, jobs=1, types="GN", min_size=64, lmdb=True, progress=False)
        assert caught.value.path == str(out / "images.lmdb")
        assert "cannot write the LMDB" in str(caught.value) and caught.value.free < caught.value.needed
        assert not (out / "images.lmdb").exists() and not list(out.glob(".images.lmdb*"))


def test_a_folder_that_cannot_be_written_is_named(source_dir, tmp_path, monkeypatch):
    with small_fs(tmp_path / "fs", 64 << 10) as fs:
        remount(fs, "ro")
        failed = run_cli("--rankset", "live", "--pristine", str(source_dir), "--out", str(fs / "r"))
        assert failed.returncode == 2 and failed.stderr == (
            f"error: {fs / 'r'}: cannot write: Read-only file system; {READ_ONLY_ADVICE}\n")
    # Not root, in a folder of someone else's ("permission denied"): the same kind of message.
    def refused(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "mkdir", refused)
    with pytest.raises(StorageError, match=f"^{tmp_path / 'r'}: cannot write: Permission denied; make the "):
        generate("live", source_dir, tmp_path / "r", progress=False)


def test_opencv_is_recorded_whichever_of_its_wheels_provides_cv2(monkeypatch):
    from importlib import metadata

    installed = {"numpy": "2.0", "opencv-python": "4.9.0", "pillow": "10.0", "scipy": "1.12"}

    def version(name: str) -> str:
        if name not in installed:
            raise metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(make_ranks.metadata, "version", version)
    found = make_ranks.libraries()
    assert found["opencv-python-headless"] == "4.9.0" and found["bm3d"] == "missing"
    assert found["numpy"] == "2.0"
