#!/usr/bin/env bash
# `make gpu-bundle`: CUDA Caffe packed for a GPU machine without network (Ubuntu 24.04, Python 3.12, CUDA
# libraries from its PyTorch install), tested here in CPU mode.
#
# Why a build root: the GPU machine runs Ubuntu 24.04's Python 3.12 (a venv with PyTorch, numpy 2, OpenCV,
# SciPy, PyYAML, scikit-image) and has no network, so nothing can be built or installed there; this machine
# is Debian 12 with Python 3.11, and Debian has no Python 3.12 at all. pycaffe (and Boost.Python under it)
# must be built for the GPU machine's Python ABI, so the bundle is built in an Ubuntu 24.04 (noble) root made
# here with debootstrap, by the same dev/build_caffe.sh as every other build (CUDA=1 CAFFE_LEAN=1: no
# OpenCV/LevelDB/LMDB, which our Python data layers never use; packing the full CPU build here carried 144
# libraries, the lean one 45).
#
# Steps:
#   1. build root   $RANKIQA_CACHE/ubuntu-noble-<key>: debootstrap + the -dev packages + a Python 3.12 venv
#                   (/opt/gpu-python) with the packages pycaffe and the check import, standing in for the
#                   GPU machine's (the build uses it too: its smoke test imports pycaffe). Made once.
#   2. CUDA Caffe   built inside it for GPU_BUNDLE_ARCH (default 90: the H100 and H200)
#                   into $RANKIQA_CACHE/caffe-cuda-lean-<key> (362 s compile on 2 cores here; cached).
#   3. pack         gpu/bundle.py pack -> $GPU_BUNDLE (default bundle/gpu-bundle.tar.xz, ignored by git).
#   4. test         inside the root, with that venv: gpu/bundle_run.sh --cpu-smoke, which
#                   finds the CUDA libraries in the venv's NVIDIA wheels as it does on the GPU machine, and
#                   a check that NCCL is compiled into the bundle's pycaffe (a 128-byte NCCL id).
#                   GPU_BUNDLE_TEST=0 skips it.
# On the GPU machine, with this checkout and the folder bundle/ copied there: `bash gpu/bundle_run.sh`.
#
# Needs: root (debootstrap, chroot, bind mounts), nvcc (CUDA 13 here), network to the Ubuntu archive and PyPI.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RANKIQA_CACHE="${RANKIQA_CACHE:-${HOME}/.cache/rankiqa}"
GPU_BUNDLE="${GPU_BUNDLE:-${REPO_ROOT}/bundle/gpu-bundle.tar.xz}"
GPU_BUNDLE_ARCH="${GPU_BUNDLE_ARCH:-90}"
GPU_BUNDLE_TEST="${GPU_BUNDLE_TEST:-1}"
JOBS="${JOBS:-$(nproc)}"
# The packages of requirements.txt that pycaffe and tools/gpu_check.py import (the GPU machine has its own).
GPU_MACHINE_PACKAGES=(numpy opencv-python-headless scipy PyYAML pillow scikit-image tqdm six protobuf matplotlib)
# CUDA 13's libraries as the GPU machine has them: NVIDIA's wheels in the site-packages (nvidia/*/lib), where
# gpu/bundle_run.sh looks. The versions of dev/cuda_libs.sh, plus the runtime (tested to agree).
CUDA_WHEELS=(nvidia-cuda-runtime==13.0.96 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-nccl-cu13==2.31.2)

info() { printf '[gpu-bundle] %s\n' "$*" >&2; }
die() { printf '[gpu-bundle] FAILED: %s\n' "$*" >&2; exit 1; }
# shellcheck source=dev/ubuntu_root.sh
source "$REPO_ROOT/dev/ubuntu_root.sh"

pins=()
for name in "${GPU_MACHINE_PACKAGES[@]}"; do
  pin="$(grep -i "^${name}==" "$REPO_ROOT/requirements.txt")" || die "requirements.txt pins no ${name}"
  pins+=("$pin")
done
# What the build root is made of, hashed into its name: a change makes a new root.
root_recipe() {
  echo "$UR_SUITE $UR_KEYRING_SHA256 ${pins[*]} ${CUDA_WHEELS[*]}"
  CUDA=1 CAFFE_LEAN=1 APT=0 bash "$REPO_ROOT/dev/build_caffe.sh" --list-deps
  sed -n '/^[[:space:]]*# >>> root recipe/,/^[[:space:]]*# <<< root recipe/p' "$REPO_ROOT/gpu/bundle.sh"
  grep -v '^[[:space:]]*#' "$REPO_ROOT/dev/ubuntu_root.sh"
}
if [ "${1:-}" = --print-root-recipe ]; then root_recipe; exit 0; fi

ur_enter_namespace "$REPO_ROOT/gpu/bundle.sh" "$@"
ur_host_checks

