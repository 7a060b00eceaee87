# shellcheck shell=bash disable=SC2154  # mode, info, die, PYTHON...: set by build_caffe.sh, which sources this
# The CUDA part of dev/build_caffe.sh (sourced by it when CUDA=1; not run on its own).
# What CUDA 13 required, as found on the project's build machine (nvcc 13.0, no GPU):
#   - Offline compilation for compute capabilities below 7.5 is gone (Maxwell, Pascal, Volta): the
#     architecture list is filtered to >= 75 with nvcc >= 13. The Docker image uses CUDA 12.6 to keep Volta.
#   - cudaDeviceProp lost clockRate, deviceOverlap and kernelExecTimeoutEnabled: src/caffe/common.cpp is
#     patched in build_caffe.sh (for both modes: the fix is harmless on CPU).
#   - The toolkit there has no cuBLAS/cuRAND: they come from PyPI wheels (dev/cuda_libs.sh).
#   - CMake 3.25's FindCUDA clears the cuBLAS/cuRAND cache entries on the first configure: build_caffe.sh
#     always configures twice.
# NCCL (multi-GPU training, GPUS=0,1,...) is on unless NCCL=0: the system's when nccl.h is in
# /usr/include or the toolkit (the NVIDIA CUDA devel images ship it), else NVIDIA's PyPI wheel
# (dev/cuda_libs.sh nccl; 250 MB, fetched once). Without NCCL, tools/train.py refuses --gpus.

nvcc_major() { nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p'; }

# The toolkit's folder as nvcc reports it ("#$ TOP=/usr/local/cuda-13.0/bin/.."): the nvcc on PATH may be a
# wrapper script (as on the project's build machine) rather than a link into the toolkit.
nvcc_root() {
  local top
  top="$(nvcc --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)"
  [ -n "$top" ] || top="$(dirname "$(readlink -f "$(command -v nvcc)")")/.."
  readlink -f "$top"
}

cuda_prepare() {
  command -v nvcc >/dev/null 2>&1 || die "CUDA=1 but nvcc is not on PATH" \
    "Install a CUDA toolkit (11.x-13.x) or put its bin/ on PATH"
  NVCC_MAJOR="$(nvcc_major)"
  if [ "${NVCC_MAJOR:-0}" -ge 13 ]; then
    local a kept=""
    for a in $CUDA_ARCH; do [ "$a" -ge 75 ] && kept="$kept $a"; done
    if [ "${kept// /}" != "${CUDA_ARCH// /}" ]; then
      info "nvcc ${NVCC_MAJOR} cannot target < sm_75: CUDA_ARCH '${CUDA_ARCH}' -> '${kept# }'"
    fi
    CUDA_ARCH="${kept# }"
  fi
  [ -n "$CUDA_ARCH" ] || die "no GPU architecture left to build for" "Set CUDA_ARCH, e.g. CUDA_ARCH=90"
  NVCC_ROOT="$(nvcc_root)"
  # Where NCCL comes from (a key ingredient): system, wheel or off. The wheel is fetched by cuda_cmake_args.
  NCCL_FROM=off
  if [ "${NCCL:-1}" != 0 ]; then
    NCCL_FROM=wheel
    if [ -f /usr/include/nccl.h ] || [ -f "$NVCC_ROOT/include/nccl.h" ]; then
      NCCL_FROM=system
    elif [ "${NVCC_MAJOR:-0}" != 13 ]; then
      # The pinned wheel is built for CUDA 13.
      info "no nccl.h for CUDA ${NVCC_MAJOR} here: building without NCCL (install libnccl-dev for --gpus)"
      NCCL_FROM=off
    fi
  fi
}

cuda_key_material() {
  echo "arch=$CUDA_ARCH nccl=$NCCL_FROM nvcc=$(nvcc --version | tail -n 2 | tr '\n' ' ')"
  grep -hv '^\s*#' "$REPO_ROOT/dev/build_caffe_cuda.sh" "$REPO_ROOT/dev/cuda_libs.sh" | sha256sum | cut -d' ' -f1
}

cuda_cmake_args() {
  local ptx="${CUDA_ARCH##* }"
  CMAKE_ARGS+=(-DCPU_ONLY=OFF -DCUDA_ARCH_NAME=Manual -DCUDA_ARCH_BIN="$CUDA_ARCH" -DCUDA_ARCH_PTX="$ptx")
  if [ "$mode" = cuda-lean ]; then
    CMAKE_ARGS+=(-DUSE_OPENCV=OFF -DUSE_LEVELDB=OFF -DUSE_LMDB=OFF)
  fi
  if [ "$NCCL_FROM" = system ]; then
    CMAKE_ARGS+=(-DUSE_NCCL=ON)
    info "NCCL: the system's (multi-GPU training enabled)"
  elif [ "$NCCL_FROM" = wheel ]; then
    local nccl_root
    nccl_root="$(PYTHON="$PYTHON" bash "$REPO_ROOT/dev/cuda_libs.sh" nccl)" || die "could not provide NCCL" \
      "Build without multi-GPU support: NCCL=0"
    CMAKE_ARGS+=(-DUSE_NCCL=ON -DNCCL_INCLUDE_DIR="$nccl_root/include" -DNCCL_LIBRARIES="$nccl_root/lib/libnccl.so")
    info "NCCL: from PyPI wheel, $nccl_root (multi-GPU training enabled)"
  else
    info "NCCL: off (NCCL=0); multi-GPU training (--gpus) disabled"
  fi
  # CUBLAS_ROOT may point at a folder with include/ and lib/ holding cuBLAS and cuRAND.
  if [ -z "${CUBLAS_ROOT:-}" ] && ! ls "$NVCC_ROOT"/lib*/libcublas.so* >/dev/null 2>&1 \
      && ! ls "$NVCC_ROOT"/targets/*/lib/libcublas.so* >/dev/null 2>&1; then
    info "no cuBLAS in $NVCC_ROOT: taking cuBLAS/cuRAND from PyPI wheels"
    CUBLAS_ROOT="$(PYTHON="$PYTHON" bash "$REPO_ROOT/dev/cuda_libs.sh")" || die "could not provide cuBLAS/cuRAND"
  fi
  if [ -n "${CUBLAS_ROOT:-}" ]; then
    CMAKE_ARGS+=(-DCUDA_cublas_LIBRARY="$CUBLAS_ROOT/lib/libcublas.so"
      -DCUDA_curand_LIBRARY="$CUBLAS_ROOT/lib/libcurand.so"
      "-DCUDA_NVCC_FLAGS=-I$CUBLAS_ROOT/include" "-DCMAKE_CXX_FLAGS=-I$CUBLAS_ROOT/include")
  fi
}
