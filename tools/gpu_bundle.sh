#!/usr/bin/env bash
# `make gpu-bundle`: CUDA Caffe packed for the GPU machine of the `device` tool, tested here in CPU mode.
#
# Why a build root: the GPU machine runs Ubuntu 24.04's Python 3.12 (in /opt/torch/.venv, with numpy 2,
# OpenCV, SciPy, PyYAML, scikit-image) and has no network; this machine is Debian 12 with Python 3.11, and
# Debian has no Python 3.12 at all. pycaffe (and Boost.Python under it) must be built for the GPU machine's
# Python ABI, so the bundle is built in an Ubuntu 24.04 (noble) root made here with debootstrap, by the same
# tools/build_caffe.sh as every other build (CUDA=1 CAFFE_LEAN=1: no OpenCV/LevelDB/LMDB, which our
# Python data layers never use; packing the full CPU build here carried 144 libraries, the lean one 45).
#
# Steps:
#   1. build root   $RANKIQA_CACHE/ubuntu-noble-<key>: debootstrap + the -dev packages + a Python 3.12 venv
#                   (/opt/device-python) with the packages pycaffe and the check import, standing in for the
#                   GPU machine's (the build uses it too: its smoke test imports pycaffe). Made once.
#   2. CUDA Caffe   built inside it for GPU_BUNDLE_ARCH (default 90: the H100 and H200 of the device tool)
#                   into $RANKIQA_CACHE/caffe-cuda-lean-<key> (362 s compile on 2 cores here; cached).
#   3. pack         tools/gpu_bundle.py pack -> $GPU_BUNDLE (default bundle/gpu-bundle.tar.xz, ignored by git).
#   4. test         inside the root, with the device-like venv: tools/gpu_bundle_run.sh --cpu-smoke (the
#                   CUDA libraries come from the cuBLAS/cuRAND/NCCL wheels and this machine's CUDA
#                   toolkit), and a check that NCCL is compiled into the bundle's pycaffe.
#                   GPU_BUNDLE_TEST=0 skips it.
# On the GPU machine: device tool run, carry ["bundle"], command `bash tools/gpu_bundle_run.sh`.
#
# Needs: root (debootstrap, chroot, bind mounts), nvcc (CUDA 13 here), network to the Ubuntu archive and PyPI.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RANKIQA_CACHE="${RANKIQA_CACHE:-${HOME}/.cache/rankiqa}"
GPU_BUNDLE="${GPU_BUNDLE:-${REPO_ROOT}/bundle/gpu-bundle.tar.xz}"
GPU_BUNDLE_ARCH="${GPU_BUNDLE_ARCH:-90}"
GPU_BUNDLE_TEST="${GPU_BUNDLE_TEST:-1}"
JOBS="${JOBS:-$(nproc)}"
UBUNTU_MIRROR="${UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}"
SUITE=noble
KEYRING_DEB="ubuntu-keyring_2023.11.28.1_all.deb"
KEYRING_SHA256="36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8"
# The packages of requirements.txt that pycaffe and tools/gpu_check.py import (the GPU machine has its own).
DEVICE_PACKAGES=(numpy opencv-python-headless scipy PyYAML pillow scikit-image tqdm six protobuf matplotlib)

info() { printf '[gpu-bundle] %s\n' "$*" >&2; }
die() { printf '[gpu-bundle] FAILED: %s\n' "$*" >&2; exit 1; }

pins=()
for name in "${DEVICE_PACKAGES[@]}"; do
  pin="$(grep -i "^${name}==" "$REPO_ROOT/requirements.txt")" || die "requirements.txt pins no ${name}"
  pins+=("$pin")
done
# What the build root is made of, hashed into its name: a change makes a new root.
root_recipe() {
  echo "$SUITE $KEYRING_SHA256 ${pins[*]}"
  CUDA=1 CAFFE_LEAN=1 APT=0 bash "$REPO_ROOT/tools/build_caffe.sh" --list-deps
  sed -n '/^[[:space:]]*# >>> root recipe/,/^[[:space:]]*# <<< root recipe/p' "$REPO_ROOT/tools/gpu_bundle.sh"
}
if [ "${1:-}" = --print-root-recipe ]; then root_recipe; exit 0; fi

[ "$(id -u)" = 0 ] || die "needs root: debootstrap, chroot and bind mounts (run it with sudo)"
# A mount namespace of its own: every bind mount below vanishes with this process, even when it is killed,
# and none of them propagates to the host's mount table.
if [ -z "${RANKIQA_GPU_BUNDLE_NS:-}" ]; then
  exec unshare --mount --propagation private env RANKIQA_GPU_BUNDLE_NS=1 bash "$REPO_ROOT/tools/gpu_bundle.sh" "$@"
