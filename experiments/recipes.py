"""One recipe per row of the paper's tables: the Make targets that rank, fine-tune over the splits and
evaluate, as data. ``python -m experiments.run <name>`` runs one (``--dry-run`` prints its commands).

A recipe is a dict:

- ``row``: the row of the paper it reproduces; ``paper``: that row's SROCC and PLCC (the paper's "LCC"), as
  published (``None`` where the paper gives no figure); ``source``: where the figure is stated.
- ``needs``: variables the user must give (``NAME=value`` on the command line or in the environment), with
  what they are; they are referred to in the steps as ``${NAME}``.
- ``rank_iters``, ``ft_iters``: the iterations of the ranking and fine-tuning solvers the recipe's runs
  use (the original's; ``tests/test_experiments.py`` checks them against ``prototxts/solvers/``), for the
  snapshot a later step evaluates (``${rank_iters}``, ``${ft_iters}``; an ``ITERS`` given replaces both).
- ``splits``: how many random reference-disjoint splits the fine-tuning runs over (1 for TID2013's own
  split; ``${SPLITS}`` in the steps); a step with ``each_split`` runs once per split with ``${SPLIT}`` =
  0..splits-1.
- ``steps``: ``(make target, {variable: value}, each_split)``. Run folders and result names are given
  explicitly, so that a later step finds what an earlier one wrote whatever the Makefile's default names.
  ``{split}`` (lower case, in braces) is ``make eval``'s own placeholder and is passed on as written.

Fine-tuning starts from the newest ranking run of the dataset's ranking style and net, at the original's
iteration (``make finetune`` without ``RANK_MODEL``), which the recipe's ranking step has just written.
"""

from __future__ import annotations

from typing import Any

#: Variables the recipes ask the user for, and what they are.
PRISTINE = "folder of pristine images for the ranking data (the paper: Waterloo Exploration, 4,744 images)"
WEIGHTS = "ImageNet VGG-16 weights (VGG_ILSVRC_16_layers.caffemodel), where the paper's VGG-16 starts"



def _last_snapshot(run: str, iters: str) -> str:
    """The snapshot a training run writes last (``<run>/snapshots/<run name>_iter_<N>.caffemodel``)."""
    return f"{run}/snapshots/{run.rsplit('/', 1)[-1]}_iter_${{{iters}}}.caffemodel"


def _ft_model(run: str) -> str:
    """The model ``make finetune`` writes last into ``run``."""
    return _last_snapshot(run, "ft_iters")


def _ranking(rankset: str, net: str = "vgg16") -> list[tuple[str, dict[str, str], bool]]:
    """The ranking stage of a row: the rank set from ``PRISTINE``, then the ranking run
    ``runs/rank_<rankset>_<net>`` (VGG-16 starts from the ImageNet ``WEIGHTS``, the Shallow net always from
    random weights)."""
    train = {"RANKSET": rankset, "NET": net, "RANK_RUN": f"runs/rank_{rankset}_{net}"}
    if net == "vgg16":
        train["WEIGHTS"] = "${WEIGHTS}"
    return [("ranks", {"RANKSET": rankset, "PRISTINE": "${PRISTINE}"}, False), ("train_rank", train, False)]


