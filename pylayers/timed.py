"""The real data and loss layers with the duration of every forward/backward recorded, for ``make bench``
and the GPU check (``tools/bench.py``, ``tools/gpu_check.py``): a prototxt names them as
``module: "pylayers.timed"``.

Caffe imports this module by name, the measuring command imports it too: both see one ``TIMINGS``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pylayers import Blobs
from pylayers.pair_data import PairDataLayer
from pylayers.rank_data import RankDataLayer
from pylayers.rank_loss import AllPairsHingeLossLayer

#: Seconds of each forward of a timed data layer (the solver's wait for a batch) and of each forward and
#: backward of the timed loss, in call order.
TIMINGS: dict[str, list[float]] = {"data": [], "loss_forward": [], "loss_backward": []}
DATA_LAYERS: list[Any] = []  # every timed data layer created, so that its workers can be stopped


def clear_timings() -> None:
    """Forget the recorded durations (before a timed stretch)."""
    for values in TIMINGS.values():
        values.clear()


def stop_data_workers() -> None:
    """Stop the prefetch workers of every timed data layer, so that none keeps loading batches in the
    background (and steals CPU) while the next configuration is timed."""
    for layer in DATA_LAYERS:
        prefetcher = getattr(layer, "prefetcher", None)
        if prefetcher is not None:
            prefetcher.close()
    DATA_LAYERS.clear()


class _TimedDataMixin:
    """Records how long each forward of a data layer (the solver's wait for a batch) takes."""

    def setup(self, bottom: Blobs, top: Blobs) -> None:
        super().setup(bottom, top)
        DATA_LAYERS.append(self)

    def forward(self, bottom: Blobs, top: Blobs) -> None:
        start = time.perf_counter()
        super().forward(bottom, top)
        TIMINGS["data"].append(time.perf_counter() - start)


class TimedRankDataLayer(_TimedDataMixin, RankDataLayer):
    """``RankDataLayer`` with its wait for data timed."""


class TimedPairDataLayer(_TimedDataMixin, PairDataLayer):
    """``PairDataLayer`` with its wait for data timed."""


class TimedAllPairsHingeLossLayer(AllPairsHingeLossLayer):
    """``AllPairsHingeLossLayer`` that records its forward and backward durations."""

    def forward(self, bottom: Blobs, top: Blobs) -> None:
        start = time.perf_counter()
        super().forward(bottom, top)
        TIMINGS["loss_forward"].append(time.perf_counter() - start)

    def backward(self, top: Blobs, propagate_down: Sequence[bool], bottom: Blobs) -> None:
        start = time.perf_counter()
        super().backward(top, propagate_down, bottom)
        TIMINGS["loss_backward"].append(time.perf_counter() - start)