fi
command -v nvcc >/dev/null 2>&1 || die "nvcc is not on PATH (the CUDA toolkit that compiles the build)"
# shellcheck source=tools/build_caffe_cuda.sh
source "$REPO_ROOT/tools/build_caffe_cuda.sh"  # function definitions only: nvcc_root
NVCC_ROOT="$(nvcc_root)"
[ -x "$NVCC_ROOT/bin/nvcc" ] || die "cannot locate the CUDA toolkit of nvcc (got '$NVCC_ROOT')"
if ! command -v debootstrap >/dev/null 2>&1; then
  info "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
    || die "apt-get install debootstrap failed"
fi

ROOT_KEY="$(root_recipe | sha256sum | cut -c1-12)"
ROOT="$RANKIQA_CACHE/ubuntu-${SUITE}-${ROOT_KEY}"

# Bind mounts, undone on every exit (and gone with the namespace anyway). A root is never deleted while
# anything is mounted inside it.
MOUNTED=()
bind() { # bind SRC DEST [ro]
  mkdir -p "$2"
  mount --bind "$1" "$2"
  MOUNTED+=("$2")
  if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}
unmount_all() {
  local i
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTED[i]}" 2>/dev/null || umount -l "${MOUNTED[i]}" || true
  done
  MOUNTED=()
}
mounts_under() { awk -v p="$1/" 'index($2 "/", p) == 1 {print $2}' /proc/mounts; }
safe_remove() {
  [ -z "$(mounts_under "$1")" ] || die "not removing $1: still mounted inside it: $(mounts_under "$1" | tr '\n' ' ')"
  rm -rf "$1"
}
mount_root() { # mount_root ROOT
  bind /proc "$1/proc"
  bind /dev "$1/dev"
  mkdir -p "$1/dev/pts"
  mount -t devpts devpts "$1/dev/pts" && MOUNTED+=("$1/dev/pts")
  bind "$REPO_ROOT" "$1/rankiqa" ro
  bind "$RANKIQA_CACHE" "$1/cache"
  bind "$NVCC_ROOT" "$1$NVCC_ROOT" ro
  # This machine's certificate authorities (a proxy's, say) for pip and apt inside the root: the bundle file
  # now, and the local ones where the root's update-ca-certificates (run when apt touches ca-certificates)
  # will find them again.
  cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/ca-certificates.crt" 2>/dev/null || true
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$1/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/"
  fi
  cp /etc/resolv.conf "$1/etc/resolv.conf"
}
in_root() { # in_root ROOT COMMAND...: a clean environment (no pip settings of this machine leak in)
  local root="$1"
  shift
  chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    PATH="$NVCC_ROOT/bin:/usr/sbin:/usr/bin:/sbin:/bin" PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 "$@"
}
trap unmount_all EXIT

mkdir -p "$RANKIQA_CACHE"
exec 8>"$ROOT.lock"
flock 8
if [ ! -f "$ROOT/.complete" ]; then
  info "step 1/4: Ubuntu ${SUITE} build root ($ROOT)"
  partial="$ROOT.partial"
  safe_remove "$partial"
  keyring="$RANKIQA_CACHE/downloads/$KEYRING_DEB"
  mkdir -p "$RANKIQA_CACHE/downloads"
  if ! echo "$KEYRING_SHA256  $keyring" | sha256sum -c --status 2>/dev/null; then
    curl -fsSL --retry 3 -o "$keyring.tmp" "$UBUNTU_MIRROR/pool/main/u/ubuntu-keyring/$KEYRING_DEB" \
      || die "download failed: $UBUNTU_MIRROR/pool/main/u/ubuntu-keyring/$KEYRING_DEB"
    echo "$KEYRING_SHA256  $keyring.tmp" | sha256sum -c --status || die "checksum mismatch: $KEYRING_DEB"
    mv "$keyring.tmp" "$keyring"
  fi
  keydir="$(mktemp -d)"
  dpkg-deb -x "$keyring" "$keydir"
  # >>> root recipe: hashed into the root's key.
  # bookworm's debootstrap predates noble; every Ubuntu suite uses the "gutsy" script.
  debootstrap --variant=minbase --keyring="$keydir/usr/share/keyrings/ubuntu-archive-keyring.gpg" \
    --include=ca-certificates "$SUITE" "$partial" "$UBUNTU_MIRROR" /usr/share/debootstrap/scripts/gutsy \
    >"$RANKIQA_CACHE/ubuntu-${SUITE}-${ROOT_KEY}.debootstrap.log" 2>&1 \
    || die "debootstrap failed (log: $RANKIQA_CACHE/ubuntu-${SUITE}-${ROOT_KEY}.debootstrap.log)"
  rm -rf "$keydir"
  printf 'deb %s %s main universe\n' "$UBUNTU_MIRROR" "$SUITE" "$UBUNTU_MIRROR" "$SUITE-updates" \
    "$UBUNTU_MIRROR" "$SUITE-security" >"$partial/etc/apt/sources.list"
  mount_root "$partial"
  in_root "$partial" apt-get update -qq
  in_root "$partial" /bin/bash -c "cd /rankiqa && CUDA=1 CAFFE_LEAN=1 APT=1 PYTHON=/usr/bin/python3.12 \
    bash tools/build_caffe.sh --deps-only"
  in_root "$partial" /usr/bin/python3.12 -m venv /opt/device-python
  in_root "$partial" /opt/device-python/bin/pip install -q "${pins[@]}"
  # <<< root recipe
  unmount_all
  touch "$partial/.complete"
  mv "$partial" "$ROOT"
