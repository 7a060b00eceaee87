"""Run preparation: a run configuration (``rankiqa.runconfig``) resolved into a run folder.

Everything that can be refused is checked before the run folder is created or touched: the flags, the
run's identity (``run.json``: a run folder belongs to one configuration), the data it trains on
(``inputs.json``), the resume state, and the resolved nets and solver (``rankiqa.netcheck``). Then
``train.prototxt``/``solver.prototxt`` (and one pair per GPU process with ``--gpus``) are written and a
``rankiqa.trainer.PreparedRun`` says what to train.

Initialisation (recorded in ``run.json`` as ``initialisation``): VGG-16 ranking starts from ImageNet
VGG-16 weights, as the paper; a new ``vgg16`` ranking run without weights is refused, ``--weights none``
starts from random initialisation on purpose. Fine-tuning starts from a ranking model (by default
``rankiqa.snapshots.default_rank_model``) and records its ranking run's start too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rankiqa import head_init, netcheck, provenance, registry
from rankiqa.caffe_io import import_caffe
from rankiqa.devices import GpuShare, gpu_shares, parse_gpus, require_nccl, resolve_device
from rankiqa.errors import InputError
from rankiqa.fsutil import atomic_write_text, storage_errors
from rankiqa.lists import count_list_lines, read_list
from rankiqa.manifest import MANIFEST_NAME, manifest_images, manifest_levels, read_manifest
from rankiqa.netconfig import (
    configure_ft_net,
    configure_rank_net,
    configure_solver,
    get_param_str,
    has_test_phase,
    layer_phase,
    python_layers,
    read_net_param,
    read_solver_param,
    set_param_str,
    test_batch_size,
    write_text_proto,
)
from rankiqa.paths import repo_relative
from rankiqa.runconfig import (
    DEFAULT_RANK_TEST_ITERS,
    DEFAULT_SNAPSHOT,
    DEFAULT_TEST_INTERVAL,
    FT_HEAD_DEFAULTS,
    SHALLOW_DEFAULT_LR,
    RunConfig,
)
from rankiqa.scoring import run_record
from rankiqa.snapshots import (
    SNAPSHOT_STAGING,
    check_solverstate,
    default_rank_model,
    find_resume_state,
    snapshot_iteration,
)
from rankiqa.trainer import HEAD_STEP_BOUND, PreparedRun

_DIGEST_KEYS = {"net_definition": "the train net (its layers and parameters)",
                "solver_definition": "the solver"}
#: Identity keys added after run folders existed: a run.json without one holds a run with this value.
_IDENTITY_DEFAULTS: dict[str, Any] = {"mixed_references": False, "groups": "levels"}


def check_run_identity(run_dir: Path, identity: dict[str, Any]) -> None:
    """Refuse to continue a run folder that holds a different kind of run (a rerun must match)."""
    run_json = run_dir / "run.json"
    if not run_json.is_file():
        return
    try:
        old = json.loads(run_json.read_text(encoding="utf-8"))
    except ValueError:
        raise InputError("run.json is not JSON", run_json) from None
    old = {**{k: v for k, v in _IDENTITY_DEFAULTS.items() if k in identity}, **old}
    for key, value in identity.items():
        if key in old and old[key] != value:
            what = (f"{_DIGEST_KEYS[key]} changed since this run started" if key in _DIGEST_KEYS else
                    f"this run folder holds a run with {key}={old[key]!r}, not {value!r}")
            raise InputError(f"{what}; choose another --out (RANK_RUN / FT_RUN with make; or delete the "
                             "folder to start over)", run_json)


def definition_digest(message: Any) -> str:
    """SHA-256 of a parsed prototxt as protobuf text: its content, without comments or layout."""
    from google.protobuf import text_format

    return provenance.sha256_json(text_format.MessageToString(message))


def run_inputs(lists: dict[str, Path], images: Sequence[Path]) -> dict[str, Any]:
    """What a run reads (``inputs.json``): the SHA-256 of each list or manifest, and every image (or LMDB
    file) they name by size and modification time."""
    return {"lists": provenance.content(lists),
            "images": provenance.fingerprint({str(path): path for path in images})}


def check_run_inputs(run_dir: Path, inputs: dict[str, Any]) -> None:
    """Refuse to continue a run on data other than those it started on (its ``inputs.json``), naming what
    changed; a run folder without the file (an earlier version) is not checked."""
    path = run_dir / "inputs.json"
    old = provenance.read_json(path)
    if old is None:
        return
    old_lists = old.get("lists", {})
    problems = [f"{name} changed (content)" for name in sorted(set(old_lists) | set(inputs["lists"]))
                if old_lists.get(name) != inputs["lists"].get(name)]
    images = provenance.diff_records(old.get("images", {}), inputs["images"])
    if images:
        problems.append(f"images (size or modification time): {images.describe()}")
    if problems:
        raise InputError(f"this run was trained on other data: {'; '.join(problems)}; resuming would mix the "
                         "two: choose another --out (RANK_RUN / FT_RUN with make; or delete the folder to "
                         "start over)", path)



def _prepare(config: RunConfig, kind: str, identity: dict[str, Any], net_src: Path, solver_src: Path,
             configure: Any, test_iters_default: int | None, test_items: int | None, weights: Path | None,
             header: str, inputs: dict[str, Any],
             initialisation: dict[str, Any]) -> tuple[PreparedRun, list[GpuShare] | None]:
    """Write ``train.prototxt``/``solver.prototxt`` (+ a copy per GPU process for --gpus); pick the resume
    state.

    Everything that can be refused is checked before the run folder is created or touched: the flags, the
    run's identity, the resume state, and the resolved nets and solver (``rankiqa.netcheck``: what Caffe
    would otherwise abort the process on).
    """
    run_dir: Path = config.out
    net_param = read_net_param(net_src)
    solver_param = read_solver_param(solver_src)
    identity = {**identity, "net_definition": definition_digest(net_param),
                "solver_definition": definition_digest(solver_param)}
    check_run_identity(run_dir, identity)
    check_run_inputs(run_dir, inputs)
    snapshot_dir = run_dir / "snapshots"
    if config.iters is not None and config.iters < 1:
        raise InputError(f"--iters must be >= 1, got {config.iters}")
    if config.snapshot is not None and config.snapshot < 1:
        raise InputError(f"--snapshot must be >= 1, got {config.snapshot}")
    if config.display < 1:
        raise InputError(f"--display must be >= 1, got {config.display}")
    if config.lr is not None and not config.lr > 0:
        raise InputError(f"--lr must be > 0, got {config.lr}")
    for flag in ("test_interval", "test_iters", "seed"):
        if getattr(config, flag) is not None and getattr(config, flag) < 0:
            raise InputError(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(config, flag)}")
    lr = config.lr
    if lr is None and config.net == "shallow":
        # The faithful solvers' rates are VGG-16's; the Shallow net (a CPU-only extra) has its own.
        lr = SHALLOW_DEFAULT_LR[kind]

    shares = gpu_shares(parse_gpus(config.gpus)) if config.gpus else None
    if shares is not None:
        require_nccl(import_caffe())
        device = shares[0].device
    else:
        device = resolve_device(config.gpu)

    testable = has_test_phase(net_param) and (config.test_interval is None or config.test_interval > 0)
    if config.test_iters is not None:
        test_iters = config.test_iters
    elif kind == "finetune":  # one pass over the whole test list (pooled SROCC/PLCC)
        test_iters = test_iters_default or 0
    else:
        test_iters = (solver_param.test_iter[0] if solver_param.test_iter else 0) or test_iters_default or 0
    if not testable or test_iters < 1:
        test_iters = 0
    if config.test_interval is not None:
        test_interval = config.test_interval
    else:
        test_interval = solver_param.test_interval or DEFAULT_TEST_INTERVAL[kind]
    snapshot = config.snapshot or (None if solver_param.snapshot else DEFAULT_SNAPSHOT[kind])
    prefix = snapshot_dir / SNAPSHOT_STAGING / run_dir.name  # published to snapshot_dir when complete
    header_lines = (f"{header}\nwritten by rankiqa/runprep.py from {_rel(net_src)} / {_rel(solver_src)}\n"
                    f"test net run by the driver every {test_interval} iterations ({test_iters} batch(es))")

    notes: list[str] = []
    resume = config.resume
    if resume is not None:
        start_iter, _ = check_solverstate(resume)
    else:
        resume = find_resume_state(snapshot_dir, notes.append)
        start_iter = check_solverstate(resume)[0] if resume is not None else 0
    # The data streams continue where the interrupted run left them: one batch per iteration (x iter_size)
    # per training data layer, test_iters batches per test pass (one at iteration 0, then every interval).
    start_batch = start_iter * max(1, solver_param.iter_size)
    tests_done = (1 + start_iter // test_interval) if (test_iters and test_interval and start_iter) else 0
    test_start_batch = tests_done * test_iters

    bound = _recorded_head_step_bound(run_dir, notes.append) if resume is not None else None
    if bound is not None:
        asked = lr if lr is not None else solver_param.base_lr
        if asked > bound["bound"]:
            notes.append(f"base_lr {bound['bound']:g} kept from this run's start (the head-step bound, "
                         f"rankiqa/head_init.py), not {asked:g}")
            lr = bound["bound"]

    train_net = configure(net_param, None, start_batch, test_start_batch)
    netcheck.check_net(train_net, net_src, "train")
    if test_iters:
        netcheck.check_net(train_net, net_src, "test")
    train_path = run_dir / "train.prototxt"
    solver_path = run_dir / "solver.prototxt"
    solver = configure_solver(solver_param, train_path, prefix, config.iters, lr, snapshot, config.seed,
                              device, test_iters or None)
    netcheck.check_solver(solver, solver_src)

    with storage_errors(snapshot_dir):
        snapshot_dir.mkdir(parents=True, exist_ok=True)
    write_text_proto(train_net, train_path, header_lines)
    write_text_proto(solver, solver_path, header_lines)
    gpu_solvers: list[Path] = []
    for share in shares or []:
        gpu_header = header_lines + f"\nGPU process {share.index} of {share.shard_count} (GPU {share.device})"
        gpu_net = run_dir / f"train.gpu{share.index}.prototxt"
        write_text_proto(configure(net_param, share, start_batch, test_start_batch), gpu_net, gpu_header)
        gpu_solver = run_dir / f"solver.gpu{share.index}.prototxt"
        # Only the root solver (process 0) tests.
        solver_g = configure_solver(solver_param, gpu_net, prefix, config.iters, lr, snapshot, config.seed,
                                    share.device, (test_iters or None) if share.index == 0 else None)
        write_text_proto(solver_g, gpu_solver, gpu_header)
        gpu_solvers.append(gpu_solver)

    record = {**identity, "initialisation": initialisation, "argv": list(config.argv),
              "train_net_source": _rel(net_src),
              "solver_source": _rel(solver_src), "device": device,
              "gpus": [s.device for s in shares] if shares else None}
    if bound is not None:
        record[HEAD_STEP_BOUND] = bound
    atomic_write_text(run_dir / "inputs.json", json.dumps(inputs, indent=1) + "\n")
    atomic_write_text(run_dir / "run.json", json.dumps(record, indent=2) + "\n")
    run = PreparedRun(kind=kind, run_dir=run_dir, solver_path=solver_path, train_net=train_path,
                      snapshot_dir=snapshot_dir, max_iter=int(solver.max_iter),
                      snapshot_every=int(solver.snapshot), display=config.display,
                      test_interval=test_interval, test_iters=test_iters, test_items=test_items,
                      weights=None if resume is not None else weights, resume=resume, device=device,
                      gpu_solvers=gpu_solvers,
                      skip_layers=config.skip_layers,
                      notes=notes)
    return run, shares


_rel = repo_relative


# ---------------------------------------------------------------------------------------------------------
# Initialisation: what the weights start from, refused where it would silently differ from the paper, and
# recorded in run.json (``initialisation``: ``weights`` path or None, a readable ``description``; for
# fine-tuning from a ranking run also that run's ``rank_initialisation``), which the evaluation reports.

#: ``--weights none`` (``WEIGHTS=none``): a deliberate start from random initialisation.
NO_WEIGHTS = "none"
#: Why VGG-16 ranking wants ImageNet weights, and how to give them.
VGG16_NEEDS_WEIGHTS = (
    "VGG-16 ranking starts from ImageNet VGG-16 weights in the paper (the original trains with --weights "
    "VGG_ILSVRC_16_layers.caffemodel); give them with WEIGHTS=/path/VGG_ILSVRC_16_layers.caffemodel "
    "(make) or --weights, or WEIGHTS=none / --weights none to train from random initialisation on purpose")


def _recorded_head_step_bound(run_dir: Path, note: Callable[[str], None]) -> dict[str, Any] | None:
    """The head-step bound measured when this fine-tuning run started (``run.json``, written by the
    trainer), or None: a resumed run is held to it, as it is measured on the start's head, before iteration
    1. A run folder of an earlier version recorded it only in ``log.txt`` (``base_lr lowered from A to B``),
    and only when it lowered the rate: read from there; ``note`` is told when a start that is bounded left
    no trace of its bound."""
    record = provenance.read_json(run_dir / "run.json") or {}
    recorded = record.get(HEAD_STEP_BOUND)
    if isinstance(recorded, dict):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return {**recorded, "bound": float(recorded.get("bound", recorded["base_lr"])),
                    "base_lr": float(recorded["base_lr"])}
    if record.get("head_init") not in head_init.BOUNDED_STARTS:
        return None
    with contextlib.suppress(OSError, UnicodeDecodeError):
        lowered = re.findall(r"base_lr lowered from \S+ to (\S+):", (run_dir / "log.txt").read_text("utf-8"))
        if lowered:
            return {"bound": float(lowered[-1]), "base_lr": float(lowered[-1])}
    note("warning: this run's start (head_init " + str(record.get("head_init")) + ") bounds the base rate, "
         "but an earlier version recorded no bound for it: the rate given now is used as it is")
    return None


def _resuming(config: RunConfig) -> bool:
    return config.resume is not None or find_resume_state(config.out / "snapshots") is not None


def _recorded_initialisation(run_dir: Path) -> dict[str, Any]:
    """The ``initialisation`` an earlier run of this folder recorded (a resumed run keeps its start)."""
    try:
        recorded = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("initialisation")
    except (OSError, ValueError, AttributeError):
        recorded = None
    return recorded or {"weights": None, "description": "unknown (resumed; run.json did not record it)"}


def rank_initialisation(config: RunConfig) -> tuple[Path | None, dict[str, Any]]:
    """(weights to load or None, the run.json ``initialisation``) of a ranking run.

    ``--weights X`` loads X; ``--weights none`` starts from random initialisation on purpose; without
    ``--weights`` a resumed run keeps what it recorded, a new Shallow run starts from random initialisation
    and a new VGG-16 run is refused (``InputError``: the paper starts from ImageNet weights).
    """
    if config.weights is not None and str(config.weights) == NO_WEIGHTS:
        return None, {"weights": None,
                      "description": "random initialisation, chosen with --weights none (the paper starts "
                                     "VGG-16 ranking from ImageNet weights)"}
    if config.weights is not None:
        path = Path(config.weights).resolve()
        return Path(config.weights), {"weights": str(path), "description": f"weights {path}"}
    if _resuming(config):
        return None, _recorded_initialisation(config.out)
    if config.net == "vgg16":
        raise InputError(VGG16_NEEDS_WEIGHTS)
    return None, {"weights": None, "description": f"random initialisation ({config.net} net, no --weights)"}


def finetune_initialisation(config: RunConfig, weights: Path | None) -> dict[str, Any]:
    """The run.json ``initialisation`` of a fine-tuning run starting from ``weights`` (None: resumed or
    ``--from-scratch``); a ranking model's own run.json adds how its ranking started."""
    if config.from_scratch:
        return {"weights": None,
                "description": "random initialisation (--from-scratch: the baseline without ranking)"}
    if weights is None:
        return _recorded_initialisation(config.out)
    path = Path(weights).resolve()
    record = run_record(path)
    if record.get("kind") != "rank":
        return {"weights": str(path), "description": f"weights {path}"}
    ranked_from = record.get("initialisation") or {"description": "unknown (its run.json did not record it)"}
    return {"weights": str(path), "rank_initialisation": ranked_from,
            "description": f"ranking model {path}, whose ranking started from {ranked_from['description']}"}


