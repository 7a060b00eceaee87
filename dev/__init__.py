"""Development infrastructure: the Caffe build, the CUDA library fetcher, the Ubuntu 24.04 root, the
Dockerfile replay. Not part of the pipeline; nothing in the pipeline imports it."""
