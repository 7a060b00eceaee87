"""The training loop: build the solver in this process, load or restore weights, step, test, snapshot.

Caffe's own testing is off in the written solver (``rankiqa.netconfig``); the trainer runs the test net every
``test_interval`` iterations so that SROCC/PLCC are pooled over the whole test list. Ctrl-C finishes the
current iteration, writes a snapshot and raises ``KeyboardInterrupt``; a diverged loss raises
``TrainingError``. Several GPUs: one process per GPU (``rankiqa.devices``); process 0 logs, tests and
snapshots.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rankiqa import blas, devices, head_init
from rankiqa.caffe_io import import_caffe
from rankiqa.devices import GpuShare, set_device
from rankiqa.errors import InputError, TrainingError, exit_status
from rankiqa.fsutil import StorageError, atomic_write_text, require_free_space
from rankiqa.netconfig import (
    layer_phase,
    loader_workers,
    python_layers,
    read_net_param,
    read_solver_param,
    write_text_proto,
)
from rankiqa.runlog import RunLog
from rankiqa.snapshots import (
    check_solverstate,
    discard_unfinished_snapshots,
    find_resume_state,
    load_weights,
    publish_snapshot,
    restorable_state,
    snapshot_bytes,
    snapshot_iteration,
)

#: The key of ``run.json`` that holds the head-step bound measured at a fine-tuning run's start
#: (``{"bound": the largest stable base rate, "base_lr": the rate trained at, "requested_base_lr": asked}``),
#: which a resumed run is held to.
HEAD_STEP_BOUND = "head_step_bound"


@dataclasses.dataclass
class PreparedRun:
    """Everything a training process needs, picklable for the multi-GPU worker processes."""

    kind: str
    run_dir: Path
    solver_path: Path
    train_net: Path
    snapshot_dir: Path
    max_iter: int
    snapshot_every: int
    display: int
    test_interval: int
    test_iters: int
    test_items: int | None  # test-list length (fine-tuning): pooled metrics over exactly these items
    weights: Path | None
    resume: Path | None
    device: int = -1
    gpu_solvers: list[Path] = dataclasses.field(default_factory=list)  # one per GPU process (--gpus)
    skip_layers: tuple[str, ...] = ()  # layers of the weights file not to copy
    head_init: str = "filler"  # fine-tuning: how the new head starts (rankiqa.head_init.HEAD_INITS)
    train_list: Path | None = None  # fine-tuning: the training list (labels for the head's start)
    crop: int = 0  # fine-tuning: crop size of the data layer
    seed: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)  # for log.txt, found while preparing
    # fine-tuning: the Euclidean loss's loss_weight in the train net (1/std^2 with LOSS_SCALE=std), so that
    # the test pass reports its loss on the training loss's scale
    loss_weight: float = 1.0



class StopRequest:
    """First Ctrl-C (or SIGTERM): stop after the current iteration; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Install the handlers in the main thread (a no-op elsewhere), restoring the old ones afterwards."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum: int, frame: Any) -> None:
            if self.requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.requested = True

        old_int = signal.signal(signal.SIGINT, handler)
        old_term = signal.signal(signal.SIGTERM, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)


