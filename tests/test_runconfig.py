"""rankiqa.runconfig: the frozen run configuration built from the training command line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rankiqa.errors import InputError
from rankiqa.paths import PROTOTXT_DIR
from rankiqa.runconfig import DISPLAY_EVERY, RunConfig
from tools import train


def test_the_command_line_becomes_a_frozen_configuration():
    argv = ["rank", "--rankset", "live", "--net", "shallow", "--data", "d", "--out", "runs/x",
            "--skip-layers", "fc8, ,fc7", "--lr", "0.01", "--types-per-batch", "3"]
    config = train.run_config(argv)
    assert config.command == "rank" and config.rankset == "live" and config.net == "shallow"
    assert config.data == Path("d") and config.out == Path("runs/x")
    assert config.skip_layers == ("fc8", "fc7") and config.lr == 0.01 and config.types_per_batch == 3
    assert config.argv == tuple(argv) and config.prototxts == PROTOTXT_DIR and config.display == DISPLAY_EVERY
    assert config.dataset is None and config.rank_model is None  # fine-tuning fields stay empty
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 0.1  # type: ignore[misc]


def test_fine_tuning_weights_alias_and_gpu_flags():
    config = train.run_config(["finetune", "--dataset", "csiq", "--net", "vgg16", "--lists", "l",
                               "--out", "o", "--weights", "imagenet.caffemodel"])
    assert config.rank_model == Path("imagenet.caffemodel") and config.weights is None
    assert config.dataset == "csiq" and config.rankset is None
    with pytest.raises(InputError, match="--gpu or --gpus, not both"):
        train.run_config(["rank", "--rankset", "live", "--net", "shallow", "--data", "d", "--out", "o",
                          "--gpu", "1", "--gpus", "0,1"])


def test_defaults_of_a_configuration_built_in_code():
    config = RunConfig(command="rank", net="shallow", out=Path("o"), rankset="tid2013", data=Path("d"))
    assert config.gpu == "auto" and config.seed == 0 and config.direction == "quality" and config.argv == ()
