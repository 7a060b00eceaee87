"""tools.predict: files and folders in, a CSV of scores out; a bad image is bad input (exit 2, every one
named, nothing written) unless --skip-bad skips it."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from rankiqa import scoring
from rankiqa.image_io import read_bgr
from tests.test_evaluate import make_images, make_tiny_model
from tools import predict


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_collect_images_walks_folders_sorted_and_keeps_explicit_files(tmp_path: Path) -> None:
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    for name in ("b.png", "a.BMP", "notes.txt", "sub/c.jpg"):
        (tmp_path / "dir" / name).write_bytes(b"x")
    explicit = tmp_path / "odd.name"
    explicit.write_bytes(b"x")
    found, unfound = predict.collect_images([str(tmp_path / "dir"), str(explicit)])
    folder = tmp_path / "dir"
    assert found == [folder / "a.BMP", folder / "b.png", folder / "sub" / "c.jpg", explicit]
    assert unfound == []


def test_collect_images_names_what_is_not_there_folders_by_their_slash(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    entries = [f"{tmp_path}/nodir/", str(tmp_path / "missing.png"), f"{tmp_path}/a.png/",
               str(tmp_path / "a.png")]
    found, unfound = predict.collect_images(entries)
    assert found == [tmp_path / "a.png"]
    assert unfound == [(entries[0], "folder not found"), (entries[1], "not found"),
                       (entries[2], "folder not found")]  # a file is no folder, whatever Path() makes of it


@pytest.fixture()
def tiny(tmp_path: Path) -> dict:
    pytest.importorskip("caffe")
    deploy, model = make_tiny_model(tmp_path)
    return {"deploy": deploy, "model": model, "root": tmp_path}


def _predict(tiny: dict, *images: Path | str, extra: tuple[str, ...] = ()) -> tuple[int, Path]:
    out = tiny["root"] / "pred.csv"
    code = predict.main(["--deploy", str(tiny["deploy"]), "--model", str(tiny["model"]), "--images",
                         *map(str, images), "--out", str(out), "--crops", "4", "--batch", "6", "--quiet",
                         *extra])
    return code, out


def _truncated_png(tiny: dict, name: str) -> Path:
    """A PNG cut off half-way, as an interrupted copy leaves it."""
    whole = make_images(tiny["root"] / "whole", 1)[0].read_bytes()
    path = tiny["root"] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(whole[:len(whole) // 2])
    return path


@pytest.mark.caffe
def test_a_missing_image_stops_the_command_before_scoring_and_writes_nothing(tiny: dict, capsys,
                                                                             monkeypatch) -> None:
    good = make_images(tiny["root"] / "imgs", 1)[0]
    missing = tiny["root"] / "missing.png"

    def no_scoring(*args, **kwargs):
        raise AssertionError("an image was scored although the input is bad")

    monkeypatch.setattr(scoring.CropScorer, "score", no_scoring)
    code, out = _predict(tiny, good, missing)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "error: 1 of 2 images cannot be scored" in err and "--skip-bad, or SKIP_BAD=1 with make" in err
    assert f"\n  {missing}: not found" in err
    assert not out.exists()


@pytest.mark.caffe
def test_a_corrupt_image_stops_the_command_and_leaves_an_earlier_output_as_it_was(tiny: dict, capsys) -> None:
    good = make_images(tiny["root"] / "imgs", 1)[0]
    corrupt = _truncated_png(tiny, "cut.png")
    out = tiny["root"] / "pred.csv"
    out.write_text("earlier results\n")
    code, _ = _predict(tiny, good, corrupt)
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"  {corrupt}: cannot decode image (unsupported or corrupt file)" in err
    assert out.read_text() == "earlier results\n"


@pytest.mark.caffe
def test_every_bad_input_is_named_in_one_message_folders_included(tiny: dict, capsys) -> None:
    root = tiny["root"]
    make_images(root / "imgs", 2)
    corrupt = _truncated_png(tiny, "imgs/zz_cut.png")  # found by listing the folder: bad input all the same
    small = make_images(root / "small", 1, size=(20, 50))[0]
    missing, nodir = root / "missing.png", f"{root}/nodir/"
    code, out = _predict(tiny, root / "imgs", small, missing, nodir)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err[err.index("error: "):].splitlines()
    assert lines[0].startswith("error: 4 of 6 images cannot be scored")
    assert lines[1:] == [
        f"  {missing}: not found",
        f"  {nodir}: folder not found",
        f"  {corrupt}: cannot decode image (unsupported or corrupt file)",
        f"  {small}: image 50x20 (WxH) is smaller than the 32x32 crop (upscale it with --resize-small, or "
        "RESIZE_SMALL=1 with make)",
    ]
    assert not out.exists()


@pytest.mark.caffe
def test_skip_bad_scores_the_good_images_and_names_the_skipped_ones(tiny: dict, capsys) -> None:
    root = tiny["root"]
    good = make_images(root / "imgs", 3)
    small = make_images(root / "small", 1, size=(20, 50))[0]
    corrupt = root / "imgs" / "zz_corrupt.png"
    corrupt.write_bytes(b"this is not a PNG")
    missing, nodir = root / "missing.png", f"{root}/nodir/"
    code, out = _predict(tiny, root / "imgs", small, missing, nodir, extra=("--skip-bad",))
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"warning: {corrupt}: cannot decode image (unsupported or corrupt file): skipped" in err
    assert f"warning: {small}: image 50x20 (WxH) is smaller than the 32x32 crop" in err
    assert f"warning: {missing}: not found: skipped" in err
    assert f"warning: {nodir}: folder not found: skipped" in err
    assert "3 images scored, 4 skipped (--skip-bad)" in err
    rows = _read_csv(out)
    assert list(rows[0]) == list(predict.COLUMNS)
    assert [r["path"] for r in rows] == [str(p) for p in good]
    assert {r["direction"] for r in rows} == {"unknown"} and {r["scale"] for r in rows} == {"absolute"}

    # the same crops as the evaluation protocol: seed 0, crop positions by input order
    net, info = scoring.load_net(tiny["deploy"], tiny["model"])
    scorer = scoring.CropScorer(net, info, crops=4, batch=1, seed=0)
    expected = [values for _, values in scorer.score((i, i, read_bgr(p)) for i, p in enumerate(good))]
    np.testing.assert_allclose([float(r["score"]) for r in rows], [v.mean() for v in expected], rtol=1e-5)
    np.testing.assert_allclose([float(r["median"]) for r in rows], [np.median(v) for v in expected],
                               rtol=1e-5)


@pytest.mark.caffe
def test_good_images_alone_score_the_same_with_and_without_skip_bad(tiny: dict, capsys) -> None:
    good = make_images(tiny["root"] / "imgs", 2)
    code, out = _predict(tiny, *good)
    assert code == 0
    strict = out.read_text()
    assert "2 images scored -> " in capsys.readouterr().err
    assert _predict(tiny, *good, extra=("--skip-bad",))[0] == 0
    assert out.read_text() == strict
    assert "2 images scored, 0 skipped (--skip-bad) -> " in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_predict_passes_skip_bad_and_resize_small() -> None:
    from tests.test_makefile import _commands, _tool

    plain = _tool(_commands("predict", "MODEL=m.caffemodel", "IMAGES=a.png"), "tools.predict")
    assert "--skip-bad" not in plain and "--resize-small" not in plain
    both = _tool(_commands("predict", "MODEL=m.caffemodel", "IMAGES=a.png", "SKIP_BAD=1", "RESIZE_SMALL=1"),
                 "tools.predict")
    assert "--skip-bad" in both and "--resize-small" in both


@pytest.mark.caffe
def test_resize_small_upscales_instead_of_skipping_and_says_which(tiny: dict, capsys) -> None:
    small = make_images(tiny["root"] / "small", 1, size=(20, 50))[0]
    large = make_images(tiny["root"] / "large", 1, size=(40, 40))[0]
    out = tiny["root"] / "pred.csv"
    assert predict.main(["--deploy", str(tiny["deploy"]), "--model", str(tiny["model"]), "--images",
                         str(small), str(large), "--out", str(out), "--crops", "3", "--resize-small",
                         "--quiet"]) == 0
    rows = _read_csv(out)
    assert [r["upscaled_from"] for r in rows] == ["50x20", ""]  # WxH before upscaling; the 40x40 one fits
    assert all(np.isfinite(float(r["score"])) for r in rows)
    assert f"1 upscaled to the crop (--resize-small): {small} (50x20)" in capsys.readouterr().err


@pytest.mark.caffe
def test_nothing_scored_is_an_error_and_writes_nothing(tiny: dict, capsys) -> None:
    bad = tiny["root"] / "bad.png"
    bad.write_bytes(b"")
    code, out = _predict(tiny, bad)
    assert code == 2
    assert "error: 1 of 1 images cannot be scored" in capsys.readouterr().err
    assert not out.exists()
    code, out = _predict(tiny, bad, tiny["root"] / "gone.png", extra=("--skip-bad",))
    assert code == 2
    assert "none of the 2 images could be scored" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.caffe
def test_direction_column_follows_the_head_and_the_flag(tiny: dict) -> None:
    root = tiny["root"]
    images = make_images(root / "imgs", 1)
    rank_dir = root / "rank"
    rank_dir.mkdir()
    deploy_m, model_m = make_tiny_model(rank_dir, head="fc8_m", name="Rank_live")
    cases = [
        ((deploy_m, model_m, []), ("lower_better", "relative")),       # the released LIVE ranking model
        ((tiny["deploy"], tiny["model"], ["--direction", "higher_better"]), ("higher_better", "absolute")),
    ]
    for (deploy, model, extra), expected in cases:
        out = root / "d.csv"
        assert predict.main(["--deploy", str(deploy), "--model", str(model), "--images", str(images[0]),
                             "--out", str(out), "--crops", "2", "--quiet", *extra]) == 0
        row = _read_csv(out)[0]
        assert (row["direction"], row["scale"]) == expected


def test_finetuned_model_direction_comes_from_its_run(tmp_path):
    from rankiqa import scoring

    model = tmp_path / "ft" / "snapshots" / "ft_iter_10.caffemodel"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"")
    assert scoring.trained_direction(model) is None
    (tmp_path / "ft" / "run.json").write_text('{"kind": "finetune", "dataset": "live"}')
    assert scoring.trained_direction(model)[0] == "lower_better"
    (tmp_path / "ft" / "run.json").write_text('{"kind": "finetune", "dataset": "tid2013"}')
    assert scoring.trained_direction(model)[0] == "higher_better"


@pytest.mark.caffe
def test_a_deploy_input_too_small_for_the_net_is_refused_before_caffe(tiny: dict, capsys) -> None:
    # Caffe itself aborts the whole process on this net (Check failed: shape[i] >= 0, exit 134).
    deploy = tiny["root"] / "deploy200.prototxt"
    shallow = Path(__file__).resolve().parents[1] / "prototxts" / "shallow" / "ft_deploy.prototxt"
    deploy.write_text(shallow.read_text().replace("dim: 227", "dim: 200"))
    images = make_images(tiny["root"] / "imgs", 1, size=(230, 230))
    out = tiny["root"] / "pred.csv"
    assert predict.main(["--deploy", str(deploy), "--model", str(tiny["model"]), "--images", str(images[0]),
                         "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{deploy}: layer 'conv4' (Convolution) gets 10x10" in err and "at least 217x217" in err
    assert not out.exists()


@pytest.mark.caffe
def test_a_negative_seed_is_refused(tiny: dict, capsys) -> None:
    images = make_images(tiny["root"] / "imgs", 1)
    assert predict.main(["--deploy", str(tiny["deploy"]), "--model", str(tiny["model"]), "--images",
                         str(images[0]), "--out", str(tiny["root"] / "p.csv"), "--seed", "-1"]) == 2
    assert "--seed must be >= 0, got -1" in capsys.readouterr().err


@pytest.mark.caffe
def test_constant_scores_are_called_out(tiny: dict, capsys) -> None:
    import caffe

    net = caffe.Net(str(tiny["deploy"]), caffe.TEST)
    for params in net.params.values():
        for blob in params:
            blob.data[...] = 0.0  # a collapsed model: the output is the (zero) bias for every image
    collapsed = tiny["root"] / "collapsed.caffemodel"
    net.save(str(collapsed))
    images = make_images(tiny["root"] / "imgs", 3)
    assert predict.main(["--deploy", str(tiny["deploy"]), "--model", str(collapsed), "--images",
                         *map(str, images), "--out", str(tiny["root"] / "p.csv"), "--quiet"]) == 0
    assert "warning: the scores are constant (every one of the 3 images scored 0)" in capsys.readouterr().err
