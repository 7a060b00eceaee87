"""How many threads Caffe's CPU BLAS (OpenBLAS, which ``dev/build_caffe.sh`` links) runs while training.

OpenBLAS starts one thread per usable core by default, and every matrix product is split among all of them:
when another process holds a core (a prefetch worker decoding images, another job), the product waits for the
thread that is not running. ``make bench`` measures the Shallow training step for several worker and thread
counts (``BENCHMARKS.md``, section 5): on 2 cores the run this rule was chosen on found one thread faster than
two beside 1 and 2 prefetch workers (by 3 and 10 % of a step; two threads 3 % faster with none); a later run,
with the Shallow net's local normalisation and a load average up to 2, found two threads faster in all three
rows, by 2-6 %. Training leaves a core to each prefetch worker, and one to the data loading of the solver's
own thread when there is none: ``training_threads`` = usable cores - max(workers, 1), at least 1, unless
``OPENBLAS_NUM_THREADS`` (or ``OMP_NUM_THREADS``) says otherwise. Other core counts are not measured: ``make
bench`` shows how the rule does on any machine.

The count is set in the running process through OpenBLAS's ``openblas_set_num_threads`` (ctypes), as
pycaffe has loaded the library before a net says how many workers it has; a child process (``caffe time``)
gets it through ``OPENBLAS_NUM_THREADS`` (``threads_set``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from typing import Any

#: Where OpenBLAS reads its thread count when it loads, in its order of precedence.
VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), as OpenBLAS counts them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def requested_threads() -> int | None:
    """The thread count the environment asks OpenBLAS for (the first of ``VARIABLES`` holding a positive
    number), or None."""
    for var in VARIABLES:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def openblas_default() -> int:
    """What OpenBLAS itself runs with: ``requested_threads``, else one thread per usable core."""
    return requested_threads() or usable_cores()


def training_threads(workers: int) -> int:
    """BLAS threads for training with ``workers`` prefetch worker processes: ``requested_threads`` when the
    environment sets it, else the usable cores minus the workers (minus 1 without workers), at least 1 (see
    the module docstring)."""
    return requested_threads() or max(1, usable_cores() - max(1, int(workers)))


def openblas() -> Any | None:
    """The OpenBLAS library already loaded in this process (by pycaffe) through ctypes, or None when there
    is none (Caffe linked with another BLAS, or not loaded yet)."""
    try:
        lib = ctypes.CDLL("libopenblas.so.0", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:
        return None
    needed = ("openblas_set_num_threads", "openblas_get_num_threads")
    return lib if all(hasattr(lib, name) for name in needed) else None


def get_threads() -> int | None:
    """OpenBLAS's current thread count in this process, or None without OpenBLAS."""
    lib = openblas()
    return int(lib.openblas_get_num_threads()) if lib is not None else None


def set_threads(threads: int) -> bool:
    """Make OpenBLAS in this process run ``threads`` threads; False (nothing changed) without OpenBLAS."""
    if threads < 1:
        raise ValueError(f"BLAS threads must be at least 1, got {threads}")
    lib = openblas()
    if lib is None:
        return False
    lib.openblas_set_num_threads(int(threads))
    return True


@contextlib.contextmanager
def threads_set(threads: int | None) -> Iterator[dict[str, str]]:
    """OpenBLAS at ``threads`` threads inside the block (None: as it is), restored after; yields the
    environment variables that give a child process (``caffe time``) the same count. RuntimeError when a
    count is asked for and this process has no OpenBLAS."""
    if threads is None:
        yield {}
        return
    before = get_threads()
    if before is None:
        raise RuntimeError("Caffe's BLAS is not OpenBLAS (or not loaded): its thread count cannot be set")
    set_threads(threads)
    try:
        yield {VARIABLES[0]: str(threads)}
    finally:
        set_threads(before)
