"""Shared machinery of the data layers: param_str parsing, image sources, background prefetching.

Determinism: every batch is a pure function of its *global* batch index (the layer's seed and the index
seed all its random choices), so the bytes of batch k do not depend on how many workers load it or in
which order they finish. Shards split the global sequence disjointly: shard s of S gets the batches
s, s + S, s + 2S, ... (one shard per GPU / solver). ``start_batch`` skips batches already consumed, so a
resumed run continues the same sequence.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import traceback
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from pylayers import LayerBase
from rankiqa.errors import InputError

Batch = dict[str, np.ndarray]


# ----------------------------------------------------------------------------------------------------
# param_str


def parse_params(param_str: str | None, layer: str, defaults: dict[str, Any],
                 required: Iterable[str] = ()) -> dict[str, Any]:
    """Parse a layer's ``param_str`` (YAML or JSON mapping; never ``eval``) over ``defaults``.

    Unknown keys are an error (they are nearly always typos that would silently change nothing).
    """
    try:
        loaded = yaml.safe_load(param_str or "")
    except yaml.YAMLError as err:
        raise InputError(f"param_str is not valid YAML: {err}", layer) from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise InputError(f"param_str must be a mapping (e.g. '{{key: value}}'), got {param_str!r}", layer)
    allowed = set(defaults) | set(required)
    unknown = sorted(str(key) for key in loaded if key not in allowed)
    if unknown:
        raise InputError(f"param_str: unknown key(s) {unknown}; known: {sorted(allowed)}", layer)
    missing = [key for key in required if key not in loaded]
    if missing:
        raise InputError(f"param_str: missing required key(s) {missing}", layer)
    params = dict(defaults)
    params.update(loaded)
    return params


def param_int(params: dict[str, Any], key: str, layer: str, minimum: int | None = None) -> int:
    """``params[key]`` as an int (bools and floats rejected), at least ``minimum``."""
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"param_str: {key} must be an integer, got {value!r}", layer)
    if minimum is not None and value < minimum:
        raise InputError(f"param_str: {key} must be >= {minimum}, got {value}", layer)
    return value


def param_bool(params: dict[str, Any], key: str, layer: str) -> bool:
    """``params[key]`` as a bool (YAML true/false)."""
    value = params[key]
    if not isinstance(value, bool):
        raise InputError(f"param_str: {key} must be true or false, got {value!r}", layer)
    return value


def check_shard(shard_index: int, shard_count: int, layer: str) -> None:
    """A shard index must lie in [0, shard_count)."""
    if not 0 <= shard_index < shard_count:
        raise InputError(f"param_str: shard_index {shard_index} must be in [0, shard_count={shard_count})",
                         layer)


def loader_params(params: dict[str, Any], layer: str) -> dict[str, int]:
    """Validate the keys that every data layer shares."""
    values = {
        "crop": param_int(params, "crop", layer, 1),
        "seed": param_int(params, "seed", layer, 0),
        "workers": param_int(params, "workers", layer, 0),
        "prefetch": param_int(params, "prefetch", layer, 1),
        "shard_index": param_int(params, "shard_index", layer, 0),
        "shard_count": param_int(params, "shard_count", layer, 1),
        "start_batch": param_int(params, "start_batch", layer, 0),
    }
    check_shard(values["shard_index"], values["shard_count"], layer)
    return values


# ----------------------------------------------------------------------------------------------------
# Image sources


# One LMDB environment per file and process: py-lmdb refuses to open the same environment twice in a
# process, and a handle inherited through fork must not be used (LMDB's rule), so a forked worker closes
# the inherited handles and opens its own.
_LMDB_ENVS: dict[str, Any] = {}
_LMDB_PID = os.getpid()


def _lmdb_env(path: Path) -> Any:
    """The process's read-only environment of the LMDB at ``path``."""
    global _LMDB_PID
    import lmdb

    if _LMDB_PID != os.getpid():
        for env in _LMDB_ENVS.values():
            try:
                env.close()
            except lmdb.Error:
                pass
        _LMDB_ENVS.clear()
        _LMDB_PID = os.getpid()
    key = str(path.resolve())
    if key not in _LMDB_ENVS:
        try:
            _LMDB_ENVS[key] = lmdb.open(key, readonly=True, lock=False, readahead=False,
                                        subdir=path.is_dir(), max_readers=512)
        except lmdb.Error as err:
            raise InputError(f"cannot open LMDB: {err}", path) from None
    return _LMDB_ENVS[key]


