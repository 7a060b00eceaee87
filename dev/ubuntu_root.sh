# shellcheck shell=bash
# An Ubuntu 24.04 (noble) root made with debootstrap, for the builds that must match an Ubuntu machine this
# Debian one cannot be: the GPU bundle (gpu/bundle.sh) and the replay of the Dockerfile
# (dev/docker_replay.sh). Sourced (function definitions and settings only); the caller defines info/die.
#
#   ur_enter_namespace SCRIPT ARGS...  re-run SCRIPT in a mount namespace of its own (once): every bind
#                                      mount vanishes with the process, even a killed one, and none reaches
#                                      the host's mount table
#   ur_host_checks                     root, nvcc (sets NVCC_ROOT), debootstrap (installed if missing)
#   ur_debootstrap DIR LOG             a minimal noble root in DIR (keyring pinned by SHA-256), apt sources
#   ur_mount_base ROOT                 /proc, /dev, /dev/pts, the CUDA toolkit (read-only, same path), this
#                                      machine's certificate authorities and resolv.conf
#   ur_bind SRC DEST [ro]              one more bind mount, undone by ur_unmount_all (on EXIT)
#   ur_in_root ROOT COMMAND...         run COMMAND inside with a clean environment (nothing of this
#                                      machine's pip or Python settings leaks in)
#   ur_safe_remove DIR                 rm -rf, refused while anything is mounted inside DIR
# Needs: bash, root, debootstrap, unshare, chroot; network to the Ubuntu archive.

UR_SUITE=noble
UR_KEYRING_DEB="ubuntu-keyring_2023.11.28.1_all.deb"
UR_KEYRING_SHA256="36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8"
UBUNTU_MIRROR="${UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}"
UR_MOUNTED=()

ur_enter_namespace() {
  local script="$1"
  shift
  [ "$(id -u)" = 0 ] || die "needs root: debootstrap, chroot and bind mounts (run it with sudo)"
  if [ -z "${RANKIQA_UR_NAMESPACE:-}" ]; then
    exec unshare --mount --propagation private env RANKIQA_UR_NAMESPACE=1 bash "$script" "$@"
  fi
}

ur_host_checks() {
  [ "$(id -u)" = 0 ] || die "needs root: debootstrap, chroot and bind mounts (run it with sudo)"
  command -v nvcc >/dev/null 2>&1 || die "nvcc is not on PATH (the CUDA toolkit that compiles the build)"
  # shellcheck source=dev/build_caffe_cuda.sh
  source "$REPO_ROOT/dev/build_caffe_cuda.sh"  # function definitions only: nvcc_root
  NVCC_ROOT="$(nvcc_root)"
  [ -x "$NVCC_ROOT/bin/nvcc" ] || die "cannot locate the CUDA toolkit of nvcc (got '$NVCC_ROOT')"
  if ! command -v debootstrap >/dev/null 2>&1; then
    info "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
      || die "apt-get install debootstrap failed"
  fi
}

ur_debootstrap() { # DIR LOG
  local dir="$1" log="$2" keyring="$RANKIQA_CACHE/downloads/$UR_KEYRING_DEB" keydir
  mkdir -p "$RANKIQA_CACHE/downloads"
  if ! echo "$UR_KEYRING_SHA256  $keyring" | sha256sum -c --status 2>/dev/null; then
    local tmp
    tmp="$(mktemp "$keyring.XXXXXX")"  # a name of its own: gpu-bundle and docker-replay may both download
    curl -fsSL --retry 3 -o "$tmp" "$UBUNTU_MIRROR/pool/main/u/ubuntu-keyring/$UR_KEYRING_DEB" \
      || { rm -f "$tmp"; die "download failed: $UBUNTU_MIRROR/pool/main/u/ubuntu-keyring/$UR_KEYRING_DEB"; }
    echo "$UR_KEYRING_SHA256  $tmp" | sha256sum -c --status \
      || { rm -f "$tmp"; die "checksum mismatch: $UR_KEYRING_DEB"; }
    mv "$tmp" "$keyring"
  fi
  keydir="$(mktemp -d)"
  dpkg-deb -x "$keyring" "$keydir"
  # bookworm's debootstrap predates noble; every Ubuntu suite uses the "gutsy" script.
  debootstrap --variant=minbase --keyring="$keydir/usr/share/keyrings/ubuntu-archive-keyring.gpg" \
    --include=ca-certificates "$UR_SUITE" "$dir" "$UBUNTU_MIRROR" /usr/share/debootstrap/scripts/gutsy \
    >"$log" 2>&1 || { rm -rf "$keydir"; die "debootstrap failed (log: $log)"; }
  rm -rf "$keydir"
  printf 'deb %s %s main universe\n' "$UBUNTU_MIRROR" "$UR_SUITE" "$UBUNTU_MIRROR" "$UR_SUITE-updates" \
    "$UBUNTU_MIRROR" "$UR_SUITE-security" >"$dir/etc/apt/sources.list"
}

ur_bind() { # SRC DEST [ro]
  mkdir -p "$2"
  mount --bind "$1" "$2"
  UR_MOUNTED+=("$2")
  if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}

ur_unmount_all() {
  local i
  for ((i = ${#UR_MOUNTED[@]} - 1; i >= 0; i--)); do
    umount "${UR_MOUNTED[i]}" 2>/dev/null || umount -l "${UR_MOUNTED[i]}" || true
  done
  UR_MOUNTED=()
}

ur_mounts_under() { # findmnt -l prints targets as they are (/proc/mounts writes a space as \040)
  findmnt -ln -o TARGET | UR_UNDER="$1/" awk 'index($0 "/", ENVIRON["UR_UNDER"]) == 1'
}

ur_safe_remove() {
  [ -z "$(ur_mounts_under "$1")" ] \
    || die "not removing $1: still mounted inside it: $(ur_mounts_under "$1" | tr '\n' ' ')"
  rm -rf "$1"
}

ur_mount_base() { # ROOT
  ur_bind /proc "$1/proc"
  ur_bind /dev "$1/dev"
  mkdir -p "$1/dev/pts"
  mount -t devpts devpts "$1/dev/pts" && UR_MOUNTED+=("$1/dev/pts")
  ur_bind "$NVCC_ROOT" "$1$NVCC_ROOT" ro
  # This machine's certificate authorities (a proxy's, say) for pip and apt inside the root: the bundle file
  # now, and the local ones where the root's update-ca-certificates (run when apt touches ca-certificates)
  # will find them again.
  # --remove-destination: a symbolic link there is replaced, never followed out of the root.
  cp --remove-destination /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/ca-certificates.crt" \
    2>/dev/null || true
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$1/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/"
  fi
  cp --remove-destination /etc/resolv.conf "$1/etc/resolv.conf"
}

ur_in_root() { # ROOT COMMAND...
  local root="$1"
  shift
  chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    PATH="$NVCC_ROOT/bin:/usr/sbin:/usr/bin:/sbin:/bin" PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 "$@"
}
