#!/usr/bin/env bash
# Build BVLC Caffe 1.0 with pycaffe and the Python layer, CPU or CUDA, into a cache outside the repository.
#
# One recipe for `make caffe`, `make caffe CUDA=1`, CI and the Dockerfile:
#   1. system packages (Debian/Ubuntu -dev packages; installed with apt when root, else listed for you),
#   2. source: Debian's `caffe` source package of bullseye (BVLC Caffe 1.0 + git 2018-08-21, with Debian's
#      patches for Python 3, OpenCV 4 and BLAS), fetched from the Debian archive, pinned by version and SHA-256,
#   3. our own small fixes (below, each with its reason),
#   4. CMake + make, install into <cache>/caffe-<cpu|cuda>-<key>/ where <key> hashes everything that changes
#      the build (this script, the source pins, mode, GPU architectures, Python, library versions),
#   5. a smoke test (import caffe; the Python layer is registered) before the prefix is moved into place.
# A finished prefix holds `.complete`; a second run finds it and returns in seconds. A failed or interrupted
# build leaves only a temporary folder (`*.partial.*`), never a prefix that looks complete.
#
# Usage: dev/build_caffe.sh [--print-prefix] [--deps-only] [--venv-deps] [--list-deps]
# Environment:
#   PYTHON        Python that pycaffe is built for (default: .venv/bin/python); it must have numpy.
#   CUDA          0 (CPU_ONLY, default) or 1 (CUDA, no cuDNN).
#   CAFFE_LEAN    1 with CUDA=1: without OpenCV, LevelDB and LMDB (Caffe's own image/database data layers,
#                 which this project never uses: its data layers are Python). Fewer libraries to carry in
#                 the GPU bundle (gpu/bundle.sh); a separate cache entry (caffe-cuda-lean-<key>).
#   NCCL          with CUDA=1: 1 (default) builds multi-GPU support with NCCL (the system's, else NVIDIA's PyPI
#                 wheel); 0 without.
#   CUDA_ARCH     space-separated compute capabilities for CUDA=1 (default "70 75 80 86 89 90": Volta to
#                 Hopper); PTX is emitted for the last one. CUDA 13 dropped Volta (sm_70): with nvcc >= 13
#                 the list is filtered to >= 75 and the script says so.
#   RANKIQA_CACHE cache root (default ~/.cache/rankiqa).
#   JOBS          parallel compile jobs (default: nproc).
#   DEBIAN_MIRROR where the source package is fetched (default http://deb.debian.org/debian).
#   APT           1 (default) installs missing packages with apt-get when root; 0 never runs apt.
set -euo pipefail

CAFFE_DEB_VERSION="1.0.0+git20180821.99bd997-8"
CAFFE_ORIG="caffe_1.0.0+git20180821.99bd997.orig.tar.gz"
CAFFE_ORIG_SHA256="e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c"
CAFFE_DEBIAN="caffe_${CAFFE_DEB_VERSION}.debian.tar.xz"
CAFFE_DEBIAN_SHA256="07cf073227494a6b07234e40cb5df91db566616593eef9baafdc4d06ad159f21"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT_PATH="${REPO_ROOT}/dev/build_caffe.sh"
PYTHON="${PYTHON:-${REPO_ROOT}/.venv/bin/python}"
CUDA="${CUDA:-0}"
CAFFE_LEAN="${CAFFE_LEAN:-0}"
CUDA_ARCH="${CUDA_ARCH:-70 75 80 86 89 90}"
RANKIQA_CACHE="${RANKIQA_CACHE:-${HOME}/.cache/rankiqa}"
JOBS="${JOBS:-$(nproc)}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
APT="${APT:-1}"

# Debian/Ubuntu packages the build needs (bookworm / Ubuntu 24.04 names). libopencv-dev is the heavy one
# (it drags in VTK/Qt/GDAL) but it is where OpenCVConfig.cmake lives.
DEB_PACKAGES=(build-essential cmake curl ca-certificates patch xz-utils python3-dev python3-venv
  libboost-dev libboost-filesystem-dev libboost-system-dev libboost-thread-dev libboost-python-dev
  libgflags-dev libgoogle-glog-dev libhdf5-dev liblmdb-dev libleveldb-dev libsnappy-dev
  libopenblas-dev libopencv-dev libprotobuf-dev protobuf-compiler)