def _default_pristine() -> str:
    """The pristine folder online batches take when none is given (``make ranks``'s default)."""
    from pylayers.online_source import ONLINE_DEFAULTS  # its distortions take seconds to import

    return str(ONLINE_DEFAULTS["pristine"])


def online_spec(config: RunConfig) -> dict[str, Any] | None:
    """The ``online`` param_str value (``pylayers.online_source``) of a ranking run (None without
    ``--online``), paths made absolute (Caffe builds the net from the run folder's prototxt). ``--online``
    and ``--data`` exclude each other, one is needed, and the online flags without ``--online`` are refused
    (``InputError``); ``--types`` with ``--data`` names the types the rank set must hold
    (``check_rank_set_types``)."""
    if not config.online:
        if config.data is None:
            raise InputError("give --data (a `make ranks` folder) or --online (batches made from --pristine)")
        given = [flag for flag in ("precomputed", "offline_types")
                 if getattr(config, flag) is not None]
        if config.pristine is not None and config.pristine != _default_pristine():
            given.append("pristine")
        if given:
            flags = ", ".join(f"--{flag.replace('_', '-')}" for flag in given)
            raise InputError(f"{flags}: for --online runs (a rank set on disk has its own)")
        return None
    if config.data is not None:
        raise InputError("give --data (a rank set on disk) or --online, not both")
    source = _default_pristine() if config.pristine is None else str(config.pristine)
    spec: dict[str, Any] = {
        "pristine": source if source == _default_pristine() else os.path.abspath(source),
        "rankset": config.rankset, "seed": int(config.seed), "types": config.types,
        "precomputed": None if config.precomputed is None else os.path.abspath(config.precomputed)}
    if config.offline_types is not None:
        spec["offline"] = config.offline_types
    return spec


