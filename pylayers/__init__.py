"""Caffe Python layers of rankiqa: lists to blobs (data layers with prefetch) and the ranking losses.

``LayerBase`` is ``caffe.Layer`` when pycaffe is importable, else ``object``: the numpy parts of every module
(batch builders, loss functions) work and are tested without Caffe.
"""

try:
    import caffe

    LayerBase = caffe.Layer
except ImportError:  # pragma: no cover - only without pycaffe
    LayerBase = object