class ImageSource:
    """Reads BGR uint8 images by path: from files under ``root`` or from an LMDB.

    The LMDB (``make ranks LMDB=1``) maps the relative path (UTF-8 key) to the encoded PNG bytes.
    """

    def __init__(self, root: str | os.PathLike | None = None, lmdb_path: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else None
        self.lmdb_path = Path(lmdb_path) if lmdb_path is not None else None
        if self.lmdb_path is not None and not self.lmdb_path.exists():
            raise InputError("LMDB not found", self.lmdb_path)

    def _lmdb(self) -> Any:
        assert self.lmdb_path is not None
        return _lmdb_env(self.lmdb_path)

    def describe(self, path: str) -> str:
        """Where ``path`` is read from, for messages."""
        if self.lmdb_path is not None:
            return f"{self.lmdb_path}[{path}]"
        return str(self.root / path) if self.root is not None else path

    def missing(self, paths: Iterable[str]) -> list[str]:
        """The paths (in order) that cannot be found."""
        if self.lmdb_path is not None:
            with self._lmdb().begin(buffers=True) as txn:
                return [path for path in paths if txn.get(path.encode("utf-8")) is None]
        base = self.root
        return [path for path in paths if not (Path(path) if base is None else base / path).is_file()]

    def read(self, path: str) -> np.ndarray:
        """Decode one image as BGR uint8 (H, W, 3); InputError naming it when unreadable."""
        if self.lmdb_path is not None:
            with self._lmdb().begin() as txn:
                data = txn.get(path.encode("utf-8"))
            if data is None:
                raise InputError(f"key not in LMDB: {path}", self.lmdb_path)
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        else:
            full = Path(path) if self.root is None else self.root / path
            image = cv2.imread(str(full), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError("image missing or not decodable", self.describe(path))
        return image


def random_crop(image: np.ndarray, crop: int, rng: np.random.Generator, where: str = "") -> np.ndarray:
    """A uniformly placed ``crop`` x ``crop`` window of an HWC image, returned CHW (no copy of pixels)."""
    height, width = image.shape[:2]
    if height < crop or width < crop:
        raise InputError(f"image {width}x{height} is smaller than the {crop}x{crop} crop", where or None)
    top = int(rng.integers(0, height - crop + 1))
    left = int(rng.integers(0, width - crop + 1))
    return image[top:top + crop, left:left + crop].transpose(2, 0, 1)


def batch_rng(seed: int, batch_index: int, stream: int = 0) -> np.random.Generator:
    """The generator of one batch: independent streams per (seed, batch, purpose)."""
    return np.random.default_rng([int(seed), int(batch_index), int(stream)])


# ----------------------------------------------------------------------------------------------------
# Prefetching


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


# ----------------------------------------------------------------------------------------------------
# The data layers' common part


class PrefetchDataLayer(LayerBase):
    """Base of the data layers: tops named by ``TOPS``, filled from a batch builder behind a Prefetcher.

    A subclass sets ``TOPS`` (the batch keys, in top order; the first is the image blob) and implements
    ``make_builder(params, common, name)``, returning a builder with ``batch_size``, ``crop`` and
    ``__call__(global_batch_index) -> dict``. ``DEFAULTS`` and ``REQUIRED`` describe its param_str.
    """

    TOPS: tuple[str, ...] = ()
    DEFAULTS: dict[str, Any] = {}
    REQUIRED: tuple[str, ...] = ()

    def make_builder(self, params: dict[str, Any], common: dict[str, int], name: str) -> Any:
        raise NotImplementedError

    @classmethod
    def _checked_params(cls, param_str: str | None, n_bottoms: int, n_tops: int
                        ) -> tuple[dict[str, Any], dict[str, int]]:
        """param_str parsed and checked, and the blob counts: what ``setup`` checks before reading data."""
        name = cls.__name__
        params = parse_params(param_str, name, cls.DEFAULTS, required=cls.REQUIRED)
        common = loader_params(params, name)
        if n_tops != len(cls.TOPS) or n_bottoms != 0:
            raise InputError(f"needs no bottoms and {len(cls.TOPS)} tops ({', '.join(cls.TOPS)}); "
                             f"got {n_bottoms}/{n_tops}", name)
        return params, common

    @classmethod
    def _top_shape(cls, index: int, batch: int | None, crop: int) -> tuple[int | None, ...]:
        """Top ``index``: an image blob (N, 3, crop, crop) or one value per image (N,)."""
        if index == 0 or cls.TOPS[index] == "data_p":
            return (batch, 3, crop, crop)
        return (batch,)

    @classmethod
    def static_tops(cls, param_str: str | None, bottoms: list, n_tops: int) -> list[tuple[int | None, ...]]:
        """The top shapes before any data are read (the batch size as None), for ``rankiqa.netcheck``;
        the same param_str and blob-count errors as ``setup``."""
        _, common = cls._checked_params(param_str, len(bottoms), n_tops)
        return [cls._top_shape(index, None, common["crop"]) for index in range(len(cls.TOPS))]

    def setup(self, bottom, top) -> None:
        name = type(self).__name__
        params, common = self._checked_params(self.param_str, len(bottom), len(top))
        self.builder = self.make_builder(params, common, name)
        self.prefetcher = Prefetcher(self.builder, common["workers"], common["prefetch"],
                                     common["shard_index"], common["shard_count"], common["start_batch"])

    def reshape(self, bottom, top) -> None:
        for index in range(len(self.TOPS)):
            top[index].reshape(*self._top_shape(index, self.builder.batch_size, self.builder.crop))

    def forward(self, bottom, top) -> None:
        batch = self.prefetcher.next()
        for index, key in enumerate(self.TOPS):
            # Images travel as uint8 (4x less data through the worker pipe) and become float32 here.
            top[index].data[...] = batch[key]

    def backward(self, top, propagate_down, bottom) -> None:
        """A data layer has nothing to propagate."""
