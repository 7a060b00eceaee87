#!/usr/bin/env bash
# The GPU check with the bundle, on a GPU machine without network (Ubuntu 24.04, Python 3.12, CUDA libraries
# from its PyTorch install), with this checkout and the folder bundle/ copied there:
#   bash gpu/bundle_run.sh [tools.gpu_check flags]
# Unpacks bundle/gpu-bundle.tar.xz (`make gpu-bundle`) into /tmp, finds the CUDA libraries it needs in the
# machine's PyTorch install (or RANKIQA_CUDA_LIB_PATH), and runs gpu/check.sh with them, which writes its
# report into GPU_CHECK_OUT (default results/gpu_check). Exit status: gpu_check's, or 2 when the bundle
# cannot be used (the reason is printed).
# Environment: PYTHON (default python3: the machine's own, with numpy, OpenCV, SciPy, PyYAML), BUNDLE,
# BUNDLE_DEST (default /tmp/rankiqa-gpu-bundle), RANKIQA_CUDA_LIB_PATH (extra ':'-separated folders),
# GPU_CHECK_OUT (see gpu/check.sh).
set -uo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT" || exit 2
PYTHON="${PYTHON:-python3}"
BUNDLE="${BUNDLE:-bundle/gpu-bundle.tar.xz}"
BUNDLE_DEST="${BUNDLE_DEST:-/tmp/rankiqa-gpu-bundle}"

echo "== machine: $(uname -srm); $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"); $("$PYTHON" -V 2>&1)"
"$PYTHON" -m gpu.bundle unpack --bundle "$BUNDLE" --dest "$BUNDLE_DEST" || exit 2
exports="$("$PYTHON" -m gpu.bundle env --dest "$BUNDLE_DEST")" || exit 2
eval "$exports"
# The repository too: Caffe's Python layers and the prefetch workers import pylayers by name.
export PYTHONPATH="$PYTHONPATH:$REPO_ROOT"
echo "== environment"
echo "$exports"
PYTHON="$PYTHON" bash gpu/check.sh "$@"