def learning_rate(solver_param: Any, iteration: int) -> float:
    """The learning rate Caffe's SGD uses at ``iteration`` (policies fixed, step, multistep, exp, inv, poly,
    sigmoid), for the log: pycaffe exposes it only on SGD solver objects."""
    p = solver_param
    policy = p.lr_policy or "fixed"
    base = p.base_lr
    if policy == "fixed":
        return base
    if policy == "step":
        return base * p.gamma ** (iteration // max(p.stepsize, 1))
    if policy == "multistep":
        return base * p.gamma ** sum(1 for value in p.stepvalue if iteration >= value)
    if policy == "exp":
        return base * p.gamma ** iteration
    if policy == "inv":
        return base * (1 + p.gamma * iteration) ** (-p.power)
    if policy == "poly":
        return base * (1 - iteration / max(p.max_iter, 1)) ** p.power
    if policy == "sigmoid":
        return base / (1 + math.exp(-p.gamma * (iteration - p.stepsize)))
    return float("nan")


def net_loss(net: Any) -> float:
    """The weighted sum of a net's loss outputs (what Caffe reports as the iteration loss)."""
    weights = net.blob_loss_weights
    total = 0.0
    for name in net.outputs:
        weight = float(weights.get(name, 0.0))
        if weight:
            total += weight * float(net.blobs[name].data.sum())
    return total


def _correlation_layer(net_param: Any) -> tuple[str, str, list[str]] | None:
    """(prediction blob, score blob, top names) of the test net's correlation layer, if any."""
    for layer in python_layers(net_param, "correlation"):
        if layer_phase(layer) in ("test", "both") and len(layer.bottom) >= 2:
            return layer.bottom[0], layer.bottom[1], list(layer.top)
    return None


def run_test(solver: Any, run: PreparedRun, corr: tuple[str, str, list[str]] | None,
             note: Callable[[str], None] | None = None) -> dict[str, float]:
    """One pass of the test net: mean of each output over ``test_iters`` batches; with a correlation layer,
    SROCC and PLCC over all the pass's predictions (the first ``test_items`` of them), and ``note`` told
    when they are 0 by definition (constant predictions: a collapsed net)."""
    import numpy as np

    from rankiqa import metrics

    net = solver.test_nets[0]
    net.share_with(solver.net)
    sums: dict[str, float] = {}
    predictions: list[Any] = []
    scores: list[Any] = []
    for _ in range(run.test_iters):
        outputs = net.forward()
        for name, value in outputs.items():
            sums[name] = sums.get(name, 0.0) + float(np.mean(value))
        if corr:
            predictions.append(net.blobs[corr[0]].data.ravel().copy())
            scores.append(net.blobs[corr[1]].data.ravel().copy())
    results = {name: total / run.test_iters for name, total in sums.items()}
    if corr and predictions:
        pred = np.concatenate(predictions)
        score = np.concatenate(scores)
        if run.test_items:
            pred, score = pred[: run.test_items], score[: run.test_items]
        if np.isfinite(pred).all() and np.isfinite(score).all():
            # rankiqa.metrics: 0.0 where undefined (a constant output, e.g. a collapsed net), as in eval.
            srocc, plcc = metrics.srocc(pred, score), metrics.plcc(pred, score)
            reason = metrics.degenerate_reason(pred, score)
            if reason and note:
                note(f"warning: test pass: {reason}")
        else:  # a diverged net: no correlation to report
            srocc = plcc = float("nan")
        names = corr[2] if len(corr[2]) >= 2 else ["srocc", "plcc"]
        results[names[0]] = srocc
        results[names[1]] = plcc
        # The fine-tuning nets keep EuclideanLoss in the TRAIN phase: report the same loss on the test pass,
        # with the train net's loss_weight, so that loss.csv holds one scale for both.
        results.setdefault("loss", run.loss_weight * float(np.sum((pred - score) ** 2) / (2 * len(pred))))
    return results


def train_process(run: PreparedRun, share: GpuShare | None = None, nccl_uid: bytes | None = None) -> int:
    """Build the solver in this process and train to ``max_iter``; returns the final iteration.

    With ``share`` (multi-GPU) this is one of ``share.shard_count`` GPU processes; process 0 alone logs, tests
    and snapshots (Caffe's root solver). Raises ``KeyboardInterrupt`` after snapshotting when stopped,
    ``TrainingError`` when the loss diverges.
    """
    caffe = import_caffe()
    device = run.device if share is None else share.device
    if share is not None:
        caffe.set_device(device)
        caffe.set_mode_gpu()
        caffe.set_solver_count(share.shard_count)
        caffe.set_solver_rank(share.index)
        caffe.set_multiprocess(True)
    else:
        set_device(caffe, device)
    root = share is None or share.index == 0
    solver_path = run.solver_path if share is None else run.gpu_solvers[share.index]
    net_param = read_net_param(run.train_net)
    corr = _correlation_layer(net_param)
    log = RunLog(run.run_dir, echo=True) if root else None
    for text in run.notes if log else ():
        log.note(text)
    blas_before = blas.get_threads() if device < 0 else None
    if blas_before is not None:
        # A core for each prefetch worker, the rest for Caffe's OpenBLAS (rankiqa/blas.py, BENCHMARKS.md).
        threads = blas.training_threads(loader_workers(net_param, run.train_net))
        blas.set_threads(threads)
        if log:
            log.note(f"OpenBLAS threads: {threads} (OPENBLAS_NUM_THREADS sets another count)", show=False)
    try:
        if log:
            removed = discard_unfinished_snapshots(run.snapshot_dir)
            if removed:
                log.note(f"removed unfinished snapshot file(s) of an interrupted run: {', '.join(removed)}")
        solver = caffe.get_solver(str(solver_path))
        if run.resume is not None:
            _, model = check_solverstate(run.resume)
            with _scratch_dir(run.run_dir) as scratch:
                solver.restore(str(restorable_state(run.resume, model, scratch)))
            if log:
                log.note(f"resumed from {run.resume} at iteration {solver.iter}")
        elif run.weights is not None:
            copied = load_weights(solver.net, run.weights, run.skip_layers)
            if log:
                log.note(f"initialised {len(copied)} layer(s) from {run.weights}: {' '.join(copied)}")
        if run.resume is None and run.kind == "finetune" and root and run.train_list is not None:
            head = head_init.find_head(net_param, run.train_net)
            note, energy = head_init.init_head(solver.net, head, run.head_init, run.train_list, run.crop,
                                               run.seed, run.weights)
            if log:
                log.note(note)
            if energy is not None and share is None:
                solver = _bound_head_step(caffe, solver, solver_path, net_param, head, energy, log)
        if share is not None:
            nccl = caffe.NCCL(solver, nccl_uid)
            nccl.bcast()  # process 0's weights (initialised or restored) to every GPU
            solver.add_callback(nccl)
            if solver.param.layer_wise_reduce:
                solver.net.after_backward(nccl)
        return _loop(caffe, solver, run, log, corr)
    except StorageError as err:
        if log is None:
            raise
        raise _stopped_for_space(err, run, log) from None
    finally:
        if log:
            log.close()
        if blas_before is not None:
            blas.set_threads(blas_before)


def _stopped_for_space(err: StorageError, run: PreparedRun, log: RunLog) -> StorageError:
    """``err`` with where the run stopped and its last good snapshot (the one a rerun resumes from), also
    noted in the log when the log can still be written."""
    last = find_resume_state(run.snapshot_dir)
    where = (f"training stopped; the last good snapshot is {last} (iteration {snapshot_iteration(last)}), "
             "where a rerun resumes" if last else "training stopped before its first snapshot")
    stopped = err.with_note(where)
    with contextlib.suppress(StorageError):
        log.note(f"error: {stopped}", show=False)  # cli_main prints it
    return stopped


def _snapshot_taken(run: PreparedRun, iteration: int, log: RunLog, show: bool = False) -> None:
    """Publish the snapshot Caffe just wrote and say in the log that it is the last good one."""
    state = publish_snapshot(run.snapshot_dir, run.run_dir.name, iteration)
    log.note(f"snapshot at iteration {iteration}: {state} (last good snapshot)", show=show)


def _bound_head_step(caffe: Any, solver: Any, solver_path: Path, net_param: Any, head: Any, energy: float,
                     log: RunLog | None) -> Any:
    """Lower ``base_lr`` to ``head_init.stable_lr`` when it is above it, before the first iteration.

    The bound is recorded in the run's ``run.json`` (``HEAD_STEP_BOUND``) whether it lowered the rate or
    not: it is measured on the start's head only, and a resumed run, which writes its solver anew from the
    command's rate, is held to it from there. A lowered rate is written into ``solver.prototxt`` and the
    solver is built again from it, with the weights as they are now (transferred layers, fitted head).
    """
    param = read_solver_param(solver_path)
    bound = float(f"{head_init.stable_lr(net_param, head, energy):.3g}")
    asked = param.base_lr
    run_json = solver_path.parent / "run.json"
    record = json.loads(run_json.read_text(encoding="utf-8"))
    record[HEAD_STEP_BOUND] = {"bound": bound, "base_lr": min(asked, bound), "requested_base_lr": asked}
    atomic_write_text(run_json, json.dumps(record, indent=2) + "\n")
    if asked <= bound:
        return solver
    param.base_lr = bound
    write_text_proto(param, solver_path, f"written by rankiqa/trainer.py; base_lr lowered from {asked:g} to "
                                         f"{param.base_lr:g} by the fine-tuning head's step bound "
                                         "(rankiqa/head_init.py, HEAD_STEP)")
    fresh = caffe.get_solver(str(solver_path))
    for name, blobs in solver.net.params.items():
        for index, blob in enumerate(blobs):
            fresh.net.params[name][index].data[...] = blob.data
    if log:
        log.note(f"base_lr lowered from {asked:g} to {param.base_lr:g}: lr x {head.layer} lr_mult x loss "
                 f"weight x E||f||^2 must stay <= {head_init.HEAD_STEP:g} for a stable head")
    return fresh


@contextlib.contextmanager
def _scratch_dir(run_dir: Path) -> Iterator[Path]:
    scratch = run_dir / ".scratch"
    scratch.mkdir(exist_ok=True)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _loop(caffe: Any, solver: Any, run: PreparedRun, log: RunLog | None, corr: Any) -> int:
    from tqdm import tqdm

    start = solver.iter
    has_test = bool(run.test_iters and run.test_interval and len(solver.test_nets))
    snapshot_every = run.snapshot_every
    solver_param = read_solver_param(run.solver_path)
    last_snapshot = start if run.resume is not None else -1
    if log:
        log.event("start", start, show=False, max_iter=run.max_iter)
        if has_test and start == 0:
            log.event("test", 0, show=True, **run_test(solver, run, corr, log.note))
        log.flush_outputs(force_plot=True)
    if start >= run.max_iter:
        if log:
            log.note(f"already at iteration {start} of {run.max_iter}: nothing to train")
        return start
    snapshot_size = 0
    if log is not None:
        # Caffe aborts the process when a snapshot does not fit: check before each one, and now, so that a
        # run that could never save its work stops before it starts.
        snapshot_size = snapshot_bytes(solver.net, solver_param, read_net_param(run.train_net))
        require_free_space(run.snapshot_dir, snapshot_size, "a snapshot of this net")
    window: list[float] = []
    stop = StopRequest()
    interrupted = False
    diverged = ""
    bar = tqdm(total=run.max_iter, initial=start, disable=None if log else True, dynamic_ncols=True,
               desc=run.run_dir.name, unit="it", file=sys.stderr)
    try:
        with stop.installed():
            while solver.iter < run.max_iter:
                if stop.requested:
                    interrupted = True
                    break
                # Caffe's root solver snapshots inside step() when the new iteration is a multiple.
                due = bool(snapshot_every) and (solver.iter + 1) % snapshot_every == 0
                if due and log is not None:
                    require_free_space(run.snapshot_dir, snapshot_size,
                                       f"the snapshot of iteration {solver.iter + 1}")
                solver.step(1)
                iteration = solver.iter
                if due:
                    last_snapshot = iteration
                if log is None:
                    continue
                loss = net_loss(solver.net)
                if not math.isfinite(loss):
                    # Diverged weights only get worse (and a snapshot of them would be resumed from): stop.
                    diverged = f"the loss is {loss} at iteration {iteration}: training diverged; lower --lr"
                    break
                if due:
                    _snapshot_taken(run, iteration, log)
                window.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                if iteration % run.display == 0 or iteration == run.max_iter:
                    lr = learning_rate(solver_param, iteration - 1)
                    # Without a terminal there is no progress bar: the display lines stand in for it, so
                    # that a log of a long run shows it advancing.
                    log.event("train", iteration, show=bool(bar.disable), loss=sum(window) / len(window),
                              lr=lr)
                    window = []
                    log.flush_outputs()
                if has_test and iteration % run.test_interval == 0:
                    log.event("test", iteration, show=True, **run_test(solver, run, corr, log.note))
                    log.flush_outputs(force_plot=True)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if diverged:
        if log is not None:
            discard_unfinished_snapshots(run.snapshot_dir)  # a snapshot of the diverged weights, if any
            log.note(f"error: {diverged}")
            log.flush_outputs(force_plot=True)
        raise TrainingError(diverged, run.solver_path)
    if log is not None:
        if last_snapshot != solver.iter:
            require_free_space(run.snapshot_dir, snapshot_size, f"the snapshot of iteration {solver.iter}")
            solver.snapshot()
            _snapshot_taken(run, solver.iter, log, show=interrupted)
        if window:
            log.event("train", solver.iter, loss=sum(window) / len(window),
                      lr=learning_rate(solver_param, solver.iter - 1))
        log.flush_outputs(force_plot=True)
        if interrupted:
            log.note(f"stopped at iteration {solver.iter}; rerun the same command to continue")
    if interrupted:
        raise KeyboardInterrupt
    return solver.iter


def _gpu_worker(run: PreparedRun, share: GpuShare, nccl_uid: bytes) -> None:
    """Entry point of one multi-GPU process (spawned)."""
    try:
        train_process(run, share, nccl_uid)
    except KeyboardInterrupt:
        sys.exit(130)
    except (InputError, TrainingError) as err:  # e.g. no room for a snapshot: one line, as cli_main prints it
        print(f"error: {err}", file=sys.stderr)
        sys.exit(exit_status(err))



def train_multi_gpu(run: PreparedRun, shares: list[GpuShare],
                    worker: Callable[[PreparedRun, GpuShare, bytes], None] = _gpu_worker) -> None:
    """Train ``run`` with one process per GPU of ``shares`` (``rankiqa.devices.run_gpu_processes``): NCCL
    all-reduce of the gradients after each backward, Caffe's multi-GPU path. ``worker`` is each process's
    entry point (:func:`_gpu_worker`; a module-level stand-in in tests)."""
    devices.run_gpu_processes(worker, run, shares, run.run_dir / "log.txt")
