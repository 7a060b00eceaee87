"""rankiqa.registry: each dataset's direction, fine-tuning style and ranking style, stated once."""

from __future__ import annotations

import pytest

from data_prep import datasets
from rankiqa import registry
from rankiqa.errors import InputError
from rankiqa.paths import PROTOTXT_DIR


def test_every_dataset_has_its_styles_and_the_direction_of_its_labels():
    assert set(registry.DATASETS) == {"tid2013", "live", "csiq", "kadid", "mlive", "synthetic"}
    styles = {name: (entry.ft_style.name, entry.rank_style.name) for name, entry in registry.DATASETS.items()}
    assert styles == {"tid2013": ("tid2013", "tid2013"), "live": ("live", "live"), "csiq": ("live", "live"),
                      "kadid": ("tid2013", "tid2013"), "mlive": ("live", "live"),
                      "synthetic": ("tid2013", "tid2013")}
    directions = {name: entry.direction for name, entry in registry.DATASETS.items()}
    assert directions == {"tid2013": "higher_better", "live": "lower_better", "csiq": "lower_better",
                          "kadid": "higher_better", "mlive": "lower_better", "synthetic": "higher_better"}
    assert registry.DATASETS["live"].loader is datasets.load_live
    assert registry.DATASETS["mlive"].loader is datasets.load_mlive
    assert registry.DATASETS["synthetic"].loader is None  # generated, not loaded


def test_ranking_styles_are_the_originals_batches():
    tid, live = registry.RANK_STYLES["tid2013"], registry.RANK_STYLES["live"]
    assert (tid.types_per_batch, tid.images_per_group, tid.preferred_snapshot) == (9, 1, 50000)
    assert (live.types_per_batch, live.images_per_group, live.preferred_snapshot) == (4, 2, 20000)
    assert live.solver() == PROTOTXT_DIR / "solvers" / "rank_live.prototxt" and live.solver().is_file()


def test_fine_tuning_nets_fall_back_where_the_net_has_no_style_of_its_own():
    tid = registry.FT_STYLES["tid2013"]
    assert tid.net("vgg16", "train") == PROTOTXT_DIR / "vgg16" / "ft_tid2013_train.prototxt"
    assert tid.net("shallow", "train") == PROTOTXT_DIR / "shallow" / "ft_train.prototxt"
    assert registry.deploy_net("kadid", "vgg16") == PROTOTXT_DIR / "vgg16" / "ft_tid2013_deploy.prototxt"
    assert registry.deploy_net("csiq", "vgg16") == PROTOTXT_DIR / "vgg16" / "ft_deploy.prototxt"
    assert tid.solver().is_file() and registry.FT_STYLES["live"].solver().is_file()


def test_released_models_directions_follow_their_style():
    assert registry.released_directions() == {"rank_tid2013": "higher_better", "rank_live": "lower_better",
                                              "ft_tid2013": "higher_better", "ft_live": "lower_better"}


def test_unknown_names_are_refused_with_the_known_ones(capsys):
    with pytest.raises(InputError, match="unknown dataset 'tid2008' .*kadid"):
        registry.dataset("tid2008")
    with pytest.raises(InputError, match="unknown net 'resnet'"):
        registry.deploy_net("tid2013", "resnet")
    assert registry.main(["deploy", "tid2008", "vgg16"]) == 2
    assert "unknown dataset 'tid2008'" in capsys.readouterr().err
    assert registry.main(["deploy", "live", "shallow"]) == 0
    assert capsys.readouterr().out == "prototxts/shallow/ft_deploy.prototxt\n"