# What the lean build (CAFFE_LEAN=1) leaves out.
LEAN_SKIPPED_PACKAGES=" liblmdb-dev libleveldb-dev libsnappy-dev libopencv-dev "

stage() { printf '\n[caffe] == %s ==\n' "$*" >&2; }
info() { printf '[caffe] %s\n' "$*" >&2; }
die() {
  printf '\n[caffe] FAILED: %s\n' "$1" >&2
  shift
  for line in "$@"; do printf '[caffe]   %s\n' "$line" >&2; done
  disk_note
  exit 1
}

# Room a build takes in the cache, MiB. Measured for the CPU build (2 jobs, `du -sb` of the cache every 5 s):
# at most 71 MB, downloads included; twice that, for what sampling and file-system blocks hide. CUDA builds
# take more (not measured): for them it is a floor.
BUILD_SPACE_MB=150
# With less free than this after a failed step, the disk is named as the likely cause: the compiler, tar or
# curl report it in their own words, if at all (into a log that may not have been written either).
LOW_SPACE_MB=16

# Free MiB for an unprivileged user on the file system of $1 (or of its nearest existing parent).
free_mb() {
  local dir="$1"
  while [ ! -e "$dir" ]; do dir="$(dirname "$dir")"; done
  df -Pm "$dir" 2>/dev/null | awk 'NR == 2 { print $4 }'
}

low_space() {
  local free
  free="$(free_mb "$RANKIQA_CACHE")"
  [ -n "$free" ] && [ "$free" -lt "$LOW_SPACE_MB" ]
}

# Said (once) after any failure when the cache's disk is (nearly) full: the likely cause, the room a build
# needs.
disk_noted=0
disk_note() {
  [ "$disk_noted" = 0 ] && low_space || return 0
  disk_noted=1
  printf '[caffe]   %s\n' "The file system of $RANKIQA_CACHE is full ($(free_mb "$RANKIQA_CACHE") MiB free);" \
    "a build needs about $BUILD_SPACE_MB MiB there. Free some space (or set RANKIQA_CACHE to a folder on" \
    "another disk) and run the same command again." >&2
}

missing_packages() {
  local pkg missing=()
  for pkg in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  echo "${missing[@]:-}"
}

install_packages() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    die "this is not a Debian/Ubuntu system (no dpkg)" \
      "Install the equivalents of these Debian packages, then run again:" "${DEB_PACKAGES[*]}"
  fi
  local missing
  missing="$(missing_packages)"
  if [ -z "${missing// /}" ]; then
    # --deps-only and --venv-deps stay quiet here: a build says it under its stage 1/5
    [ "${1:-}" = quiet ] || info "system packages: all ${#DEB_PACKAGES[@]} present"
    return
  fi
  if [ "$APT" != 1 ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    die "missing system packages and no way to install them here (need root and apt-get, APT=1)" \
      "Install them by hand, then run again:" \
      "sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing}"
  fi
  info "installing with apt-get: ${missing}"
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086  # word splitting of the package list is intended
  apt-get update -qq && apt-get install -y -qq --no-install-recommends ${missing} >/dev/null \
    || die "apt-get install failed" "Run by hand: apt-get update && apt-get install -y ${missing}"
}

pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo none; }

python_facts() {
  # version, include dir, libpython, numpy version: all change what pycaffe is built against.
  "$PYTHON" - <<'EOF'
import os, sysconfig, numpy
v = sysconfig.get_config_var
lib = os.path.join(v("LIBDIR") or "", v("LDLIBRARY") or "")
multiarch = v("MULTIARCH") or ""
if not os.path.exists(lib) and multiarch:
    lib = os.path.join(v("LIBDIR"), multiarch, v("LDLIBRARY"))
print(sysconfig.get_python_version())
print(sysconfig.get_paths()["include"])
print(lib)
print(numpy.__version__.split(".")[0])
EOF
}

# ---------------------------------------------------------------------------------------------------
mode=cpu
[ "$CUDA" = 1 ] && mode=cuda
if [ "$CAFFE_LEAN" = 1 ]; then
  [ "$mode" = cuda ] || die "CAFFE_LEAN=1 is for the CUDA build (CUDA=1) of the GPU bundle"
  mode=cuda-lean
  kept=()
  for pkg in "${DEB_PACKAGES[@]}"; do
    [[ "$LEAN_SKIPPED_PACKAGES" == *" $pkg "* ]] || kept+=("$pkg")
  done
  DEB_PACKAGES=("${kept[@]}")