RECIPES: dict[str, dict[str, Any]] = {
    "tid2013_vgg16": {
        "row": "RankIQA+FT, VGG-16, TID2013",
        "paper": {"srocc": 0.780, "plcc": 0.799},
        "source": "paper, TID2013 results (RankIQA+FT)",
        "needs": {"PRISTINE": PRISTINE, "WEIGHTS": WEIGHTS},
        "rank_iters": 50000, "ft_iters": 10000, "splits": 1,
        "steps": [
            *_ranking("tid2013"),
            ("finetune", {"DATASET": "tid2013", "NET": "vgg16", "SPLIT": "original",
                          "FT_RUN": "runs/ft_tid2013_vgg16_splitoriginal"}, False),
            ("eval", {"DATASET": "tid2013", "NET": "vgg16", "SPLIT": "original",
                      "MODEL": _ft_model("runs/ft_tid2013_vgg16_splitoriginal"),
                      "RUN": "tid2013_vgg16"}, False),
        ],
    },
    "tid2013_rankiqa_vgg16": {
        "row": "RankIQA (ranking only, no fine-tuning), VGG-16, TID2013",
        "paper": {"srocc": 0.623, "plcc": 0.566},
        "source": "paper, TID2013 results (RankIQA)",
        "needs": {"PRISTINE": PRISTINE, "WEIGHTS": WEIGHTS},
        "rank_iters": 50000, "ft_iters": None, "splits": 1,
        "steps": [
            *_ranking("tid2013"),
            ("eval", {"DATASET": "tid2013", "NET": "vgg16", "SPLIT": "original",
                      "MODEL": _last_snapshot("runs/rank_tid2013_vgg16", "rank_iters"),
                      "DEPLOY": "prototxts/vgg16/rank_deploy.prototxt", "RUN": "tid2013_rankiqa_vgg16"},
             False),
        ],
    },
    "tid2013_imagenet_vgg16": {
        "row": "ImageNet VGG-16 fine-tuned (the baseline without ranking), TID2013",
        "paper": {"srocc": 0.612, "plcc": 0.663},
        "source": "paper, TID2013 results (VGG-16 from ImageNet, fine-tuned)",
        "needs": {"WEIGHTS": WEIGHTS},
        "rank_iters": None, "ft_iters": 10000, "splits": 1,
        "steps": [
            # ImageNet's 1000-way fc8 would clash with the fine-tuning head fc8: it is not copied.
            ("finetune", {"DATASET": "tid2013", "NET": "vgg16", "SPLIT": "original",
                          "RANK_MODEL": "${WEIGHTS}", "SKIP_LAYERS": "fc8",
                          "FT_RUN": "runs/ft_tid2013_vgg16_splitoriginal_imagenet"}, False),
            ("eval", {"DATASET": "tid2013", "NET": "vgg16", "SPLIT": "original",
                      "MODEL": _ft_model("runs/ft_tid2013_vgg16_splitoriginal_imagenet"),
                      "RUN": "tid2013_imagenet_vgg16"}, False),
        ],
    },
    "live_vgg16": {
        "row": "RankIQA+FT, VGG-16, LIVE",
        "paper": {"srocc": 0.981, "plcc": 0.982},
        "source": "paper, LIVE results (RankIQA+FT)",
        "needs": {"PRISTINE": PRISTINE, "WEIGHTS": WEIGHTS},
        # 10 splits as the paper's CSIQ protocol; the notes on the original do not say how many LIVE used.
        "rank_iters": 50000, "ft_iters": 20000, "splits": 10,
        "steps": [
            *_ranking("live"),
            ("finetune", {"DATASET": "live", "NET": "vgg16", "SPLITS": "${SPLITS}", "SPLIT": "${SPLIT}",
                          "FT_RUN": "runs/ft_live_vgg16_split${SPLIT}"}, True),
            ("eval", {"DATASET": "live", "NET": "vgg16", "SPLITS": "${SPLITS}",
                      "MODEL": _ft_model("runs/ft_live_vgg16_split{split}"), "RUN": "live_vgg16"}, False),
        ],
    },
    "csiq_vgg16": {
        "row": "RankIQA+FT, VGG-16, CSIQ (the 4 types CSIQ shares with LIVE)",
        "paper": {"srocc": 0.947, "plcc": 0.960},
        "source": "paper, CSIQ results (RankIQA+FT; 4 LIVE types, 10 splits)",
        "needs": {"PRISTINE": PRISTINE, "WEIGHTS": WEIGHTS},
        "rank_iters": 50000, "ft_iters": 20000, "splits": 10,
        "steps": [
            *_ranking("live"),
            ("finetune", {"DATASET": "csiq", "NET": "vgg16", "FT_TYPES": "paper", "SPLITS": "${SPLITS}",
                          "SPLIT": "${SPLIT}", "FT_RUN": "runs/ft_csiq_paper_vgg16_split${SPLIT}"}, True),
            ("eval", {"DATASET": "csiq", "NET": "vgg16", "FT_TYPES": "paper", "SPLITS": "${SPLITS}",
                      "MODEL": _ft_model("runs/ft_csiq_paper_vgg16_split{split}"), "RUN": "csiq_vgg16"},
             False),
        ],
    },
    "tid2013_shallow": {
        "row": "RankIQA+FT, the Shallow net (supplementary Table 5, with the CPU extras), TID2013",
        "paper": None,
        "source": "supplementary Table 5 gives the Shallow net's layers; no figure of it is in the notes "
                  "on the original this project keeps",
        "needs": {"PRISTINE": PRISTINE},
        "rank_iters": 50000, "ft_iters": 10000, "splits": 1,
        "steps": [
            *_ranking("tid2013", "shallow"),
            ("finetune", {"DATASET": "tid2013", "NET": "shallow", "SPLIT": "original",
                          "FT_RUN": "runs/ft_tid2013_shallow_splitoriginal"}, False),
            ("eval", {"DATASET": "tid2013", "NET": "shallow", "SPLIT": "original",
                      "MODEL": _ft_model("runs/ft_tid2013_shallow_splitoriginal"),
                      "RUN": "tid2013_shallow"}, False),
        ],
    },
}