def check_rank_set_types(manifest: Path, rankset: str, types: str) -> None:
    """Refuse a rank set on disk that does not hold exactly the distortion ``types`` asked for (``--types``,
    ``RANK_TYPES``: as ``make ranks`` reads them; unknown names are refused there), naming both: a rank
    set's types are fixed when it is made, and training on another set than the one asked for would go
    unnoticed."""
    from data_prep import make_ranks, rank_groups

    wanted = sorted(group for group, _ in rank_groups.groups(rankset, make_ranks.parse_types(rankset, types)))
    held = sorted(read_manifest(manifest, "train").types)
    if wanted != held:
        raise InputError(f"this rank set holds the types {','.join(held)}, not the {','.join(wanted)} asked "
                         "for: make that set with `make ranks RANK_TYPES=...` into its own RANKS_DIR (the "
                         "default for RANK_TYPES), or leave RANK_TYPES out", manifest)


def prepare_rank(config: RunConfig) -> tuple[PreparedRun, list[GpuShare] | None]:
    """Resolve a ranking run (``config.command == "rank"``) into a prepared run folder; the GPU shares with
    ``--gpus``, else None. A rank set on disk (``--data``) gives levels, references and the images in
    ``inputs.json``; online batches (``--online``) take them from the pristine images' plan and say in
    ``log.txt`` what is made online, read, or left out."""
    online = online_spec(config)
    data_dir = config.data
    manifest = None if data_dir is None else data_dir / MANIFEST_NAME
    if online is not None:
        from pylayers import online_source  # its distortions take seconds to import: online runs only

        plan = online_source.plan_online(online, "--online")
        levels, splits = plan.max_level, plan.reference_counts()
        if not splits.get("train"):
            raise InputError("no pristine image in the train split", online["pristine"])
    else:
        assert data_dir is not None and manifest is not None  # online_spec requires --data without --online
        plan = None
        levels, splits = manifest_levels(manifest)
        if not splits.get("train"):
            raise InputError("manifest has no rows with split=train", manifest)
        if config.types is not None:
            check_rank_set_types(manifest, config.rankset, config.types)
    style = registry.RANK_STYLES[config.rankset]
    types_per_batch = config.types_per_batch or style.types_per_batch
    images_per_group = config.images_per_group or style.images_per_group
    if types_per_batch < 1 or images_per_group < 1:
        raise InputError("--types-per-batch and --images-per-group must be >= 1")
    net_src = config.train_prototxt or config.prototxts / config.net / "rank_train.prototxt"
    solver_src = config.solver_prototxt or style.solver(config.prototxts)

    def configure(net_param: Any, share: GpuShare | None, start: int, test_start: int) -> Any:
        net_param = configure_rank_net(net_param, net_src, data_dir, types_per_batch, images_per_group,
                                       levels, config.seed, config.workers, config.direction, share, start,
                                       test_start, online)
        for layer in python_layers(net_param, "rank_data"):
            params = get_param_str(layer, net_src)
            params["aligned_crops"] = bool(config.aligned_crops)
            params["mixed_references"] = bool(config.mixed_references)
            set_param_str(layer, params)
        return net_param

    # Without test references there is no test net (its data layer would have nothing to read); with fewer
    # test references than images per group (LIVE style: 2) the test batches cannot be formed either.
    test_refs = splits.get("test", 0)
    if test_refs < images_per_group:
        if test_refs:
            print(f"note: {test_refs} test reference(s) < {images_per_group} images per group: no test net",
                  file=sys.stderr)
        test_refs = 0
    test_default = DEFAULT_RANK_TEST_ITERS if test_refs else None
    if not test_refs:
        config = dataclasses.replace(config, test_iters=0)
    # Everything that decides what the weights learn: a rerun with other values is refused, not resumed.
    grid: dict[str, str] = {}
    if online is not None:
        from data_prep import distortions  # imported by the online source already

        if any(t in distortions.GRID_TYPES for t in distortions.RANKSETS[config.rankset]):
            # Online batches of a grid rank set are its chains (rank_groups) since this key was added; an
            # earlier version ranked the grid's cells as one order: such a folder is refused, not resumed.
            grid = {"groups": "chains"}
    identity = {"kind": "rank", "rankset": config.rankset, "net": config.net, **grid,
                "data": {"online": online} if data_dir is None else str(data_dir.resolve()),
                "direction": config.direction, "types_per_batch": types_per_batch,
                "images_per_group": images_per_group, "aligned_crops": bool(config.aligned_crops),
                "mixed_references": bool(config.mixed_references), "seed": config.seed}
    check_run_identity(config.out, identity)  # another run's folder is the first thing to say
    weights, initialisation = rank_initialisation(config)
    if config.weights is not None:  # a rerun that resumes may leave it out; one that names another differs
        identity["weights"] = initialisation["weights"] or NO_WEIGHTS
    header = (f"rank training: rank set {config.rankset}, net {config.net}, {types_per_batch} types x "
              f"{images_per_group} image(s) x {levels + 1} levels per batch, direction {config.direction}")
    if plan is not None:
        run, shares = _prepare(config, "rank", identity, net_src, solver_src, configure, test_default, None,
                               weights, header + " (online)", run_inputs({}, plan.images()), initialisation)
        # log.txt says what is made online, read, or left out
        return dataclasses.replace(run, notes=[*plan.notes(), *run.notes]), shares
    assert data_dir is not None and manifest is not None
    images = manifest_images(data_dir)
    return _prepare(config, "rank", identity, net_src, solver_src, configure, test_default, None, weights,
                    header, run_inputs({MANIFEST_NAME: manifest}, images), initialisation)


