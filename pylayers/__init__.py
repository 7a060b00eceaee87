"""Every Caffe Python layer of rankiqa: lists to blobs (data layers with prefetch), the ranking losses, the
SROCC/PLCC layer, and the layers the measurements swap in (timed, fixed-batch, saved crops).

``LayerBase`` is ``caffe.Layer`` when pycaffe is importable, else ``object``: the numpy parts of every module
(batch builders, loss functions) work and are tested without Caffe.
"""

import os
from collections.abc import Sequence
from typing import Any

#: What Caffe passes to a Python layer's ``setup``/``reshape``/``forward`` (``bottom``, ``top``) and
#: ``backward``: the layer's blobs (``caffe.Blob``: ``data``/``diff`` numpy views, ``reshape``, ``num``, ...).
Blobs = Sequence[Any]

# Quiet as rankiqa.caffe_io.import_caffe: when this package is the first to import pycaffe (an online ranking
# run imports a data layer before any net is built), glog reads the level as the library loads.
os.environ.setdefault("GLOG_minloglevel", "2")
try:
    import caffe

    LayerBase = caffe.Layer
except ImportError:  # pragma: no cover - only without pycaffe
    LayerBase = object
