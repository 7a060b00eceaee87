"""``make ranks DASK=<address>|local``: the rank-set generator's tasks run on a Dask cluster.

    python -m data_prep.dask_ranks --dask tcp://<scheduler>:8786|local [--dask-workers N] [--dask-wait S]
        <the options of python -m data_prep.make_ranks>

``data_prep.make_ranks.generate`` does everything it does for a local run (settings record, lock, pristine
images, manifest and lists); only its distortion tasks, one per (pristine image, type, level), go to the
cluster's workers, through ``dask.distributed``. ``--dask local`` starts a ``LocalCluster`` of
``--dask-workers`` single-threaded worker processes on this machine (default ``--jobs``).

- The same bytes as a local run for the same seed, whatever the number of workers: each image's random
  draws are keyed by (seed, reference, type, level) (``make_ranks.image_seed``), and each worker runs the
  local generator's own task function. A worker whose generator version or library versions
  (``make_ranks.libraries``: numpy, OpenCV, Pillow, SciPy, bm3d) differ from the client's is refused (and
  the client's from those the folder's record names, as for a local run).
- The output folder must be at the same path on the client and on every worker (a shared file system).
  Before any task the client writes a token of random content into ``<out>/.dask_ranks.token``; the workers
  present are asked to read it before anything is submitted, and every worker process (one that joins
  later too) reads it before its first task (and compares its libraries). A worker that cannot read it,
  or reads another content, stops the run with an error naming the worker and the folder: its images would
  be written where the client never sees them.
- Resumable and safe: each worker writes each image under a temporary name and renames it (a killed worker
  leaves only a temporary file, which the client removes; Dask gives its task to another worker); an image
  that exists is never redone; after an interrupted run (client or workers killed) the same command
  finishes the rest. The manifest and the lists are written once, at the end, by the client, from the files
  on disk: every row's file must be there, and every image written by this run must have there the size
  its worker wrote.
- Progress as the local run (a tqdm bar on stderr, one step per finished image). The first failed task
  cancels the others (finished images are kept) and stops the run naming the image, the type and the level.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import secrets
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from data_prep import make_ranks
from rankiqa.errors import InputError, cli_main
from rankiqa.fsutil import atomic_write_text

if TYPE_CHECKING:  # imported where it is used: Dask is needed only with --dask
    import distributed

LOCAL = "local"
TOKEN_FILE = ".dask_ranks.token"
#: Tasks submitted at a time and most tasks in flight: the scheduler holds a bounded number of tasks (a
#: Waterloo-sized set has 360,000), and a killed client leaves at most this many behind.
SUBMIT_CHUNK = 1000
MAX_IN_FLIGHT = 20_000

_checked_tokens: set[str] = set()  # per worker process: the tokens (runs) whose file it has read


class TaskFailed(RuntimeError):
    """A distortion task failed on a worker for a reason other than bad input: names the image, the type
    and the level; the worker's exception (with its traceback) is the ``__cause__``."""


def read_token(path: str, token: str) -> str | None:
    """``None`` when the file ``path`` holds ``token``, else why not (one line)."""
    try:
        seen = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as err:
        return f"cannot read {path} ({getattr(err, 'strerror', None) or err})"
    if seen != token:
        return f"{path} holds another run's token"
    return None


def worker_problem(token_path: str, token: str, client_libraries: dict[str, str]) -> str | None:
    """Worker side: ``None`` when this process sees the client's token file (the output folder) and has the
    client's ``make_ranks.libraries``, else what is wrong (one line)."""
    problem = read_token(token_path, token)
    if problem is not None:
        return (f"cannot see the output folder ({problem}): it must be on a file system the workers share, "
                "at the same path")
    mine = make_ranks.libraries()
    differ = [f"{name} {mine.get(name)} here, {version} on the client"
              for name, version in client_libraries.items() if mine.get(name) != version]
    if differ:
        return (f"has other libraries than the client, which write other bytes ({'; '.join(differ)}): run "
                "the workers in the client's Python environment")
    return None


