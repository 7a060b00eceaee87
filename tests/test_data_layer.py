"""pylayers/data_layer.py: the data layers' tops come from what their batch builder declares."""

from __future__ import annotations

from typing import ClassVar

import pytest

from pylayers.data_layer import PrefetchDataLayer, Top
from pylayers.ft_data import FTDataLayer
from pylayers.pair_data import PairDataLayer
from pylayers.rank_data import RankDataLayer
from rankiqa.errors import InputError


def test_a_top_is_an_image_blob_or_one_value_per_image():
    assert Top("x", image=True).shape(6, 227) == (6, 3, 227, 227)
    assert Top("x").shape(6, 227) == (6,)
    assert Top("x", image=True).shape(None, 224) == (None, 3, 224, 224)


def test_the_layers_static_tops_follow_their_builders():
    assert PairDataLayer.static_tops("{manifest: m, crop: 5}", [], 3) == [(None, 3, 5, 5), (None, 3, 5, 5),
                                                                          (None,)]
    assert RankDataLayer.static_tops("{manifest: m, crop: 7}", [], 3) == [(None, 3, 7, 7), (None,), (None,)]
    assert FTDataLayer.static_tops("{list: l, crop: 9}", [], 2) == [(None, 3, 9, 9), (None,)]


class _ValuesFirstBuilder:
    TOPS: ClassVar[tuple[Top, ...]] = (Top("weight"), Top("left", image=True), Top("right", image=True))


class _ValuesFirstLayer(PrefetchDataLayer):
    BUILDER = _ValuesFirstBuilder
    DEFAULTS: ClassVar[dict] = {"crop": 4, "seed": 0, "workers": 0, "prefetch": 1, "shard_index": 0,
                                "shard_count": 1, "start_batch": 0}


def test_shapes_depend_on_what_is_declared_not_on_top_names_or_positions():
    assert _ValuesFirstLayer.static_tops("{}", [], 3) == [(None,), (None, 3, 4, 4), (None, 3, 4, 4)]


def test_a_wrong_top_count_names_the_declared_tops():
    with pytest.raises(InputError, match=r"needs no bottoms and 3 tops \(weight, left, right\); got 0/2"):
        _ValuesFirstLayer.static_tops("{}", [], 2)
