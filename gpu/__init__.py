"""The GPU bundle: CUDA Caffe packed for a GPU machine without network, and the GPU check run there.
Not part of the pipeline; nothing in the pipeline imports it."""