def distort_image(task: tuple[str, str, int, str, str, int], token_path: str, token: str,
                  client_libraries: dict[str, str]) -> int:
    """Worker side: write one distorted image (``make_ranks._distort_one``); return its size in bytes.

    Before its first task of a run, each worker process checks itself (:func:`worker_problem`) and raises
    ``InputError`` naming the output folder when it cannot serve the run.
    """
    if token not in _checked_tokens:  # the first task of this run in this process
        problem = worker_problem(token_path, token, client_libraries)
        if problem is not None:
            raise InputError(f"this Dask worker {problem}", Path(token_path).parent)
        make_ranks._worker_init()
        # A long-lived worker may have cached a pristine image of the same path from an earlier run.
        make_ranks._cached_reference = None
        _checked_tokens.add(token)
    make_ranks._distort_one(task)
    out, _, _, name, dtype, level = task
    return (Path(out) / make_ranks.relative_path(name, dtype, level)).stat().st_size


@contextlib.contextmanager
def connect(address: str, workers: int, processes: bool = True, timeout_s: float = 30.0) -> Iterator:
    """A ``distributed.Client`` of the scheduler at ``address``, or of a new ``LocalCluster`` for ``"local"``.

    The local cluster has ``workers`` workers of one thread each (in processes, or threads of this process
    with ``processes=False``; 0: a scheduler alone, for workers started elsewhere) and no dashboard; it is
    shut down on exit. A scheduler that does not answer within ``timeout_s`` seconds raises ``InputError``
    naming the address.
    """
    from distributed import Client, LocalCluster

    if address == LOCAL:
        # The scheduler's HTTP server (health checks) starts without a dashboard too: on a free port, not
        # 8787, which another cluster on the machine may hold.
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                          dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"}) as cluster, \
                Client(cluster) as client:
            yield client
        return
    try:
        client = Client(address, timeout=f"{timeout_s}s")
    except (OSError, TimeoutError, ValueError) as err:
        raise InputError(f"cannot reach the Dask scheduler at {address} ({err})") from None
    with client:
        yield client


def runner(client: distributed.Client, wait_s: float = 600.0) -> make_ranks.TaskRunner:
    """A ``make_ranks.generate`` task runner on ``client``'s cluster (see :func:`run_tasks`)."""

    def run(tasks: list[tuple], jobs: int, progress: bool, rankset: str) -> int:
        return run_tasks(client, tasks, progress, rankset, wait_s)

    return run


def run_tasks(client: distributed.Client, tasks: list[tuple], progress: bool, rankset: str,
              wait_s: float = 600.0) -> int:
    """Run ``make_ranks``' distortion tasks on ``client``'s workers; return the number of images written.

    Waits up to ``wait_s`` seconds for a first worker; refuses workers that do not see the output folder
    (``InputError``); checks that every image written is on disk with the size its worker wrote. A failed
    task raises ``InputError`` (bad input) or :class:`TaskFailed`, naming the image, type and level.
    """
    if not tasks:
        return 0
    out = Path(tasks[0][0]).resolve()  # the workers' working folders are not the client's
    tasks = [(str(out), *task[1:]) for task in tasks]
    token_path = out / TOKEN_FILE
    token = secrets.token_hex(16)
    atomic_write_text(token_path, token + "\n")
    try:
        _check_workers(client, out, str(token_path), token, wait_s)
        sizes = _collect(client, tasks, str(token_path), token, progress, rankset)
    finally:
        token_path.unlink(missing_ok=True)
    make_ranks._remove_stale_temporaries(out, rankset)  # what workers killed during a write left behind
    unseen = [_describe(task) for task, size in sizes.items() if _size(task) != size]
    if unseen:
        raise InputError(f"{len(unseen)} image(s) written by the workers are not here as they wrote them, "
                         f"e.g. {unseen[0]}: the folder must be on a file system the workers share", out)
    return len(tasks)


def _check_workers(client: distributed.Client, out: Path, token_path: str, token: str, wait_s: float) -> None:
    try:
        client.wait_for_workers(1, timeout=wait_s)
    except TimeoutError:
        raise InputError(f"no Dask worker joined the scheduler {client.scheduler.address} within "
                         f"{wait_s:g} s") from None
    try:
        answers = client.run(worker_problem, token_path, token, make_ranks.libraries())
    except Exception as err:  # a worker that cannot unpickle the check cannot import this project
        raise InputError(f"the Dask workers cannot run this project's code ({type(err).__name__}: {err}): "
                         "start them with this project's Python environment") from None
    bad = {worker: problem for worker, problem in sorted(answers.items()) if problem is not None}
    if bad:
        listed = "; ".join(f"{worker} {problem}" for worker, problem in bad.items())
        raise InputError(f"{len(bad)} of {len(answers)} Dask worker(s) cannot serve this run: {listed}", out)


