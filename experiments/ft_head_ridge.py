"""Can a refit of the regression head on the fine-tuning photographs beat the ranking head on held-out ones?

    python -m experiments.ft_head_ridge --rank-model runs/demo/<...>/rank/snapshots/rank_iter_N.caffemodel \\
        --table data/demo/<...>/ft/synthetic/table.csv \\
        --train-list data/demo/<...>/ft/synthetic/split0/train.txt --out data/ft_ridge \\
        [--crops 10] [--seed S] [--extra-table <more training images: a table.csv of data_prep.synthetic_iqa>]

In the demo's fine-tuning the transferred layers hardly move (the head-step bound keeps the base rate near
1e-8; README, "The demo"), so RankIQA+FT amounts to a new linear head on the ranking model's features. This
script computes that head in closed form for every strength of one regulariser instead of training it: ridge
regression of the training labels on the head's input features (mean over ``--crops`` random crops per image,
the evaluation's crops), shrunk towards the calibrated ranking head (``rankiqa.head_init.linear_probe`` with
``prior``; the L2-SP penalty). A large strength gives back the ranking model (the demo's ``calibrate`` start),
a small one a least-squares fit on the training images. Each head is scored on the held-out images (every
row of the table whose image is not in the training list): SROCC and PLCC pooled, as the demo's claim. One
strength is also chosen without the held-out images, by cross-validation on the training images (squared
error; leave one reference out when they come from two or more, else leave one distortion type out), to show
what a choice made on the training photographs alone gives. ``--extra-table`` adds training images (with
their references) that are not in the table, e.g. stand-in sets of the ranking photographs.

Writes ``<out>/ridge.md`` and ``ridge.json`` (the strengths with their held-out figures, the ranking model's,
the cross-validated choice).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rankiqa import head_init, metrics
from rankiqa.errors import InputError, cli_main
from rankiqa.evaluation import read_table
from rankiqa.fsutil import atomic_write_text
from rankiqa.lists import read_list
from rankiqa.paths import REPO_ROOT

#: Ridge strengths (relative to the mean variance of the centred features, as ``linear_probe``).
STRENGTHS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
DEPLOY = REPO_ROOT / "prototxts" / "shallow" / "rank_deploy.prototxt"


def ridge_heads(features: np.ndarray, labels: np.ndarray, prior: np.ndarray, prior_bias: float,
                strengths: Sequence[float]) -> list[tuple[np.ndarray, float]]:
    """``(w, b)`` per strength: ``labels ~ features @ w + b`` shrunk towards the head ``(prior, prior_bias)``
    after mapping that head onto the labels (least-squares scale and offset of its output, as ``calibrate``).

    ``features``: ``(n, d)``; ``labels``: ``(n,)``; ``prior``: ``(d,)``.
    """
    x = np.asarray(features, dtype=np.float64)
    output = x @ prior + prior_bias
    (slope,), _ = head_init.linear_probe(output.reshape(-1, 1), labels, ridge=0.0)
    return [head_init.linear_probe(x, labels, ridge=strength, prior=slope * prior) for strength in strengths]


def cross_validated_strength(features: np.ndarray, labels: np.ndarray, groups: Sequence[str],
                             prior: np.ndarray, prior_bias: float, strengths: Sequence[float]) -> float:
    """The strength with the least squared error when each group's images (``groups``: one name per image,
    a reference or a distortion type) are predicted by heads fitted on the other groups (ties: the larger
    strength, nearer the ranking model)."""
    groups = np.asarray(groups)
    errors = np.zeros(len(strengths))
    for held in sorted(set(groups.tolist())):
        fold = groups == held
        heads = ridge_heads(features[~fold], labels[~fold], prior, prior_bias, strengths)
        for index, (w, b) in enumerate(heads):
            errors[index] += float(np.sum((features[fold] @ w + b - labels[fold]) ** 2))
    best = min(range(len(strengths)), key=lambda i: (errors[i], -strengths[i]))
    return float(strengths[best])


def mean_features(rank_model: Path, paths: Sequence[str], crops: int, seed: int) -> np.ndarray:
    """The ranking head's input features, mean over ``crops`` random crops of each image: ``(n, d)``.

    Crop positions as the evaluation's (``rankiqa.scoring.crop_positions`` with ``(seed, row index)``).
    """
    from rankiqa.image_io import read_bgr
    from rankiqa.scoring import load_net

    net, info = load_net(DEPLOY, rank_model)
    producers = [name for name in net._layer_names if info.output_blob in net.top_names.get(name, [])]
    if not producers or net.layer_dict[producers[0]].type != "InnerProduct":
        raise InputError(f"no InnerProduct layer produces {info.output_blob!r}", DEPLOY)
    layer = producers[0]
    head = head_init.Head(layer=layer, bottom=net.bottom_names[layer][0], top=info.output_blob, loss_layer="")
    features = head_init.head_features(net, head, [read_bgr(path) for path in paths], info.crop_height, seed,
                                       crops)
    return features.reshape(len(paths), crops, -1).mean(axis=1)


def _prior_head(rank_model: Path, size: int) -> tuple[np.ndarray, float]:
    weights = head_init.ranking_head(rank_model, (1, size), (1,))
    if weights is None:
        raise InputError(f"no ranking head {head_init.RANKING_HEAD} with {size} inputs", rank_model)
    return weights[0].reshape(-1).astype(np.float64), float(weights[1][0])


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank-model", type=Path, required=True)
    parser.add_argument("--table", type=Path, required=True, help="every image with its reference and type")
    parser.add_argument("--train-list", type=Path, required=True, help="the fine-tuning training list")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--crops", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra-table", type=Path, help="more training images (a table CSV)")
    args = parser.parse_args(argv)
    samples, _ = read_table(args.table)
    training = {str(Path(path).resolve()) for path, _ in read_list(args.train_list)}
    train = np.array([str(Path(s.path).resolve()) in training for s in samples])
    if not train.any() or train.all():
        raise InputError("the training list must name some, not all, of the table's images", args.train_list)
    labels = np.array([s.score for s in samples])
    features = mean_features(args.rank_model, [s.path for s in samples], args.crops, args.seed)
    prior, prior_bias = _prior_head(args.rank_model, features.shape[1])
    test = ~train

    def scored(pred: np.ndarray) -> dict[str, float]:
        return {"srocc": metrics.srocc(pred[test], labels[test]),
                "plcc": metrics.plcc(pred[test], labels[test])}

    rows = [{"head": "the ranking model (fc8_m)", "strength": None, **scored(features @ prior + prior_bias)}]
    train_x, train_y = features[train], labels[train]
    train_samples = [sample for sample, used in zip(samples, train, strict=True) if used]
    if args.extra_table is not None:
        extra, _ = read_table(args.extra_table)
        train_x = np.concatenate([train_x, mean_features(args.rank_model, [s.path for s in extra], args.crops,
                                                         args.seed)])
        train_y = np.concatenate([train_y, [s.score for s in extra]])
        train_samples += extra
    references = [s.reference for s in train_samples]
    folds = references if len(set(references)) > 1 else [s.type for s in train_samples]
    heads = ridge_heads(train_x, train_y, prior, prior_bias, STRENGTHS)
    rows += [{"head": f"refit, strength {strength:g}", "strength": strength, **scored(features @ w + b)}
             for strength, (w, b) in zip(STRENGTHS, heads, strict=True)]
    chosen = cross_validated_strength(train_x, train_y, folds, prior, prior_bias, STRENGTHS)
    report = {"rank_model": str(args.rank_model), "table": str(args.table),
              "train_list": str(args.train_list), "crops": args.crops, "seed": args.seed,
              "extra_table": str(args.extra_table) if args.extra_table else None,
              "train_images": len(train_y), "test_images": int(test.sum()),
              "training_references": sorted(set(references)), "rows": rows,
              "cross_validated_strength": chosen,
              "cross_validated_over": "references" if folds is references else "distortion types"}
    lines = [f"# Head refits on {len(train_y)} training images of {len(set(references))} reference(s), "
             f"{int(test.sum())} held-out images", "",
             "| head | held-out SROCC | held-out PLCC |", "|---|---|---|"]
    lines += [f"| {row['head']}{' (cross-validated choice)' if row['strength'] == chosen else ''} | "
              f"{row['srocc']:.3f} | {row['plcc']:.3f} |" for row in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "ridge.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(args.out / "ridge.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
