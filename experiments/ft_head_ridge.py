"""Can a refit of the regression head on the fine-tuning photographs beat the ranking head on held-out ones?

    python -m experiments.ft_head_ridge --rank-model runs/demo/<...>/rank/snapshots/rank_iter_N.caffemodel \\
        --table data/demo/<...>/ft/synthetic/table.csv \\
        --train-list data/demo/<...>/ft/synthetic/split0/train.txt \\
        --test-table data/demo/<...>/ft/synthetic/split0/test.csv --out data/ft_ridge \\
        [--crops 10] [--seed S] [--extra-table <more training images: a table.csv of data_prep.synthetic_iqa>]

In the demo's fine-tuning the transferred layers hardly move (the head-step bound keeps the base rate near
1e-8; docs/DEMO.md), so RankIQA+FT amounts to a new linear head on the ranking model's features. This
script computes that head in closed form for every strength of one regulariser instead of training it: ridge
regression of the training labels on the head's input features (mean over ``--crops`` random crops per image),
shrunk towards the ranking head mapped onto the labels (``rankiqa.head_init.linear_probe`` with ``prior``; the
L2-SP penalty). A large strength gives back the ranking model (the demo's ``calibrate`` start), a small one a
least-squares fit on the training images. Each head is scored on the held-out images of ``--test-table``, on
the crops ``tools.evaluate`` takes from them (same positions: seed and row number), so the ranking model's row
is the demo's RankIQA evaluation: SROCC and PLCC pooled, as the demo's claim. One strength is also chosen
without the held-out images, by cross-validation on the training images (squared error; leave one reference
out when they come from two or more, else leave one distortion type out), to show what a choice made on the
training photographs alone gives. The training images are the rows of ``--table`` named in ``--train-list``
(their labels and types from the table); ``--extra-table`` adds training images of other references, e.g.
the stand-in sets of the ranking photographs.

Two more heads are trained rather than solved: the demo's fine-tuning simulated in numpy on the head alone
(``descent_head``: its solver, batch, iterations, start and bounded rate; the demo also trains the layers
below, at the same bounded rate, which leaves them where they are, docs/DEMO.md), on the features as the net
gives them and with the head's input centred (the mean to the bias, so that the rate bound divides by the
features' variance instead of their energy).

Beside the heads, and not a model, ``label_lookup``: each held-out image given the training images' mean label
of its distortion type and level, i.e. how far the training photographs' labels carry to other photographs
at all (measured on the demo's photograph sets: docs/DEMO.md).

Writes ``<out>/ridge.md`` and ``ridge.json`` (the strengths with their held-out figures, the ranking model's,
the two trained heads', the cross-validated choice, the label lookup).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankiqa import head_init, metrics
from rankiqa.demo_setup import EVAL_CROPS, MIN_PHOTOS, NET, full_profile
from rankiqa.errors import InputError, cli_main
from rankiqa.evaluation import Sample, read_table
from rankiqa.fsutil import atomic_write_text
from rankiqa.lists import read_list
from rankiqa.netconfig import read_net_param, read_solver_param
from rankiqa.paths import PROTOTXT_DIR
from rankiqa.registry import DATASETS

#: Ridge strengths (relative to the mean variance of the centred features, as ``linear_probe``).
STRENGTHS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
DEPLOY = PROTOTXT_DIR / NET / "rank_deploy.prototxt"  # the demo's ranking net


def ridge_heads(features: np.ndarray, labels: np.ndarray, prior: np.ndarray, prior_bias: float,
                strengths: Sequence[float]) -> list[tuple[np.ndarray, float]]:
    """``(w, b)`` per strength: ``labels ~ features @ w + b`` shrunk towards the head ``(prior, prior_bias)``
    after mapping that head onto the labels (least-squares scale and offset of its output, as ``calibrate``).

    ``features``: ``(n, d)``; ``labels``: ``(n,)``; ``prior``: ``(d,)``.
    """
    x = np.asarray(features, dtype=np.float64)
    output = x @ prior + prior_bias
    if not np.ptp(output) > 0:
        raise InputError("the ranking head gives every training image the same score: nothing to refit from")
    (slope,), _ = head_init.linear_probe(output.reshape(-1, 1), labels, ridge=0.0)
    return [head_init.linear_probe(x, labels, ridge=strength, prior=slope * prior) for strength in strengths]


@dataclass(frozen=True)
class HeadSolver:
    """What of the demo's fine-tuning reaches its head: the solver's momentum and weight decay, the head's
    ``lr_mult`` and ``decay_mult`` (weights, bias), the iterations and the batch."""

    momentum: float
    weight_decay: float
    lr_mult: float
    bias_lr_mult: float
    decay_mult: float
    bias_decay_mult: float
    iters: int
    batch: int
    base_lr: float  # the rate asked for; the head-step bound may lower it


def demo_head_solver() -> HeadSolver:
    """The demo's fine-tuning of the head, read where it is stated: the stand-in's solver template
    (``rankiqa.registry``), the Shallow net's ``ft_train.prototxt`` (its regression head; Caffe's defaults
    where a ``param`` is absent) and the full profile (``rankiqa.demo_setup``: iterations, batch, rate).

    ``InputError`` when the profile's fine-tuning is not what ``descent_head`` simulates: the ``calibrate``
    start and the ``std`` loss scale.
    """
    style = DATASETS["synthetic"].ft_style
    solver = read_solver_param(style.solver())
    net_path = style.net(NET, "train")
    net = read_net_param(net_path)
    head = head_init.find_head(net, net_path)
    params = list(next(layer.param for layer in net.layer if layer.name == head.layer))
    while len(params) < 2:  # a blob without a param block: ParamSpec's defaults, Caffe's (lr_mult 1, ...)
        params.append(_default_param())
    weight, bias = params[:2]
    profile = full_profile([f"photograph{k}" for k in range(MIN_PHOTOS)])
    if (profile.head_init, profile.loss_scale) != ("calibrate", "std"):
        raise InputError(f"the demo's fine-tuning starts {profile.head_init!r} with loss scale "
                         f"{profile.loss_scale!r}; the simulation knows 'calibrate' with 'std'")
    return HeadSolver(momentum=solver.momentum, weight_decay=solver.weight_decay, lr_mult=weight.lr_mult,
                      bias_lr_mult=bias.lr_mult, decay_mult=weight.decay_mult,
                      bias_decay_mult=bias.decay_mult, iters=profile.ft_iters, batch=profile.ft_batch,
                      base_lr=profile.ft_lr)


def _default_param() -> Any:
    from rankiqa.caffe_proto import caffe_pb2

    return caffe_pb2().ParamSpec()


def descent_head(features: np.ndarray, labels: np.ndarray, prior: np.ndarray, prior_bias: float,
                 centred: bool, seed: int, solver: HeadSolver, iters: int | None = None,
                 ) -> tuple[np.ndarray, float, float]:
    """The head after ``solver``'s fine-tuning of the head alone, simulated (``iters``: the solver's unless
    given): Caffe's SGD update ``v = momentum v + rate lr_mult (grad + weight_decay decay_mult w); w -= v`` on
    the Euclidean loss weighted by ``1 / std(labels)^2``, from the ranking head mapped onto the labels
    (``calibrate``), the base rate the solver's ``base_lr`` or, when lower, the head-step bound
    ``HEAD_STEP / (lr_mult x loss weight x E||f||^2)`` (``head_init.stable_lr``).

    ``centred``: the head reads ``f - mean(f)`` (training mean) instead of ``f``, so the bound divides by the
    features' variance ``E||f - mean||^2`` instead of their energy, and the mean goes to the bias.
    ``features``: ``(n, d)`` (one row per training image; the demo trains on one random crop per image per
    step, this on each image's mean over crops); ``labels``: ``(n,)``; ``prior``: ``(d,)``; batches drawn
    without replacement, reshuffled every pass (``seed``). Returns ``(w, b, base rate)`` with ``w`` ``(d,)``
    for the uncentred features (the mean folded into ``b``).
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    mean_x = x.mean(axis=0) if centred else np.zeros(x.shape[1])
    xc = x - mean_x
    output = x @ prior + prior_bias
    (slope,), offset = head_init.linear_probe(output.reshape(-1, 1), y, ridge=0.0)
    w = slope * prior
    b = float(slope * prior_bias + offset + mean_x @ w)  # the same function of f, on the centred input
    _, std = head_init.label_spread(y)
    loss_weight = 1.0 / std ** 2
    energy = float(np.mean(np.sum(xc ** 2, axis=1)))
    rate = min(solver.base_lr, head_init.HEAD_STEP / (solver.lr_mult * loss_weight * energy))
    rng = np.random.default_rng(seed)
    order: list[int] = []
    v_w, v_b = np.zeros_like(w), 0.0
    for _ in range(solver.iters if iters is None else iters):
        if len(order) < solver.batch:
            order += rng.permutation(len(x)).tolist()
        batch, order = order[:solver.batch], order[solver.batch:]
        error = (xc[batch] @ w + b - y[batch]) * loss_weight / len(batch)
        grad_w = xc[batch].T @ error + solver.weight_decay * solver.decay_mult * w
        grad_b = float(error.sum()) + solver.weight_decay * solver.bias_decay_mult * b
        v_w = solver.momentum * v_w + rate * solver.lr_mult * grad_w
        v_b = solver.momentum * v_b + rate * solver.bias_lr_mult * grad_b
        w, b = w - v_w, b - v_b
    return w, float(b - mean_x @ w), rate


def cross_validated_strength(features: np.ndarray, labels: np.ndarray, groups: Sequence[str],
                             prior: np.ndarray, prior_bias: float, strengths: Sequence[float],
                             ) -> float | None:
    """The strength with the least squared error when each group's images (``groups``: one name per image,
    a reference or a distortion type) are predicted by heads fitted on the other groups (ties: the larger
    strength, nearer the ranking model); None with fewer than two groups (nothing to hold out)."""
    groups = np.asarray(groups)
    if len(set(groups.tolist())) < 2:
        return None
    errors = np.zeros(len(strengths))
    for held in sorted(set(groups.tolist())):
        fold = groups == held
        heads = ridge_heads(features[~fold], labels[~fold], prior, prior_bias, strengths)
        for index, (w, b) in enumerate(heads):
            errors[index] += float(np.sum((features[fold] @ w + b - labels[fold]) ** 2))
    best = min(range(len(strengths)), key=lambda i: (errors[i], -strengths[i]))
    return float(strengths[best])


def ranking_features(rank_model: Path, tables: Sequence[Sequence[str]], crops: int, seed: int,
                     ) -> tuple[list[np.ndarray], np.ndarray, float]:
    """The ranking head's input features for the images of each of ``tables`` (lists of image paths), mean
    over ``crops`` random crops of each image (one ``(n, d)`` array per table), and the ranking head itself
    (weights ``(d,)``, bias), from one load of the ranking model.

    Crop positions as ``tools.evaluate`` takes them from a table with these rows in this order
    (``rankiqa.scoring.crop_positions`` with ``(seed, row number)``), each table numbered from 0.
    """
    from rankiqa.image_io import read_bgr
    from rankiqa.scoring import load_net

    net, info = load_net(DEPLOY, rank_model)
    producers = [name for name in net._layer_names if info.output_blob in net.top_names.get(name, [])]
    if not producers or net.layer_dict[producers[0]].type != "InnerProduct":
        raise InputError(f"no InnerProduct layer produces {info.output_blob!r}", DEPLOY)
    layer = producers[0]
    head = head_init.Head(layer=layer, bottom=net.bottom_names[layer][0], top=info.output_blob, loss_layer="")
    features = []
    for paths in tables:
        images = [read_bgr(path) for path in paths]
        crop_features = head_init.head_features(net, head, images, info.crop_height, seed, crops)
        features.append(crop_features.reshape(len(paths), crops, -1).mean(axis=1))
    weights, bias = net.params[layer][0].data, net.params[layer][1].data
    return features, weights.reshape(-1).astype(np.float64), float(bias.reshape(-1)[0])


def label_lookup(train: Sequence[Sample], test: Sequence[Sample], test_table: Path | None = None,
                 ) -> np.ndarray:
    """Each held-out image's label guessed from the training images' labels alone: the mean label of the
    training images of the same distortion type and level, ``(len(test),)``.

    Not a model (it needs the type and level, which a no-reference model is not given): it measures how far
    the labels of the training photographs carry to other photographs at all: what a model that recognised
    type and level, and nothing else, would take from them. ``InputError`` naming the first held-out image
    whose type and level no training image has (with ``test_table``, the file it comes from), or an image
    without a type or level.
    """
    unnamed = next((s for s in [*train, *test] if not (s.type and s.level)), None)
    if unnamed is not None:
        raise InputError(f"no distortion type and level for {unnamed.path}: the label lookup needs both",
                         test_table if unnamed in test else None, unnamed.line)
    by_key: dict[tuple[str, str], list[float]] = {}
    for sample in train:
        by_key.setdefault((sample.type, sample.level), []).append(sample.score)
    guesses = []
    for sample in test:
        labels = by_key.get((sample.type, sample.level))
        if not labels:
            raise InputError(f"no training image of type {sample.type!r} level {sample.level!r} for the "
                             f"label lookup: {sample.path}", test_table, sample.line)
        guesses.append(float(np.mean(labels)))
    return np.array(guesses)


def _resolved(path: str) -> str:
    return str(Path(path).resolve())


def training_and_test(table: Path, train_list: Path, test_table: Path, extra_table: Path | None,
                      ) -> tuple[list[Sample], list[Sample]]:
    """The training samples (rows of ``table`` named in ``train_list``, then every row of ``extra_table``) and
    the held-out ones (``test_table``'s rows, in order). ``InputError`` when the training list names an image
    the table lacks, when there are fewer than 2 training images, when the held-out table lists an image twice
    or a held-out image is also a training one, or when the tables' score directions differ."""
    samples, direction = read_table(table)
    named = {_resolved(path) for path, _ in read_list(train_list)}
    train = [s for s in samples if _resolved(s.path) in named]
    missing = len(named) - len({_resolved(s.path) for s in train})
    if missing:
        raise InputError(f"{missing} training image(s) are not in {table} (no reference, type or label for "
                         "them)", train_list)
    test, test_direction = read_table(test_table)
    tables = [(test_table, test_direction)]
    if extra_table is not None:
        extra, extra_direction = read_table(extra_table)
        train += extra
        tables.append((extra_table, extra_direction))
    for other, other_direction in tables:
        if other_direction != direction:
            raise InputError(f"score direction {other_direction}, but {table} has {direction}", other)
    if len(train) < 2:
        raise InputError("a head refit needs at least 2 training images", train_list)
    seen: set[str] = set()
    for sample in test:
        if _resolved(sample.path) in seen:
            raise InputError(f"image listed twice: {sample.path}", test_table, sample.line)
        seen.add(_resolved(sample.path))
    leaked = sorted({_resolved(s.path) for s in train} & {_resolved(s.path) for s in test})
    if leaked:
        raise InputError(f"{len(leaked)} held-out image(s) are also training images, e.g. {leaked[0]}",
                         test_table)
    return train, test


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank-model", type=Path, required=True)
    parser.add_argument("--table", type=Path, required=True,
                        help="the fine-tuning images with references, types and labels (table.csv)")
    parser.add_argument("--train-list", type=Path, required=True, help="the fine-tuning training list")
    parser.add_argument("--test-table", type=Path, required=True, help="the held-out images (split test.csv)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--crops", type=int, default=EVAL_CROPS, help="crops per image (default: the demo's)")
    parser.add_argument("--seed", type=int, default=0, help="crop seed (the demo's evaluation: its seed)")
    parser.add_argument("--extra-table", type=Path, help="more training images (a table CSV)")
    args = parser.parse_args(argv)
    train, test = training_and_test(args.table, args.train_list, args.test_table, args.extra_table)
    train_y = np.array([s.score for s in train])
    test_y = np.array([s.score for s in test])

    def scored(pred: np.ndarray) -> dict[str, float]:
        return {"srocc": metrics.srocc(pred, test_y), "plcc": metrics.plcc(pred, test_y)}

    # Before the slow feature pass, and never in the way of the heads' report.
    try:
        lookup: dict[str, float] | None = scored(label_lookup(train, test, args.test_table))
        lookup_note = ""
    except InputError as err:
        lookup, lookup_note = None, str(err)
    (train_x, test_x), prior, prior_bias = ranking_features(
        args.rank_model, [[s.path for s in train], [s.path for s in test]], args.crops, args.seed)

    rows = [{"head": "the ranking model (fc8_m)", "strength": None, **scored(test_x @ prior + prior_bias)}]
    heads = ridge_heads(train_x, train_y, prior, prior_bias, STRENGTHS)
    rows += [{"head": f"refit, strength {strength:g}", "strength": strength, **scored(test_x @ w + b)}
             for strength, (w, b) in zip(STRENGTHS, heads, strict=True)]
    solver = demo_head_solver()
    for centred in (False, True):
        w, b, rate = descent_head(train_x, train_y, prior, prior_bias, centred, args.seed, solver)
        name = "centred input" if centred else "input as the demo's"
        rows.append({"head": f"trained as the demo ({name}; rate {rate:.3g}, {solver.iters} iterations)",
                     "strength": None, "descent": "centred" if centred else "demo", "rate": rate,
                     **scored(test_x @ w + b)})
    references = [s.reference for s in train]
    folds = references if len(set(references)) > 1 else [s.type for s in train]
    chosen = cross_validated_strength(train_x, train_y, folds, prior, prior_bias, STRENGTHS)
    report = {"rank_model": str(args.rank_model), "table": str(args.table),
              "train_list": str(args.train_list), "test_table": str(args.test_table),
              "extra_table": str(args.extra_table) if args.extra_table else None, "crops": args.crops,
              "seed": args.seed, "train_images": len(train), "test_images": len(test),
              "training_references": sorted(set(references)), "rows": rows,
              "cross_validated_strength": chosen, "label_lookup": lookup,
              **({"label_lookup_skipped": lookup_note} if lookup is None else {}),
              "cross_validated_over": None if chosen is None else
              "references" if folds is references else "distortion types"}
    lines = [f"# Head refits on {len(train)} training images of {len(set(references))} reference(s), "
             f"{len(test)} held-out images", "",
             "| head | held-out SROCC | held-out PLCC |", "|---|---|---|"]
    for row in rows:
        mark = " (cross-validated choice)" if chosen is not None and row["strength"] == chosen else ""
        lines.append(f"| {row['head']}{mark} | {row['srocc']:.3f} | {row['plcc']:.3f} |")
    if chosen is None:
        lines += ["", "No cross-validated choice: the training images form one reference and one type."]
    if lookup is None:
        lines += ["", f"No label lookup: {lookup_note}"]
    else:
        lines += ["", "Not a model: each held-out image given the training images' mean label of its type "
                  f"and level (label_lookup): SROCC {lookup['srocc']:.3f}, PLCC {lookup['plcc']:.3f}; how "
                  "far the training labels carry to the held-out photographs at all."]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "ridge.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(args.out / "ridge.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
