# rankiqa on CUDA: BVLC Caffe 1.0 (CUDA, no cuDNN) with pycaffe and the Python layer, built by the same
# script as `make caffe` (dev/build_caffe.sh with CUDA=1). All logic lives in that script and the Makefile.
#   docker build -t rankiqa .
#   docker run --gpus all -v /path/to/tid2013:/data/tid2013 -v "$PWD/results:/opt/rankiqa/results" rankiqa \
#       make eval DATASET=tid2013 MODEL=/data/tid2013/FT_tid2013.caffemodel NET=vgg16
# CUDA 12.6 still compiles for Volta (sm_70); CUDA 13 does not.
FROM nvidia/cuda:12.6.3-devel-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    RANKIQA_CACHE=/opt/rankiqa-cache \
    CUDA=1 \
    CUDA_ARCH="70 75 80 86 89 90"

WORKDIR /opt/rankiqa

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make python3 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# Only what the build needs, so that code changes do not rebuild Caffe.
COPY requirements.txt Makefile ./
COPY dev/build_caffe.sh dev/build_caffe_cuda.sh dev/cuda_libs.sh dev/
RUN make caffe CUDA=1 && rm -rf /var/lib/apt/lists/* /root/.cache/pip

COPY . .
CMD ["make", "help"]
