"""Background prefetching of the data layers' batches: worker processes, in order, bounded memory.

Determinism: every batch is a pure function of its *global* batch index (the layer's seed and the index
seed all its random choices), so the bytes of batch k do not depend on how many workers load it or in
which order they finish. Shards split the global sequence disjointly: shard s of S gets the batches
s, s + S, s + 2S, ... (one shard per GPU / solver). ``start_batch`` skips batches already consumed, so a
resumed run continues the same sequence.

The image sources and crops are in ``pylayers.images``, the param_str parser in ``pylayers.params``, the
data layers' common base in ``pylayers.data_layer``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import traceback
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from rankiqa.errors import InputError

Batch = dict[str, np.ndarray]


def _worker_loop(build: Callable[[int], Batch], tasks, results, stop) -> None:
    """Worker process: build batches by global index until told to stop."""
    # Ctrl-C goes to the whole process group; the parent handles it and shuts the workers down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # No cv2.setNumThreads here: touching OpenCV's thread pool in a forked child deadlocks when the parent
    # had started that pool (seen in the test suite). Decoding and cropping do not use the pool anyway.
    parent = os.getppid()
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            # A parent killed without cleanup (Caffe aborts with SIGABRT on a failed CHECK) leaves the workers
            # re-parented: exit instead of living on and holding the parent's stdout open.
            if os.getppid() != parent:
                results.cancel_join_thread()
                return
            continue
        if task is None or stop.is_set():
            # Results nobody will read must not keep this process alive flushing them into the pipe.
            results.cancel_join_thread()
            return
        try:
            results.put((task, "ok", build(task)))
        except InputError as err:
            results.put((task, "input", (err.message, err.path, err.line)))
        except BaseException:  # noqa: B036 - report anything to the parent rather than hang it
            results.put((task, "error", traceback.format_exc()))


def _shutdown(processes: list, tasks, stop) -> None:
    """Stop the workers: flag and wake them (queued tasks are skipped), then terminate stragglers."""
    stop.set()
    for _ in processes:
        try:
            tasks.put_nowait(None)
        except (ValueError, OSError, queue.Full):
            break
    for process in processes:
        process.join(timeout=2.0)
        if process.is_alive():
            process.terminate()
            process.join(timeout=2.0)
    tasks.cancel_join_thread()


class Prefetcher:
    """Deliver ``build(global_index)`` for this shard's batches in order, loaded ahead by workers.

    ``workers=0`` builds synchronously in the calling process (same bytes, handy for tests). At most
    ``prefetch`` batches are in flight or waiting, so memory stays bounded.
    """

    def __init__(self, build: Callable[[int], Batch], workers: int = 2, prefetch: int = 4,
                 shard_index: int = 0, shard_count: int = 1, start_batch: int = 0):
        if shard_count < 1 or not 0 <= shard_index < shard_count:
            raise ValueError(f"bad shard {shard_index}/{shard_count}")
        self.build = build
        self.workers = max(0, int(workers))
        self.prefetch = max(1, int(prefetch))
        self.shard_index = shard_index
        self.shard_count = shard_count
        self._next_local = int(start_batch)  # local index of the next batch to deliver
        self._next_submit = int(start_batch)
        self._ready: dict[int, tuple[str, Any]] = {}
        self._processes: list = []
        self._closed = False
        if self.workers:
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            self._tasks = ctx.Queue()
            self._results = ctx.Queue()
            self._stop = ctx.Event()
            for _ in range(self.workers):
                process = ctx.Process(target=_worker_loop, daemon=True,
                                      args=(build, self._tasks, self._results, self._stop))
                process.start()
                self._processes.append(process)
            self._finalizer = weakref.finalize(self, _shutdown, self._processes, self._tasks, self._stop)
            for _ in range(self.prefetch):
                self._submit()

    def global_index(self, local_index: int) -> int:
        """The global batch index of this shard's ``local_index``-th batch."""
        return local_index * self.shard_count + self.shard_index

    def _submit(self) -> None:
        self._tasks.put(self.global_index(self._next_submit))
        self._next_submit += 1

    def next(self) -> Batch:
        """The next batch of this shard (raises the worker's InputError if loading failed)."""
        if self._closed:
            raise RuntimeError("prefetcher is closed")
        wanted = self.global_index(self._next_local)
        self._next_local += 1
        if not self.workers:
            return self.build(wanted)
        while wanted not in self._ready:
            try:
                index, status, payload = self._results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in self._processes if not p.is_alive()]
                if dead:
                    self.close()
                    raise RuntimeError(f"data worker died (exit code {dead[0].exitcode})") from None
                continue
            self._ready[index] = (status, payload)
        status, payload = self._ready.pop(wanted)
        self._submit()
        if status == "ok":
            return payload
        self.close()
        if status == "input":
            message, path, line = payload
            raise InputError(message, path, line)
        raise RuntimeError(f"data worker failed on batch {wanted}:\n{payload}")

    def close(self) -> None:
        """Stop the workers (idempotent; also runs when the prefetcher is garbage-collected)."""
        if self._closed:
            return
        self._closed = True
        if self.workers:
            self._finalizer()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