fi
info "build root ready: $ROOT"

mount_root "$ROOT"
info "step 2/4: CUDA Caffe for sm_${GPU_BUNDLE_ARCH} inside the root (cached after the first build)"
prefix="$(in_root "$ROOT" /bin/bash -c "cd /rankiqa && CUDA=1 CAFFE_LEAN=1 CUDA_ARCH='$GPU_BUNDLE_ARCH' NCCL='${NCCL:-1}' \
  RANKIQA_CACHE=/cache PYTHON=/opt/device-python/bin/python JOBS='$JOBS' bash tools/build_caffe.sh" | tail -n 1)"
case "$prefix" in /cache/caffe-cuda-lean-*) ;; *) die "the build did not report its prefix (got '$prefix')" ;; esac

info "step 3/4: pack $prefix"
packed="/cache/$(basename "$prefix").bundle.tar.xz"
in_root "$ROOT" /bin/bash -c "cd /rankiqa && /usr/bin/python3.12 -m tools.gpu_bundle pack --prefix '$prefix' \
  --out '$packed'"

if [ "$GPU_BUNDLE_TEST" = 1 ]; then
  info "step 4/4: test the bundle in CPU mode with the device-like Python of the root"
  lib_path=""
  parts=(blas)
  if [ "${NCCL:-1}" != 0 ]; then parts+=(nccl); fi
  for part in "${parts[@]}"; do
    lib_path="$lib_path$(in_root "$ROOT" /bin/bash -c "cd /rankiqa && RANKIQA_CACHE=/cache \
      PYTHON=/opt/device-python/bin/python bash tools/cuda_libs.sh $part")/lib:"
  done
  in_root "$ROOT" /bin/bash -c "mkdir -p /tmp/gpu-bundle-test && cd /rankiqa && BUNDLE='$packed' \
    PYTHON=/opt/device-python/bin/python RANKIQA_CUDA_LIB_PATH='$lib_path$NVCC_ROOT/lib64' \
    OUT=/tmp/gpu-bundle-test bash tools/gpu_bundle_run.sh --cpu-smoke" \
    || die "the bundle failed its CPU-mode test (the bundle was not copied to $GPU_BUNDLE)"
  if [ "${NCCL:-1}" != 0 ]; then
    # The step that uses NCCL needs a GPU; here: is it compiled into the bundle's pycaffe at all?
    in_root "$ROOT" /bin/bash -c "set -e; cd /rankiqa
      exports=\$(/opt/device-python/bin/python -m tools.gpu_bundle env --dest /tmp/rankiqa-gpu-bundle \
        --cuda-lib-path '$lib_path$NVCC_ROOT/lib64')
      eval \"\$exports\"
      /opt/device-python/bin/python -c 'import caffe; from tools import train; train.require_nccl(caffe); \
        print(len(train.nccl_uid(caffe)), \"byte NCCL id\")'
      echo 'NCCL: compiled into the bundle'" || die "the bundle's pycaffe has no usable NCCL (see above)"
  fi
else
  info "step 4/4: skipped (GPU_BUNDLE_TEST=0)"
fi
unmount_all

mkdir -p "$(dirname "$GPU_BUNDLE")"
cp "${RANKIQA_CACHE}/$(basename "$packed")" "$GPU_BUNDLE.tmp"
mv "$GPU_BUNDLE.tmp" "$GPU_BUNDLE"
info "done: $GPU_BUNDLE ($(du -h "$GPU_BUNDLE" | cut -f1)); on the GPU machine: bash tools/gpu_bundle_run.sh"
