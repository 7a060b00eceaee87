"""MS-SSIM (known properties, SSIM against scikit-image) and the synthetic stand-in set."""

from __future__ import annotations

import csv
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from data_prep import distortions
from data_prep import synthetic_iqa as syn
from data_prep.datasets import read_table
from rankiqa.lists import read_list


def _image(seed: int, height: int = 192, width: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(12, 12, 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    image += rng.normal(0, 6, image.shape).astype(np.float32)  # some fine texture
    return np.clip(image, 0, 255).astype(np.uint8)


def _noisy(image: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 1, image.shape)
    return np.clip(image + sigma * noise, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# MS-SSIM


def test_identical_images_score_one():
    image = _image(0)
    assert syn.ms_ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    assert syn.ssim(image, image) == pytest.approx(1.0, abs=1e-12)


def test_symmetric_and_bounded():
    a, b = _image(0), _noisy(_image(0), 20)
    assert syn.ms_ssim(a, b) == pytest.approx(syn.ms_ssim(b, a), abs=1e-12)
    assert 0.0 < syn.ms_ssim(a, b) < 1.0
    assert syn.ms_ssim(a, _image(5)) < syn.ms_ssim(a, b)  # another image is further than a noisy copy


def test_monotone_in_noise_and_blur():
    image = _image(3)
    noise_scores = [syn.ms_ssim(image, _noisy(image, sigma)) for sigma in (2, 5, 10, 20, 40, 80)]
    assert all(x > y for x, y in zip(noise_scores, noise_scores[1:], strict=False))
    blur_scores = [syn.ms_ssim(image, cv2.GaussianBlur(image, (0, 0), s)) for s in (0.5, 1, 2, 4)]
    assert all(x > y for x, y in zip(blur_scores, blur_scores[1:], strict=False))


def test_single_scale_matches_scikit_image():
    a, b = _image(1), _noisy(_image(1), 15)
    expected = structural_similarity(syn.luminance(a), syn.luminance(b), gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=255)
    assert syn.ssim(a, b) == pytest.approx(expected, abs=1e-9)


def test_uses_luminance_only_and_standard_weights():
    image = _image(2)
    swapped = image[:, :, ::-1].copy()  # BGR <-> RGB: same content, different luma
    assert syn.ms_ssim(image, swapped) < 1.0
    assert syn.MS_SSIM_WEIGHTS == (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
    assert sum(syn.MS_SSIM_WEIGHTS) == pytest.approx(1.0, abs=1e-3)
    # a single scale with weight 1 is plain SSIM
    noisy = _noisy(image, 10)
    assert syn.ms_ssim(image, noisy, weights=(1.0,)) == pytest.approx(syn.ssim(image, noisy), abs=1e-12)


def test_too_small_or_mismatched_images_are_refused():
    with pytest.raises(ValueError, match="at least 176"):
        syn.ms_ssim(_image(0, 150, 300), _image(0, 150, 300))
    with pytest.raises(ValueError, match="differ in size"):
        syn.ms_ssim(_image(0), _image(0, 200, 200))


# ----------------------------------------------------------------------------------------------
# the synthetic set


def _fake_distortions() -> types.ModuleType:
    """A stand-in with the generator's API: additive noise and blur growing with the level."""
    module = types.ModuleType("data_prep.distortions")
    module.RANKSETS = {"tid2013": {"GN": [4, 12, 30], "GB": [0.7, 1.5, 3.0]}}

    def levels(rankset):
        return len(next(iter(module.RANKSETS[rankset].values())))

    def distort(image_bgr, rankset, dtype, level, seed):
        param = module.RANKSETS[rankset][dtype][level - 1]
        if dtype == "GN":
            return _noisy(image_bgr, param, seed)
        return cv2.GaussianBlur(image_bgr, (0, 0), param)

    module.levels, module.distort = levels, distort
    return module


@pytest.fixture
def pristine_dir(tmp_path) -> Path:
    folder = tmp_path / "pristine"
    folder.mkdir()
    for i, name in enumerate(("alpha", "beta", "gamma", "delta", "epsilon")):
        cv2.imwrite(str(folder / f"{name}.png"), _image(10 + i))
    return folder


@pytest.fixture
def fake_generator(monkeypatch):
    """The stand-in generator in place of the one the module distorts with (its ``distortions``)."""
    fake = _fake_distortions()
    monkeypatch.setattr(syn, "distortions", fake)
    return fake


def test_cli_writes_the_ft_layout(pristine_dir, tmp_path, fake_generator, capsys):
    out = tmp_path / "ft" / "synthetic"
    code = syn.main(["--pristine-dir", str(pristine_dir), "--refs", "alpha,beta.png,gamma,delta,epsilon",
                     "--out", str(out), "--rankset", "tid2013", "--seed", "0", "--splits", "2"])
    assert code == 0
    assert "synthetic stand-in" in capsys.readouterr().out
    assert "SYNTHETIC STAND-IN" in (out / "README.txt").read_text()
    rows = read_table(out / "table.csv", check_files=True)
    assert len(rows) == 5 * 2 * 3
    assert {r.direction for r in rows} == {"higher_better"}
    by_group: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for row in rows:
        assert Path(row.path).is_relative_to(out.resolve())
        assert 0.0 < row.score < 1.0
        # the stored score is MS-SSIM of the stored image against its reference
        stored = cv2.imread(row.path)
        reference = cv2.imread(str(pristine_dir / f"{row.reference}.png"))
        assert row.score == pytest.approx(syn.ms_ssim(reference, stored), abs=1e-12)
        by_group.setdefault((row.reference, row.type), []).append((row.level, row.score))
    for entries in by_group.values():  # stronger distortion, lower score
        scores = [score for _, score in sorted(entries)]
        assert scores == sorted(scores, reverse=True)
    for k in range(2):
        train = read_list(out / f"split{k}" / "train.txt")
        test = read_list(out / f"split{k}" / "test.txt")
        ref_of = {r.path: r.reference for r in rows}
        assert not {ref_of[p] for p, _ in train} & {ref_of[p] for p, _ in test}
        assert len(train) + len(test) == len(rows)
        assert (out / f"split{k}" / "test.csv").is_file()


def test_same_seed_same_bytes(pristine_dir, tmp_path, fake_generator):
    for name in ("a", "b"):
        syn.make_synthetic(pristine_dir, ["alpha", "beta"], tmp_path / name, seed=3, types=["GN"])
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert files_a and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
                           for f in files_a)
    table_a = (tmp_path / "a" / "table.csv").read_text().replace(str((tmp_path / "a").resolve()), "")
    table_b = (tmp_path / "b" / "table.csv").read_text().replace(str((tmp_path / "b").resolve()), "")
    assert table_a == table_b


def test_bad_input(pristine_dir, tmp_path, fake_generator, capsys):
    out = tmp_path / "out"
    base = ["--pristine-dir", str(pristine_dir), "--out", str(out)]
    assert syn.main(base + ["--refs", "alpha,nosuch"]) == 2
    assert "'nosuch' not found" in capsys.readouterr().err
    assert syn.main(base + ["--refs", "alpha"]) == 2
    assert syn.main(base + ["--refs", "alpha,beta", "--types", "GN,XYZ"]) == 2
    assert "XYZ" in capsys.readouterr().err
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["reference", "type", "level", "path", "split"])
        writer.writerow(["zeta", "GN", "0", "pristine/zeta.png", "train"])
        writer.writerow(["beta", "GN", "0", "pristine/beta.png", "train"])
    assert syn.main(base + ["--refs", "alpha,beta", "--rank-manifest", str(manifest)]) == 2
    assert f"{manifest}:3:" in capsys.readouterr().err
    cv2.imwrite(str(pristine_dir / "tiny.png"), _image(0, 64, 64))
    assert syn.main(base + ["--refs", "alpha,tiny"]) == 2
    assert "at least 176" in capsys.readouterr().err
    assert not out.exists()  # refused before any image was written


def test_with_the_real_generator(pristine_dir, tmp_path):
    wanted = [t for t in ("GN", "JPEG") if t in distortions.RANKSETS["tid2013"]]
    assert wanted, "the TID2013-style rank set should have GN and JPEG"
    out = tmp_path / "real"
    syn.make_synthetic(pristine_dir, ["alpha", "beta"], out, rankset="tid2013", seed=0, types=wanted)
    rows = read_table(out / "table.csv", check_files=True)
    assert len(rows) == 2 * len(wanted) * distortions.levels("tid2013")
    for reference in ("alpha", "beta"):
        for dtype in wanted:
            scores = [r.score for r in sorted(rows, key=lambda r: r.level)
                      if r.reference == reference and r.type == dtype]
            assert scores[0] > scores[-1]  # the strongest level scores below the mildest


@pytest.mark.parametrize("rankset", sorted(distortions.RANKSETS))
def test_every_level_of_every_rank_set_is_scored_once(pristine_dir, tmp_path, rankset):
    """Levels 1..``distortions.levels`` of each rank set (for mlive's grid types: its nine cells), each
    written and scored; the reference itself (level 0) is not a row."""
    dtype = next(t for t in distortions.RANKSETS[rankset] if t != "ID")  # ID (BM3D) takes seconds
    rows = syn.build_synthetic_rows(pristine_dir, ["alpha"], tmp_path / rankset, rankset, seed=0,
                                    types=[dtype])
    assert [(row.type, row.level) for row in rows] == [
        (dtype, level) for level in range(1, distortions.levels(rankset) + 1)]
    assert all(Path(row.path).is_file() and 0.0 < row.score < 1.0 for row in rows)