fi

case "${1:-}" in
  --list-deps) echo "${DEB_PACKAGES[*]}"; exit 0 ;;
  --deps-only) install_packages quiet; exit 0 ;;
  --venv-deps)
    # make's venv step: only what a venv needs (python3-venv on a bare Debian). The ONNX path (make export,
    # make predict BACKEND=onnx) needs no Caffe, so not its build packages; the Caffe build checks those in
    # its stage 1/5. Without dpkg (not Debian/Ubuntu), python -m venv says what it lacks itself.
    command -v dpkg-query >/dev/null 2>&1 || exit 0
    DEB_PACKAGES=(python3-venv)
    install_packages quiet; exit 0 ;;
esac

[ -x "$PYTHON" ] || die "Python not found: $PYTHON" "Create the venv first: make venv (or set PYTHON=...)"
# CMake runs in the build folder: make the path absolute, without resolving the venv's symlink (the venv's
# python must stay the one that sees the venv's numpy).
case "$PYTHON" in /*) ;; *) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;; esac
"$PYTHON" -c "import numpy" 2>/dev/null || die "$PYTHON has no numpy" "Install requirements: make venv"

if [ "$mode" != cpu ]; then
  # Everything CUDA-specific lives in dev/build_caffe_cuda.sh, hashed into the CUDA key only, so that
  # changing it never invalidates the CPU build.
  # shellcheck source=dev/build_caffe_cuda.sh
  source "$REPO_ROOT/dev/build_caffe_cuda.sh"
  cuda_prepare
fi

mapfile -t PYF < <(python_facts)
PY_VERSION="${PYF[0]}"; PY_INCLUDE="${PYF[1]}"; PY_LIBRARY="${PYF[2]}"; NUMPY_MAJOR="${PYF[3]}"

key_material() {
  # The recipe part of this script (fixes, CMake options, install layout) without comments: editing the
  # orchestration around it, or a comment, does not force a 7-minute rebuild.
  sed -n '/^# >>> recipe/,/^# <<< recipe/p' "$SCRIPT_PATH" | grep -v '^\s*#' | sha256sum | cut -d' ' -f1
  echo "$CAFFE_DEB_VERSION $CAFFE_ORIG_SHA256 $CAFFE_DEBIAN_SHA256 mode=$mode"
  echo "python=$PY_VERSION $(readlink -f "$PYTHON") numpy=$NUMPY_MAJOR"
  if command -v dpkg-query >/dev/null 2>&1; then
    for p in libprotobuf-dev libboost-dev libopencv-dev libgoogle-glog-dev libhdf5-dev libopenblas-dev; do
      echo "$p=$(pkg_version "$p")"
    done
  fi
  if [ "$mode" != cpu ]; then
    cuda_key_material
  fi
}

# ---------------------------------------------------------------------------------------------------
stage "1/5 system packages"
install_packages

KEY="$(key_material | sha256sum | cut -c1-16)"
PREFIX="${RANKIQA_CACHE}/caffe-${mode}-${KEY}"

if [ "${1:-}" = --print-prefix ]; then
  echo "$PREFIX"
  exit 0
fi

if [ -f "$PREFIX/.complete" ]; then
  info "cached build found: $PREFIX"
  echo "$PREFIX"
  exit 0
fi

mkdir -p "$RANKIQA_CACHE/downloads"
# One build per key at a time: a second `make caffe` (another terminal, a parallel job) waits for the
# first and then finds its result. Holding the lock also means any partial folder of this key is stale
# (a build killed with SIGKILL cannot clean up after itself): remove those.
exec 9>"${RANKIQA_CACHE}/caffe-${mode}-${KEY}.lock"
if ! flock -n 9; then
  info "another build of this key is running; waiting for it"
  flock 9
fi
if [ -f "$PREFIX/.complete" ]; then
  info "cached build found: $PREFIX"
  echo "$PREFIX"
  exit 0
fi
rm -rf "${RANKIQA_CACHE}/caffe-${mode}-${KEY}.partial."*
free="$(free_mb "$RANKIQA_CACHE")"
if [ -n "$free" ] && [ "$free" -lt "$BUILD_SPACE_MB" ]; then
  disk_noted=1
  die "not enough free space in $RANKIQA_CACHE for the Caffe build: it needs about $BUILD_SPACE_MB MiB," \
    "$free MiB free. Free some space (or set RANKIQA_CACHE to a folder on another disk) and run the same" \
    "command again."
fi
WORK="$(mktemp -d "${RANKIQA_CACHE}/caffe-${mode}-${KEY}.partial.XXXXXX")"
# Whatever happens, a half-built tree never takes the prefix's name; it is removed on failure.
cleanup() { rc=$?; [ $rc -ne 0 ] && disk_note && rm -rf "$WORK" && info "removed partial build $WORK"; exit $rc; }
trap cleanup EXIT

stage "2/5 source: Debian caffe ${CAFFE_DEB_VERSION} (bullseye)"
fetch() {
  local name="$1" sha="$2" dest="$RANKIQA_CACHE/downloads/$1"
  if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum -c --status; then
    info "have $name"
    return
  fi
  info "downloading $name"
  curl -fsSL --retry 3 -o "$dest.tmp" "$DEBIAN_MIRROR/pool/main/c/caffe/$name" \
    || die "download failed: $DEBIAN_MIRROR/pool/main/c/caffe/$name" \
      "Check the network or set DEBIAN_MIRROR (e.g. http://archive.debian.org/debian)"
  echo "$sha  $dest.tmp" | sha256sum -c --status \
    || die "checksum mismatch for $name (expected $sha)" "Remove $dest.tmp and check DEBIAN_MIRROR"
  mv "$dest.tmp" "$dest"
}
fetch "$CAFFE_ORIG" "$CAFFE_ORIG_SHA256"
fetch "$CAFFE_DEBIAN" "$CAFFE_DEBIAN_SHA256"

SRC="$WORK/src"
mkdir -p "$SRC"
tar xzf "$RANKIQA_CACHE/downloads/$CAFFE_ORIG" -C "$SRC" --strip-components=0
# The orig tarball has no top-level folder; the Debian tarball adds debian/.
tar xJf "$RANKIQA_CACHE/downloads/$CAFFE_DEBIAN" -C "$SRC"
while read -r patch_name; do
  case "$patch_name" in ''|'#'*) continue ;; esac
  patch -d "$SRC" -p1 --quiet --forward < "$SRC/debian/patches/$patch_name" \
    || die "Debian patch $patch_name did not apply"
done < "$SRC/debian/patches/series"
info "applied Debian's $(grep -cv '^\s*$' "$SRC/debian/patches/series") patches"

# >>> recipe: from here to "<<< recipe" is hashed into the cache key (with the pins and versions).
stage "3/5 fixes for today's toolchain"
# protobuf >= 3.21 has only the one-argument CodedInputStream::SetTotalBytesLimit.
sed -i 's/SetTotalBytesLimit(kProtoReadBytesLimit, 536870912)/SetTotalBytesLimit(kProtoReadBytesLimit)/' \
  "$SRC/src/caffe/util/io.cpp"
# numpy 2 removed ndarray.tostring and binary np.fromstring; scikit-image renamed as_grey to as_gray.
sed -i -e 's/arr\.tostring()/arr.tobytes()/' \
  -e 's/np\.fromstring(datum\.data, dtype=np\.uint8)/np.frombuffer(datum.data, dtype=np.uint8).copy()/' \
  -e 's/as_grey=not color/as_gray=not color/' "$SRC/python/caffe/io.py"
# CUDA 13 removed cudaDeviceProp::clockRate, deviceOverlap and kernelExecTimeoutEnabled (only printed by
# `caffe device_query`); asyncEngineCount replaces deviceOverlap and exists in every CUDA since 4.0.
sed -i -e '/Clock rate:/d' -e 's/prop\.deviceOverlap/prop.asyncEngineCount/' \
  -e 's/(prop\.kernelExecTimeoutEnabled ? "Yes" : "No")/"(not reported)"/' "$SRC/src/caffe/common.cpp"
# Relocatable install: libraries found next to the binaries, so the prefix can be moved (and carried).
sed -i 's|set(CMAKE_INSTALL_RPATH ${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR})|set(CMAKE_INSTALL_RPATH "$ORIGIN/../lib;$ORIGIN/../../lib")|' \
  "$SRC/cmake/Misc.cmake"
# pycaffe's NCCL.new_uid() built its bytes with PyBytes_FromString, which stops at the first zero byte of
# the 128-byte NCCL id (BVLC/caffe#6600, fix of PR #6661): multi-GPU runs from Python 3 got a truncated id.
sed -i 's/PyBytes_FromString(uid.c_str())/PyBytes_FromStringAndSize(uid.data(), uid.size())/' \
  "$SRC/python/caffe/_caffe.cpp"
grep -q 'SetTotalBytesLimit(kProtoReadBytesLimit)' "$SRC/src/caffe/util/io.cpp" || die "io.cpp fix did not apply"
grep -q 'PyBytes_FromStringAndSize(uid.data()' "$SRC/python/caffe/_caffe.cpp" || die "_caffe.cpp fix did not apply"
grep -q 'tobytes' "$SRC/python/caffe/io.py" || die "io.py fix did not apply"
grep -q 'ORIGIN' "$SRC/cmake/Misc.cmake" || die "RPATH fix did not apply"

stage "4/5 configure and build ($mode, $JOBS jobs)"
CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=Release -DBLAS=Open -DUSE_CUDNN=OFF -DUSE_NCCL=OFF
  -DBUILD_python=ON -DBUILD_python_layer=ON -Dpython_version=3 -DBUILD_docs=OFF -DBUILD_matlab=OFF
  -DPYTHON_EXECUTABLE="$PYTHON" -DPYTHON_INCLUDE_DIR="$PY_INCLUDE" -DPYTHON_LIBRARY="$PY_LIBRARY"
  -DCMAKE_INSTALL_PREFIX="$WORK/install")
if [ "$mode" = cpu ]; then
  CMAKE_ARGS+=(-DCPU_ONLY=ON)
else
  cuda_cmake_args
fi
BUILD="$WORK/build"
mkdir -p "$BUILD"
log="$WORK/build.log"
# FindCUDA clears cuBLAS/cuRAND cache entries on the first configure; a second configure keeps them.
( cd "$BUILD" && cmake "${CMAKE_ARGS[@]}" "$SRC" && cmake "${CMAKE_ARGS[@]}" "$SRC" ) >"$log" 2>&1 \
  || { tail -n 30 "$log" >&2; die "CMake configure failed (log: $log)" "Check the -dev packages: $0 --list-deps"; }
info "configured; compiling (about 7 minutes on 2 cores for the CPU build)"
start=$SECONDS
( cd "$BUILD" && make -j"$JOBS" ) >>"$log" 2>&1 \
  || { grep -n -m 5 'error' "$log" >&2 || true; tail -n 20 "$log" >&2; trap - EXIT; die "compile failed (full log kept: $log)" \
    "Remove $WORK when done reading it."; }
info "compiled in $((SECONDS - start)) s"

stage "5/5 install and smoke test"
( cd "$BUILD" && cmake --install . ) >>"$log" 2>&1 || die "install step failed (log: $log)"
STAGE_DIR="$WORK/install"
# Debian's cmake-fix-python-module-installdir patch installs the module into lib/python3/dist-packages;
# move it to python/caffe, where the relocatable RPATH ($ORIGIN/../../lib) finds libcaffe.
mkdir -p "$STAGE_DIR/python"
mv "$STAGE_DIR/lib/python3/dist-packages/caffe" "$STAGE_DIR/python/caffe" || die "pycaffe was not installed"
rm -rf "$STAGE_DIR/lib/python3"
# Caffe's own Python unit tests are not installed by CMake; keep them for `make test`.
cp -r "$SRC/python/caffe/test" "$STAGE_DIR/python/caffe/test"
# <<< recipe
caffe_version="$(PYTHONPATH="$STAGE_DIR/python" "$PYTHON" -c \
  "import caffe; assert 'Python' in caffe.layer_type_list(), 'no Python layer'; print(caffe.__version__)")" \
  || die "smoke test failed: import caffe from $STAGE_DIR/python"
info "pycaffe $caffe_version imports; Python layer registered"
cat > "$STAGE_DIR/BUILD_INFO" <<EOF
caffe debian source ${CAFFE_DEB_VERSION} (pycaffe reports ${caffe_version})
mode ${mode}$([ "$mode" != cpu ] && echo " arch ${CUDA_ARCH}")
python ${PY_VERSION} $(readlink -f "$PYTHON")
key ${KEY}
built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - start)) s with ${JOBS} jobs
EOF
key_material >> "$STAGE_DIR/BUILD_INFO"
touch "$STAGE_DIR/.complete"
rm -rf "$PREFIX"
mv "$STAGE_DIR" "$PREFIX"
rm -rf "$WORK"
trap - EXIT
info "done: $PREFIX"
echo "$PREFIX"
