"""The settings of one training run, frozen, and the defaults the run preparation falls back on.

``tools/train.py`` parses its command line into a :class:`RunConfig` (``RunConfig.from_namespace``); the run
preparation (``rankiqa.runprep``) reads it and never changes it (a changed value is a new object, through
``dataclasses.replace``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from rankiqa.paths import PROTOTXT_DIR

#: Used only when a solver file does not say (the faithful solvers in prototxts/solvers/ do).
DEFAULT_SNAPSHOT = {"rank": 5000, "finetune": 1000}
#: Base learning rates of the Shallow net (CPU-only extra) when --lr is not given. Measured on a small
#: generated set (tests/test_train.py's) when its input was only scaled to [0, 1], before the local
#: normalisation: ranking at 1e-2 oscillates and at 1e-4 barely moves in 60 iterations, 1e-3 learns;
#: fine-tuning from a ranking model at 1e-4 spikes and collapses to a constant, at 1e-5 loses the ranking's
#: order, at 3e-6 falls steadily and keeps it. With the normalisation the demo's ranking at 1e-3 still
#: learns (docs/DEMO.md), with one loss spike it recovers from.
SHALLOW_DEFAULT_LR = {"rank": 1e-3, "finetune": 3e-6}
#: Start of the fine-tuning head and scale of its Euclidean loss when not given (``rankiqa.head_init``):
#: the original's (prototxt filler, raw labels) for VGG-16; for the Shallow net (a CPU-only extra) the
#: calibrated head (the ranking head's direction, scale and offset fitted) and the loss in units of the label
#: spread (measured: README, "Fine-tuning: head start and label scale").
FT_HEAD_DEFAULTS = {"vgg16": ("filler", "none"), "shallow": ("calibrate", "std")}
#: Test interval when neither the flag nor the solver gives one.
DEFAULT_TEST_INTERVAL = {"rank": 1000, "finetune": 500}
#: Test batches of a ranking test pass when neither the flag nor the solver gives them.
DEFAULT_RANK_TEST_ITERS = 20
#: The mean training loss is logged every this many iterations (``--display``).
DISPLAY_EVERY = 20


@dataclass(frozen=True)
class RunConfig:
    """One ``rank`` or ``finetune`` run as asked for: ``None`` leaves a value to the solver, the net or the
    defaults above. Fields of the other kind of run stay ``None``/``False``."""

    command: str  # "rank" or "finetune"
    net: str  # rankiqa.registry.NETS
    out: Path  # the run folder
    iters: int | None = None
    skip_layers: tuple[str, ...] = ()  # layers of the initial weights not to copy
    lr: float | None = None
    snapshot: int | None = None
    test_interval: int | None = None
    test_iters: int | None = None
    gpu: str = "auto"  # auto, -1 or a GPU id
    gpus: str | None = None  # several GPUs with NCCL, e.g. "0,1"
    resume: Path | None = None
    seed: int = 0
    display: int = DISPLAY_EVERY
    workers: int | None = None
    prototxts: Path = PROTOTXT_DIR
    train_prototxt: Path | None = None
    solver_prototxt: Path | None = None
    argv: tuple[str, ...] = ()  # the command line, recorded in run.json
    # ranking
    rankset: str | None = None  # also fine-tuning: the rank set of the default ranking model
    data: Path | None = None
    types_per_batch: int | None = None
    images_per_group: int | None = None
    weights: Path | None = None  # ranking: initial weights, or Path("none")
    aligned_crops: bool = False
    mixed_references: bool = False
    direction: str = "quality"
    # ranking on online batches (``pylayers.online_source``): made from pristine images, no rank set on disk
    online: bool = False
    pristine: str | None = None  # folder of pristine images or "default"; None: the layer's default
    types: str | None = None  # comma-separated distortion types, or "all"
    precomputed: Path | None = None  # a `make ranks` folder holding the types too slow to make online
    offline_types: str | None = None  # comma-separated types not made online; None: the layer's default (ID)
    # fine-tuning
    dataset: str | None = None
    lists: Path | None = None
    rank_model: Path | None = None
    from_scratch: bool = False
    batch: int | None = None
    head_init: str | None = None
    loss_scale: str | None = None

    @classmethod
    def from_namespace(cls, args: argparse.Namespace, argv: Sequence[str] = ()) -> RunConfig:
        """The configuration of parsed ``tools/train.py`` arguments; ``--skip-layers a,b`` -> ``("a", "b")``,
        ``argv`` (the command line) is recorded in ``run.json``."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        values["skip_layers"] = tuple(n for n in (args.skip_layers or "").split(",") if n.strip())
        values["prototxts"] = Path(args.prototxts)
        values["argv"] = tuple(argv)
        return cls(**values)
