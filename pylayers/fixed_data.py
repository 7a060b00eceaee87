"""``RankDataLayer`` on one fixed batch, for the GPU check's training step (``tools/gpu_check.py``): a
falling loss on a batch that never changes shows learning rather than an easier batch."""

from __future__ import annotations

import numpy as np

from pylayers import Blobs
from pylayers.rank_data import RankDataLayer


class FixedRankDataLayer(RankDataLayer):
    """``RankDataLayer`` that loads its first batch once and repeats it at every forward (same param_str
    and tops as ``RankDataLayer``)."""

    def forward(self, bottom: Blobs, top: Blobs) -> None:
        cached = getattr(self, "_fixed", None)
        if cached is None:
            super().forward(bottom, top)
            # Index, not iterate: pycaffe's top vector has no Python iterator over its Blob pointers.
            self._fixed = [np.array(top[index].data, copy=True) for index in range(len(top))]
            return
        for index, values in enumerate(cached):
            top[index].data[...] = values