def prepare_finetune(config: RunConfig) -> tuple[PreparedRun, list[GpuShare] | None]:
    """Resolve a fine-tuning run (``config.command == "finetune"``) into a prepared run folder; the GPU
    shares with ``--gpus``, else None."""
    lists_dir: Path = config.lists
    if count_list_lines(lists_dir / "train.txt") == 0:
        raise InputError("fine-tuning list missing or empty (run `make ft_lists`?)", lists_dir / "train.txt")
    if config.batch is not None and config.batch < 1:
        raise InputError(f"--batch must be >= 1, got {config.batch}")
    entry = registry.dataset(config.dataset)
    style = entry.ft_style
    rankset = config.rankset or entry.rank_style.name
    net_src = config.train_prototxt or style.net(config.net, "train", config.prototxts)
    solver_src = config.solver_prototxt or style.solver(config.prototxts)
    if config.from_scratch:
        weights = None
    elif config.rank_model is not None:
        weights = config.rank_model
    elif (config.out / "snapshots").is_dir() and find_resume_state(config.out / "snapshots"):
        weights = None  # resuming: the solver state carries the weights
    else:
        weights = default_rank_model(config.out.resolve().parent, rankset, config.net)
    n_test = count_list_lines(lists_dir / "test.txt")
    net_param = read_net_param(net_src)
    test_batch = test_batch_size(net_param, net_src) or 30
    test_default = math.ceil(n_test / test_batch) if n_test else None
    if not n_test:
        config = dataclasses.replace(config, test_iters=0)

    default_init, default_scale = FT_HEAD_DEFAULTS[config.net]
    head_start = config.head_init or default_init
    loss_scale = config.loss_scale or default_scale
    loss_weight = 1.0
    if loss_scale == "std":
        _, spread = head_init.label_spread(head_init.list_labels(lists_dir / "train.txt"))
        loss_weight = 1.0 / spread**2
    head = head_init.find_head(net_param, net_src)

    def configure(net_param: Any, share: GpuShare | None, start: int, test_start: int) -> Any:
        net_param = configure_ft_net(net_param, net_src, lists_dir, config.batch, config.seed, config.workers,
                                     share, start, test_start)
        for layer in net_param.layer:
            if layer.name == head.loss_layer:
                layer.loss_weight[:] = [loss_weight]
        return net_param

    if (config.gpus and head_start in head_init.BOUNDED_STARTS
            and not (_resuming(config) and _recorded_head_step_bound(config.out, lambda _: None))):
        # The start's rate bound (head_init.stable_lr) is measured and applied by one process before the
        # first iteration; each GPU process reads its own solver, written before that: unbounded there. A
        # resumed run has its bound recorded, and every GPU solver is written with it.
        unbounded = " or ".join(s for s in head_init.HEAD_INITS if s not in head_init.BOUNDED_STARTS)
        raise InputError(f"--head-init {head_start} lowers the base rate before the first iteration, which "
                         "multi-GPU training (--gpus) does not do: fine-tune on one GPU (--gpu N), or give "
                         f"--head-init {unbounded}")
    train_batch = config.batch or _train_batch_size(net_param, net_src)
    identity: dict[str, Any] = {"kind": "finetune", "dataset": config.dataset, "net": config.net,
                                "lists": str(lists_dir.resolve()), "from_scratch": bool(config.from_scratch),
                                "head_init": head_start, "loss_scale": loss_scale, "batch": train_batch,
                                "seed": config.seed, "loss_weight": loss_weight}
    old_record = provenance.read_json(config.out / "run.json") or {}
    if config.rank_model is not None:  # a rerun that resumes may leave it out; one that names another differs
        identity["rank_model"] = str(Path(config.rank_model).resolve())
    header = (f"fine-tuning: dataset {config.dataset} ({style.name} style), net {config.net}, "
              f"init {'scratch' if config.from_scratch else weights}")
    lists = {name: lists_dir / name for name in ("train.txt", "test.txt") if (lists_dir / name).is_file()}
    images = [Path(path) for listed in lists.values() for path, _ in read_list(listed, check_files=False)]
    initialisation = finetune_initialisation(config, weights)
    run, shares = _prepare(config, "finetune", identity, net_src, solver_src, configure, test_default,
                           n_test or None, weights, header, run_inputs(lists, sorted(set(images))),
                           initialisation)
    crop = int(get_param_str(next(python_layers(net_param, "ft_data")), net_src).get("crop", 224))
    notes = run.notes
    if run.resume is not None and "loss_weight" not in old_record and loss_weight != 1.0:
        # An earlier version reported the test pass's loss without the loss weight: loss.csv goes on
        # with the weighted one from here.
        notes = [*notes, f"note: test losses in loss.csv before iteration {snapshot_iteration(run.resume)} "
                         f"were reported without the loss weight {loss_weight:.4g} (an earlier version); "
                         "from here with it, as the training loss"]
    run = dataclasses.replace(run, head_init=head_start, train_list=lists_dir / "train.txt", crop=crop,
                              seed=config.seed, loss_weight=loss_weight, notes=notes)
    return run, shares


def _train_batch_size(net_param: Any, source: Path) -> int:
    """The batch size of the fine-tuning net's training data layer as the prototxt gives it (the layer's
    default when its param_str leaves it out)."""
    from pylayers.ft_data import FT_DEFAULTS

    for layer in python_layers(net_param, "ft_data"):
        if layer_phase(layer) != "test":
            return int(get_param_str(layer, source).get("batch_size", FT_DEFAULTS["batch_size"]))
    return int(FT_DEFAULTS["batch_size"])

