"""The mlive rank set: 3x3 grids generated once per cell, chains as groups, and the pairs the loss sees."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep import distortions, rank_groups
from data_prep.make_ranks import generate, image_seed
from pylayers.rank_data import RankBatchBuilder
from pylayers.rank_loss import pair_indices
from rankiqa.manifest import read_manifest
from rankiqa.registry import RANK_STYLES, released_directions
from tests.test_make_ranks import crops

CELL_FOLDER = re.compile(r"^(GBJPEG|GBGN)/GB(\d)_(JPEG|GN)(\d)/")


@pytest.fixture(scope="module")
def mlive_set(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pristine")
    for name in ("astro", "coffee"):
        assert cv2.imwrite(str(folder / f"{name}.png"), np.ascontiguousarray(crops()[name]))
    out = tmp_path_factory.mktemp("ranks") / "mlive"
    result = generate("mlive", folder, out, seed=0, jobs=1, min_size=64, test_fraction=0.5, progress=False)
    assert result.types == ["GBJPEG", "GBGN"]
    return out


def cell_of(path: str) -> tuple[str, tuple[int, int]]:
    """(grid type, (blur, second)) of a rank-set image from its folder; pristine = (0, 0) of no type."""
    if path.startswith("pristine/"):
        return "", (0, 0)
    match = CELL_FOLDER.match(path)
    assert match, path
    return match.group(1), (int(match.group(2)), int(match.group(4)))


def test_every_cell_is_generated_once_as_blur_then_the_second_distortion(mlive_set):
    images = sorted(p.relative_to(mlive_set).as_posix() for p in mlive_set.rglob("*.png"))
    assert len(images) == 2 * (1 + 2 * 9)  # per reference: pristine + 9 cells of each grid type
    assert {cell_of(p) for p in images if not p.startswith("pristine/")} == {
        (t, (b, s)) for t in ("GBJPEG", "GBGN") for b in (1, 2, 3) for s in (1, 2, 3)}
    pristine = cv2.imread(str(mlive_set / "pristine" / "coffee.png"))
    for dtype, second, (b, s) in (("GBJPEG", "JPEG", (2, 3)), ("GBGN", "GN", (3, 1))):
        level = distortions.grid_level(dtype, b, s)
        seed = image_seed(0, "coffee", dtype, level)
        blurred = distortions.distort(pristine, "live", "GB", b, seed)
        expected = distortions.distort(blurred, "live", second, s, seed)
        stored = cv2.imread(str(mlive_set / dtype / f"GB{b}_{second}{s}" / "coffee.png"))
        assert np.array_equal(stored, expected)
    # the supplementary material's levels: blur sigma 1.2, 2.5, 6.5 (hsize / 6), JPEG 43, 12, 7, GN var
    # 0.001, 0.006, 0.022 (rounded)
    assert [h / 6 for h in distortions.RANKSETS["live"]["GB"][:3]] == pytest.approx([1.2, 2.5, 6.5], abs=0.05)
    assert distortions.RANKSETS["live"]["JPEG"][:3] == [43, 12, 7]
    assert distortions.RANKSETS["live"]["GN"][:3] == pytest.approx([0.001, 0.006, 0.022], rel=0.1)


def test_manifest_groups_are_the_chains_and_lists_rank_within_them(mlive_set):
    rank_set = read_manifest(mlive_set / "manifest.csv", "train")
    assert rank_set.types == sorted(f"{t}_{d}{k}" for t, second in (("GBJPEG", "JPEG"), ("GBGN", "GN"))
                                    for d in ("GB", second) for k in (1, 2, 3))
    assert rank_set.levels == [0, 1, 2, 3]
    for (_, group, level), path in rank_set.paths.items():
        dtype, (b, s) = cell_of(path)
        if level == 0:
            assert (b, s) == (0, 0)
            continue
        assert group.startswith(dtype + "_")
        held, fixed = re.fullmatch(r"[A-Z]+_([A-Z]+)(\d)", group).groups()
        # blur held: the second level rises along the chain; second held: the blur level rises
        assert ((b, s) == (int(fixed), level)) if held == "GB" else ((b, s) == (level, int(fixed)))
    lines = (mlive_set / "train.txt").read_text().splitlines()
    assert "GBJPEG/GB2_JPEG3/astro.png 3" in lines and "GBJPEG/GB2_JPEG3/astro.png 2" in lines
    assert lines.count("pristine/astro.png 0") == 12


def test_the_loss_sees_exactly_the_pairs_that_share_a_level_and_pristine_pairs_twice(mlive_set):
    rank_set = read_manifest(mlive_set / "manifest.csv", "train")
    builder = RankBatchBuilder(rank_set, None, types_per_batch=12, images_per_group=1, crop=64, seed=0)
    items = builder.plan(0)
    assert builder.batch_size == len(items) == 48  # LIVE's batch size
    labels = np.array([item[2] for item in items], dtype=np.float32)
    group_ids = np.array([item[3] for item in items], dtype=np.float32)
    cells = [cell_of(rank_set.paths[item[:3]]) for item in items]
    better, worse = pair_indices(labels, group_ids)
    seen: Counter = Counter()
    for i, j in zip(better, worse, strict=True):
        dtype = cells[i][0] or cells[j][0]
        seen[(dtype, cells[i][1], cells[j][1])] += 1

    grid = [(b, s) for b in (1, 2, 3) for s in (1, 2, 3)]
    expected: Counter = Counter()
    for dtype in ("GBJPEG", "GBGN"):
        for cell in grid:
            expected[(dtype, (0, 0), cell)] = 2  # in the cell's blur chain and in its second chain
        for c1 in grid:
            for c2 in grid:
                if c1 != c2 and c1[0] <= c2[0] and c1[1] <= c2[1] and (c1[0] == c2[0] or c1[1] == c2[1]):
                    expected[(dtype, c1, c2)] = 1
    assert seen == expected
    assert sum(expected.values()) == 2 * (18 + 18)  # 12 chains x 6 pairs
    # every ranked pair is ordered in both levels; incomparable and both-levels-apart pairs are absent
    assert all(c1[0] <= c2[0] and c1[1] <= c2[1] for _, c1, c2 in seen)
    assert ("GBJPEG", (1, 2), (2, 1)) not in seen and ("GBJPEG", (2, 1), (1, 2)) not in seen
    assert ("GBGN", (1, 1), (2, 2)) not in seen


def test_one_distortion_types_are_one_group_each():
    assert rank_groups.groups("live", ["GB"]) == [("GB", [(k, "GB", k) for k in range(6)])]
    chains = dict(rank_groups.groups("mlive", ["GBGN"]))
    assert chains["GBGN_GN2"] == [(0, "GBGN", 0), (1, "GBGN", 2), (2, "GBGN", 5), (3, "GBGN", 8)]
    cells = [distortions.grid_cell("GBGN", level) for _, _, level in chains["GBGN_GB3"][1:]]
    assert cells == [(3, 1), (3, 2), (3, 3)]


def test_mlive_default_batch_takes_every_chain_once_at_lives_batch_size():
    style = RANK_STYLES["mlive"]
    chains = rank_groups.groups("mlive", distortions.LISTED_TYPES["mlive"])
    assert style.types_per_batch == len(chains) == 12
    assert style.types_per_batch * style.images_per_group * 4 == 48 == 4 * 6 * 2  # LIVE's 4 x 6 levels x 2
    assert style.solver() == RANK_STYLES["live"].solver() and style.solver().is_file()
    assert style.preferred_snapshot is None and "rank_mlive" not in released_directions()  # no original model
