#!/usr/bin/env bash
# CUDA libraries for a toolkit that ships without them (the project's build machine has nvcc 13 and cudart
# only), from NVIDIA's PyPI wheels, unpacked at pinned versions into the cache; prints the folder holding
# include/ and lib/.
#   dev/cuda_libs.sh [blas]   cuBLAS + cuRAND (nvidia/cu13/{include,lib})
#   dev/cuda_libs.sh nccl     NCCL, for multi-GPU training (nvidia/nccl/{include,lib})
# The wheels carry versioned sonames only (libcublas.so.13): the linker needs unversioned links too.
# Versions: cuBLAS 13.0.x and cuRAND 10.4.0.x come with CUDA 13.0; NCCL 2.31.2 was the newest
# nvidia-nccl-cu13 on PyPI when pinned (soname libnccl.so.2, the one PyTorch's CUDA 13 install also has, so
# a GPU machine's copy serves at run time).
set -euo pipefail
PYTHON="${PYTHON:-python3}"
RANKIQA_CACHE="${RANKIQA_CACHE:-${HOME}/.cache/rankiqa}"
case "${1:-blas}" in
  blas)
    wheels=("nvidia-cublas==13.0.2.14" "nvidia-curand==10.4.0.35")
    root="$RANKIQA_CACHE/cuda-libs-cublas13.0.2.14-curand10.4.0.35"
    inner="nvidia/cu13" ;;
  nccl)
    wheels=("nvidia-nccl-cu13==2.31.2")
    root="$RANKIQA_CACHE/cuda-libs-nccl2.31.2"
    inner="nvidia/nccl" ;;
  *) echo "usage: $0 [blas|nccl]" >&2; exit 2 ;;
esac
if [ -f "$root/.complete" ]; then echo "$root/$inner"; exit 0; fi
mkdir -p "$RANKIQA_CACHE"
tmp="$(mktemp -d "$RANKIQA_CACHE/cuda-libs.partial.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_18_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$tmp/wheels" "${wheels[@]}" >&2
for wheel in "$tmp"/wheels/*.whl; do
  "$PYTHON" -m zipfile -e "$wheel" "$tmp/unpacked" >&2
done
lib="$tmp/unpacked/$inner/lib"
[ -d "$lib" ] || { echo "unexpected wheel layout: no $inner/lib" >&2; exit 1; }
for so in "$lib"/*.so.*; do
  base="${so%%.so.*}.so"
  [ -e "$base" ] || ln -s "$(basename "$so")" "$base"
done
touch "$tmp/unpacked/.complete"
rm -rf "$root"
mv "$tmp/unpacked" "$root"
echo "$root/$inner"