def _collect(client: distributed.Client, tasks: list[tuple], token_path: str, token: str, progress: bool,
             rankset: str) -> dict[tuple, int]:
    """Submit the tasks in chunks (at most ``MAX_IN_FLIGHT`` at a time), advance the bar as they finish."""
    from distributed import as_completed

    waiting = iter(tasks)
    versions = make_ranks.libraries()
    owner: dict = {}
    finished = as_completed()
    sizes: dict[tuple, int] = {}

    def submit() -> None:
        while len(owner) < MAX_IN_FLIGHT:
            chunk = list(itertools.islice(waiting, SUBMIT_CHUNK))
            if not chunk:
                return
            futures = client.map(distort_image, chunk, token_path=token_path, token=token,
                                 client_libraries=versions, pure=False)
            for future, task in zip(futures, chunk, strict=True):
                owner[future] = task
                finished.add(future)

    with make_ranks.progress_bar(len(tasks), rankset, progress) as bar:
        try:
            submit()
            for future in finished:
                if future.status == "lost":
                    # Its worker died holding the result after the task ended (the image is written): the
                    # scheduler computes it again; wait for that instead of reading an error there is not.
                    finished.add(future)
                    continue
                task = owner.pop(future)
                if future.status != "finished":
                    raise _failure(task, future)
                sizes[task] = future.result()
                future.release()
                bar.update(1)
                submit()
        except BaseException:
            client.cancel(list(owner))  # running ones finish their image; the others never start
            raise
    return sizes


def _failure(task: tuple, future) -> Exception:
    """The error to raise for a failed task: what the worker raised, naming the image, type and level."""
    what = _describe(task)
    if future.status == "cancelled":
        return TaskFailed(f"{what}: the task was cancelled by the scheduler")
    err = future.exception()
    if err is None:  # not an error after all (e.g. computed again meanwhile): say what it was
        return TaskFailed(f"{what}: the task ended as {future.status!r}, without an error")
    if isinstance(err, InputError):
        return InputError(f"{what}: {err}")
    if type(err).__name__ == "KilledWorker":
        failure = TaskFailed(f"{what}: the worker running it died each time it was tried (out of memory? "
                             "see the worker's log)")
    else:
        failure = TaskFailed(f"{what}: {type(err).__name__}: {err}")
    failure.__cause__ = err.with_traceback(future.traceback())
    return failure


def _describe(task: tuple) -> str:
    out, _, _, name, dtype, level = task
    path = Path(out) / make_ranks.relative_path(name, dtype, level)
    return f"image {name!r}, {dtype} level {level} ({path})"


def _size(task: tuple) -> int | None:
    out, _, _, name, dtype, level = task
    try:
        return (Path(out) / make_ranks.relative_path(name, dtype, level)).stat().st_size
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    """``make_ranks``' options plus ``--dask``, ``--dask-workers`` and ``--dask-wait``."""
    parser = make_ranks.build_parser()
    parser.prog = "python -m data_prep.dask_ranks"
    parser.description = __doc__.split("\n")[0]
    parser.add_argument("--dask", required=True,
                        help="the Dask scheduler's address (tcp://host:8786), or 'local' for a local cluster")
    parser.add_argument("--dask-workers", type=int, default=0,
                        help="workers of --dask local, one thread each (0: --jobs, or every core)")
    parser.add_argument("--dask-wait", type=float, default=600.0,
                        help="seconds to wait for a first worker to join the scheduler (default 600)")
    return parser


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    workers = args.dask_workers if args.dask_workers > 0 else args.jobs
    if workers <= 0:
        workers = os.cpu_count() or 1
    with connect(args.dask, workers) as client:
        return make_ranks.run_cli(args, run_tasks=runner(client, args.dask_wait))


if __name__ == "__main__":
    sys.exit(main())
