#!/usr/bin/env bash
# `make docker-replay`: the Dockerfile's steps, replayed without Docker (there is no Docker engine where this
# project is developed), in a fresh Ubuntu 24.04 root: the image's own base system.
#
# What differs from `docker build`, and why:
#   - FROM nvidia/cuda:<version>-devel-ubuntu24.04 becomes a fresh `debootstrap --variant=minbase noble` root
#     (dev/ubuntu_root.sh) with this machine's CUDA toolkit bind-mounted read-only at its own path and
#     linked as /usr/local/cuda (Docker Hub is not reachable; the toolkit's version is this machine's, CUDA
#     13.0 here against the image's 12.6, and NVIDIA's devel image also brings NCCL, which this one lacks).
#   - CUDA_ARCH: DOCKER_REPLAY_CUDA_ARCH (default 90) replaces the Dockerfile's list, one architecture
#     instead of six (each costs about 6 minutes of compiling on 2 cores); `DOCKER_REPLAY_CUDA_ARCH=` keeps
#     the Dockerfile's.
#   - COPY of the build context: the files of the checkout minus .dockerignore, as Docker sends them
#     (dev/docker_replay.py context).
#   - RUN steps run with /bin/sh -c in the step's WORKDIR with the ENV so far (plus the image's PATH).
# Then the check that the image is usable: pycaffe imports from the venv the build made, and
# `tools.gpu_check --cpu-smoke` passes (DOCKER_REPLAY_CHECK overrides the command, run like a RUN step).
# Every run starts from a fresh root (as `docker build --no-cache`); after a successful replay it is removed
# unless DOCKER_REPLAY_KEEP=1, after a failure it is kept for a look (about 2 GB) until the next run.
# Needs root, nvcc, network to the Ubuntu archive and PyPI. About 7 minutes on 2 cores.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RANKIQA_CACHE="${RANKIQA_CACHE:-${HOME}/.cache/rankiqa}"
DOCKER_REPLAY_CUDA_ARCH="${DOCKER_REPLAY_CUDA_ARCH-90}"
# The check: pycaffe imports, and the GPU check's CPU smoke run (our data and loss layers, training through
# tools/train.py, `caffe time`) passes with the image's build.
DOCKER_REPLAY_CHECK="${DOCKER_REPLAY_CHECK:-.venv/bin/python -c 'import caffe, sys; print(\"pycaffe\", \
caffe.__version__, \"on Python\", sys.version.split()[0], \"from\", caffe.__file__)' \
&& .venv/bin/python -m tools.gpu_check --cpu-smoke --out /tmp/replay_check/gpu_check.json}"
PYTHON="${PYTHON:-python3}"

info() { printf '[docker-replay] %s\n' "$*" >&2; }
die() { printf '[docker-replay] FAILED: %s\n' "$*" >&2; exit 1; }
# shellcheck source=dev/ubuntu_root.sh
source "$REPO_ROOT/dev/ubuntu_root.sh"

cd "$REPO_ROOT"
# Read before anything is built: a Dockerfile the replay cannot follow stops here, naming the line.
steps="$("$PYTHON" -m dev.docker_replay steps --dockerfile Dockerfile)" || die "cannot replay the Dockerfile"
ur_enter_namespace "$REPO_ROOT/dev/docker_replay.sh" "$@"
ur_host_checks

ROOT="$RANKIQA_CACHE/docker-replay"
mkdir -p "$RANKIQA_CACHE"
exec 8>"$ROOT.lock"
flock -n 8 || { info "another replay is running; waiting for it"; flock 8; }
trap ur_unmount_all EXIT
ur_safe_remove "$ROOT"
start=$SECONDS

env_vars=("HOME=/root" "LANG=C.UTF-8"
  "PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
workdir=/
set_env() { # KEY VALUE: replace or add
  local i
  for i in "${!env_vars[@]}"; do
    if [ "${env_vars[i]%%=*}" = "$1" ]; then env_vars[i]="$1=$2"; return; fi
  done
  env_vars+=("$1=$2")
}
run_in_image() { # LINE COMMAND
  info "Dockerfile:$1: RUN $2"
  # stdin from /dev/null as in Docker (here it would be the rest of the step list); the folder and the
  # command reach sh as arguments, unquoted nowhere.
  chroot "$ROOT" /usr/bin/env -i "${env_vars[@]}" /bin/sh -c 'cd "$1" && exec /bin/sh -c "$2"' sh \
    "$workdir" "$2" </dev/null || die "Dockerfile:$1: RUN failed: $2"
}

while IFS=$'\t' read -r line kind first rest; do
  case "$kind" in
    FROM)
      case "$first" in
        *ubuntu24.04*) ;;
        *) die "Dockerfile:$line: FROM $first: the replay makes Ubuntu 24.04 roots only" ;;
      esac
      info "Dockerfile:$line: FROM $first -> debootstrap noble"
      ur_debootstrap "$ROOT" "$ROOT.debootstrap.log"
      ur_mount_base "$ROOT"
      ln -sfn "$NVCC_ROOT" "$ROOT/usr/local/cuda"
      ;;
    ENV)
      value="$rest"
      if [ "$first" = CUDA_ARCH ] && [ -n "$DOCKER_REPLAY_CUDA_ARCH" ]; then
        info "Dockerfile:$line: ENV CUDA_ARCH=\"$value\" replayed as \"$DOCKER_REPLAY_CUDA_ARCH\"" \
          "(DOCKER_REPLAY_CUDA_ARCH)"
        value="$DOCKER_REPLAY_CUDA_ARCH"
      fi
      set_env "$first" "$value"
      ;;
    WORKDIR)
      workdir="$first"
      mkdir -p "$ROOT$workdir"
      ;;
    COPY)
      dest="$first"
      case "$dest" in /*) ;; *) dest="$workdir/$dest" ;; esac
      IFS=$'\t' read -r -a sources <<<"$rest"
      for source in "${sources[@]}"; do
        if [ "$source" = . ]; then
          info "Dockerfile:$line: COPY . $first (the build context)"
          mkdir -p "$ROOT$dest"
          "$PYTHON" -m dev.docker_replay context --root "$REPO_ROOT" \
            | tar -C "$REPO_ROOT" -cf - --no-recursion -T - | tar -C "$ROOT$dest" -xf -
        else
          [ -f "$REPO_ROOT/$source" ] || die "Dockerfile:$line: COPY $source: no such file in the context" \
            "(folders other than . are not replayed)"
          case "$first" in */) mkdir -p "$ROOT$dest" ;; esac
          cp -a "$REPO_ROOT/$source" "$ROOT$dest"
        fi
      done
      ;;
    RUN) run_in_image "$line" "$first" ;;
    SKIP) info "Dockerfile:$line: $first (not replayed: it builds nothing)" ;;
    *) die "Dockerfile:$line: unexpected step $kind" ;;
  esac
done <<<"$steps"

run_in_image "check" "$DOCKER_REPLAY_CHECK"
info "replayed in $((SECONDS - start)) s"
ur_unmount_all
if [ "${DOCKER_REPLAY_KEEP:-0}" != 1 ]; then ur_safe_remove "$ROOT"; fi
