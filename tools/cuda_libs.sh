#!/usr/bin/env bash
# cuBLAS and cuRAND for a CUDA toolkit that ships without them (the project's build machine has nvcc 13
# and cudart only). NVIDIA publishes both on PyPI as wheels holding headers and shared libraries under
# nvidia/cu13/{include,lib}; this unpacks pinned versions into the cache and prints that folder.
# The wheels carry versioned sonames only (libcublas.so.13): the linker needs unversioned links too.
# Versions match nvcc 13.0 (cuBLAS 13.0.x, cuRAND 10.4.0.x, both from the CUDA 13.0 release).
set -euo pipefail
PYTHON="${PYTHON:-python3}"
RANKIQA_CACHE="${RANKIQA_CACHE:-${HOME}/.cache/rankiqa}"
CUBLAS_WHEEL="nvidia-cublas==13.0.2.14"
CURAND_WHEEL="nvidia-curand==10.4.0.35"
root="$RANKIQA_CACHE/cuda-libs-cublas13.0.2.14-curand10.4.0.35"
if [ -f "$root/.complete" ]; then echo "$root/nvidia/cu13"; exit 0; fi
tmp="$(mktemp -d "$RANKIQA_CACHE/cuda-libs.partial.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$tmp/wheels" \
  "$CUBLAS_WHEEL" "$CURAND_WHEEL" >&2
for wheel in "$tmp"/wheels/*.whl; do
  "$PYTHON" -m zipfile -e "$wheel" "$tmp/unpacked" >&2
done
lib="$tmp/unpacked/nvidia/cu13/lib"
[ -d "$lib" ] || { echo "unexpected wheel layout: no nvidia/cu13/lib" >&2; exit 1; }
for so in "$lib"/*.so.*; do
  base="${so%%.so.*}.so"
  [ -e "$base" ] || ln -s "$(basename "$so")" "$base"
done
touch "$tmp/unpacked/.complete"
rm -rf "$root"
mv "$tmp/unpacked" "$root"
echo "$root/nvidia/cu13"
