"""Every Caffe Python layer of rankiqa: lists to blobs (data layers with prefetch), the ranking losses, the
SROCC/PLCC layer, and the layers the measurements swap in (timed, fixed-batch, saved crops).

``LayerBase`` is ``caffe.Layer`` when pycaffe is importable, else ``object``: the numpy parts of every module
(batch builders, loss functions) work and are tested without Caffe.
"""

from collections.abc import Sequence
from typing import Any

#: What Caffe passes to a Python layer's ``setup``/``reshape``/``forward`` (``bottom``, ``top``) and
#: ``backward``: the layer's blobs (``caffe.Blob``: ``data``/``diff`` numpy views, ``reshape``, ``num``, ...).
Blobs = Sequence[Any]

try:
    import caffe

    LayerBase = caffe.Layer
except ImportError:  # pragma: no cover - only without pycaffe
    LayerBase = object
