"""The datasets and training styles of the pipeline, each stated once.

Per dataset: its loader and score direction (the databases' own facts live in ``data_prep.datasets``;
the synthetic stand-in's in ``data_prep.synthetic_iqa``), its fine-tuning style and its ranking style.

* Ranking style (``make ranks`` set, ``prototxts/solvers/rank_<style>.prototxt``, batch make-up): TID2013
  style is 9 distortion types x 1 reference per batch, LIVE style 4 types x 2 references (the original's
  batches); the original fine-tunes from the ranking model at 50k (TID2013) or 20k (LIVE) iterations.
  The mlive set (no original batch; ``data_prep.rank_groups``) takes its 12 chains x 1 reference per
  batch (12 chains x 4 levels = 48, LIVE's batch size, every chain in every batch) and LIVE's solver.
* Fine-tuning style (solver ``ft_<style>.prototxt``, train and deploy nets, transferred layers): TID2013
  style uses ``ft_tid2013_{train,deploy}.prototxt`` where the net has them (new fc6_m/fc7_m/fc8: only the
  convolutions transfer), LIVE style ``ft_{train,deploy}.prototxt`` (fc6/fc7 transfer, new fc8).
* Datasets: tid2013 -> TID2013 style; live -> LIVE; csiq -> LIVE (the paper fine-tunes CSIQ's four LIVE
  types from the LIVE ranking model); kadid -> TID2013 (25 TID-like types, MOS higher = better);
  mlive -> LIVE (LIVE's images and DMOS, multiply distorted: fc6/fc7 transfer, LIVE's solver);
  synthetic -> TID2013.

``python -m rankiqa.registry deploy DATASET NET`` prints the deploy net of a fine-tuned model (what
``make eval`` and ``make predict`` use unless ``DEPLOY`` is given).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from data_prep.datasets import DATASETS as DATABASES
from data_prep.datasets import HIGHER_BETTER, LOWER_BETTER
from rankiqa.errors import InputError, cli_main
from rankiqa.paths import PROTOTXT_DIR, repo_relative

#: The nets: VGG-16 (224 crops, the paper's) and the Shallow net (227 crops, the CPU-sized one).
NETS = ("vgg16", "shallow")


@dataclass(frozen=True)
class RankStyle:
    """How a ranking set is trained on: its solver, its batch make-up and the snapshot fine-tuned from."""

    name: str
    types_per_batch: int  # distortion types (groups) per batch
    images_per_group: int  # consecutive references per group
    preferred_snapshot: int | None  # the ranking iteration the original fine-tunes from (None: no original)
    released_direction: str | None  # score direction of the original authors' released models of this style
    solver_style: str | None = None  # the style whose solver this one trains with (None: its own)

    def solver(self, prototxts: Path = PROTOTXT_DIR) -> Path:
        """``prototxts/solvers/rank_<style>.prototxt`` (``solver_style``'s when set)."""
        return prototxts / "solvers" / f"rank_{self.solver_style or self.name}.prototxt"


@dataclass(frozen=True)
class FineTuneStyle:
    """How a dataset is fine-tuned on: its solver, its train and deploy nets, the layers that start new."""

    name: str
    net_stem: str  # ``<stem>_train.prototxt`` / ``<stem>_deploy.prototxt`` where the net has them
    new_layers: tuple[str, ...]  # layers not transferred from the ranking model (named apart from it)
    released_direction: str  # score direction of the original authors' released models of this style

    def solver(self, prototxts: Path = PROTOTXT_DIR) -> Path:
        """``prototxts/solvers/ft_<style>.prototxt``."""
        return prototxts / "solvers" / f"ft_{self.name}.prototxt"

    def net(self, net: str, phase: str, prototxts: Path = PROTOTXT_DIR) -> Path:
        """The ``train`` or ``deploy`` net of this style for ``net``: ``<stem>_<phase>.prototxt`` when the net
        has one (the Shallow net has only ``ft_*``), else ``ft_<phase>.prototxt``."""
        own = prototxts / net / f"{self.net_stem}_{phase}.prototxt"
        return own if own.is_file() else prototxts / net / f"ft_{phase}.prototxt"


RANK_STYLES: dict[str, RankStyle] = {
    "tid2013": RankStyle("tid2013", types_per_batch=9, images_per_group=1, preferred_snapshot=50000,
                         released_direction=HIGHER_BETTER),
    # The original's LIVE lists are written in reverse (DMOS-like: higher output = worse).
    "live": RankStyle("live", types_per_batch=4, images_per_group=2, preferred_snapshot=20000,
                      released_direction=LOWER_BETTER),
    # No original model or batch: every chain of the 3x3 grids once per batch, LIVE's solver.
    "mlive": RankStyle("mlive", types_per_batch=12, images_per_group=1, preferred_snapshot=None,
                       released_direction=None, solver_style="live"),
}
#: The ranking sets ``make ranks`` writes (one per ranking style).
RANKSETS = tuple(RANK_STYLES)

FT_STYLES: dict[str, FineTuneStyle] = {
    "tid2013": FineTuneStyle("tid2013", "ft_tid2013", ("fc6_m", "fc7_m", "fc8"), HIGHER_BETTER),
    "live": FineTuneStyle("live", "ft", ("fc8",), LOWER_BETTER),
}


@dataclass(frozen=True)
class Dataset:
    """One fine-tuning dataset: where its facts live and how it is trained on."""

    name: str
    ft_style: FineTuneStyle
    rank_style: RankStyle

    @property
    def loader(self) -> Callable[..., list] | None:
        """``data_prep.datasets`` loader of a database (None for the synthetic stand-in, which is generated
        by ``data_prep.synthetic_iqa``)."""
        info = DATABASES.get(self.name)
        return info.load if info else None

    @property
    def direction(self) -> str:
        """The direction of the dataset's labels: ``higher_better`` or ``lower_better``."""
        if self.name == "synthetic":
            from data_prep.synthetic_iqa import DIRECTION

            return DIRECTION
        return DATABASES[self.name].direction


def _dataset(name: str, style: str) -> Dataset:
    return Dataset(name, FT_STYLES[style], RANK_STYLES[style])


DATASETS: dict[str, Dataset] = {
    "tid2013": _dataset("tid2013", "tid2013"),
    "live": _dataset("live", "live"),
    "csiq": _dataset("csiq", "live"),
    "kadid": _dataset("kadid", "tid2013"),
    "mlive": _dataset("mlive", "live"),
    "synthetic": _dataset("synthetic", "tid2013"),
}


def dataset(name: str) -> Dataset:
    """The registry entry of ``name``; an unknown name is an ``InputError`` listing the known ones."""
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    return DATASETS[name]


def released_directions() -> dict[str, str]:
    """Score direction of the original authors' released models, by lower-case file stem
    (``rank_<style>``, ``ft_<style>``)."""
    directions = {f"rank_{name}": style.released_direction for name, style in RANK_STYLES.items()
                  if style.released_direction}
    directions.update({f"ft_{name}": style.released_direction for name, style in FT_STYLES.items()})
    return directions


def deploy_net(dataset_name: str, net: str, prototxts: Path = PROTOTXT_DIR) -> Path:
    """The deploy net of a model fine-tuned on ``dataset_name`` with ``net`` (:meth:`FineTuneStyle.net`)."""
    if net not in NETS:
        raise InputError(f"unknown net {net!r} (known: {', '.join(NETS)})")
    return dataset(dataset_name).ft_style.net(net, "deploy", prototxts)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m rankiqa.registry deploy DATASET NET``: print the deploy net (repository-relative)."""
    parser = argparse.ArgumentParser(prog="python -m rankiqa.registry", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    deploy = sub.add_parser("deploy", help="the deploy net of a fine-tuned model")
    deploy.add_argument("dataset")
    deploy.add_argument("net")
    args = parser.parse_args(argv)
    print(repo_relative(deploy_net(args.dataset, args.net)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