ROOT_KEY="$(root_recipe | sha256sum | cut -c1-12)"
ROOT="$RANKIQA_CACHE/ubuntu-${UR_SUITE}-${ROOT_KEY}"

mount_root() { # ROOT: the base mounts, the repository (read-only) at /rankiqa, the cache at /cache
  ur_mount_base "$1"
  ur_bind "$REPO_ROOT" "$1/rankiqa" ro
  ur_bind "$RANKIQA_CACHE" "$1/cache"
}
in_root() { ur_in_root "$@"; }
trap ur_unmount_all EXIT

mkdir -p "$RANKIQA_CACHE"
exec 8>"$ROOT.lock"
flock 8
if [ ! -f "$ROOT/.complete" ]; then
  info "step 1/4: Ubuntu ${UR_SUITE} build root ($ROOT)"
  partial="$ROOT.partial"
  ur_safe_remove "$partial"
  # >>> root recipe: hashed into the root's key (with dev/ubuntu_root.sh).
  ur_debootstrap "$partial" "$ROOT.debootstrap.log"
  mount_root "$partial"
  in_root "$partial" apt-get update -qq
  in_root "$partial" /bin/bash -c "cd /rankiqa && CUDA=1 CAFFE_LEAN=1 APT=1 PYTHON=/usr/bin/python3.12 \
    bash dev/build_caffe.sh --deps-only"
  in_root "$partial" /usr/bin/python3.12 -m venv /opt/gpu-python
  in_root "$partial" /opt/gpu-python/bin/pip install -q "${pins[@]}"
  in_root "$partial" /opt/gpu-python/bin/pip install -q --no-deps "${CUDA_WHEELS[@]}"
  # <<< root recipe
  ur_unmount_all
  touch "$partial/.complete"
  mv "$partial" "$ROOT"
fi
info "build root ready: $ROOT"

mount_root "$ROOT"
info "step 2/4: CUDA Caffe for sm_${GPU_BUNDLE_ARCH} inside the root (cached after the first build)"
prefix="$(in_root "$ROOT" /bin/bash -c "cd /rankiqa && CUDA=1 CAFFE_LEAN=1 CUDA_ARCH='$GPU_BUNDLE_ARCH' NCCL='${NCCL:-1}' \
  RANKIQA_CACHE=/cache PYTHON=/opt/gpu-python/bin/python JOBS='$JOBS' bash dev/build_caffe.sh" | tail -n 1)"
case "$prefix" in /cache/caffe-cuda-lean-*) ;; *) die "the build did not report its prefix (got '$prefix')" ;; esac

info "step 3/4: pack $prefix"
packed="/cache/$(basename "$prefix").bundle.tar.xz"
in_root "$ROOT" /bin/bash -c "cd /rankiqa && /usr/bin/python3.12 -m gpu.bundle pack --prefix '$prefix' \
  --out '$packed'"

if [ "$GPU_BUNDLE_TEST" = 1 ]; then
  info "step 4/4: test the bundle in CPU mode with the root's Python 3.12 venv (as the GPU machine's)"
  # No RANKIQA_CUDA_LIB_PATH: the CUDA libraries must be found as on the GPU machine (site-packages).
  in_root "$ROOT" /bin/bash -c "mkdir -p /tmp/gpu-bundle-test && cd /rankiqa && BUNDLE='$packed' \
    PYTHON=/opt/gpu-python/bin/python GPU_CHECK_OUT=/tmp/gpu-bundle-test bash gpu/bundle_run.sh --cpu-smoke" \
    || die "the bundle failed its CPU-mode test (the bundle was not copied to $GPU_BUNDLE)"
  if [ "${NCCL:-1}" != 0 ]; then
    # The step that uses NCCL needs a GPU; here: is it compiled into the bundle's pycaffe at all?
    in_root "$ROOT" /bin/bash -c "set -e; cd /rankiqa
      exports=\$(/opt/gpu-python/bin/python -m gpu.bundle env --dest /tmp/rankiqa-gpu-bundle)
      eval \"\$exports\"
      /opt/gpu-python/bin/python -c 'import caffe; from rankiqa import devices; devices.require_nccl(caffe); \
        print(len(devices.nccl_uid(caffe)), \"byte NCCL id\")'
      echo 'NCCL: compiled into the bundle'" || die "the bundle's pycaffe has no usable NCCL (see above)"
  fi
else
  info "step 4/4: skipped (GPU_BUNDLE_TEST=0)"
fi
ur_unmount_all

mkdir -p "$(dirname "$GPU_BUNDLE")"
cp "${RANKIQA_CACHE}/$(basename "$packed")" "$GPU_BUNDLE.tmp"
mv "$GPU_BUNDLE.tmp" "$GPU_BUNDLE"
info "done: $GPU_BUNDLE ($(du -h "$GPU_BUNDLE" | cut -f1)); on the GPU machine: bash gpu/bundle_run.sh"
