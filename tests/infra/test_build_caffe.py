"""dev/build_caffe.sh: the cache is found again, and a machine that cannot install packages gets a
clear message with the exact packages, a non-zero exit and nothing left in the cache."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.small_fs import small_fs

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "dev" / "build_caffe.sh"


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)


def test_list_deps_names_the_debian_packages():
    proc = run_script("--list-deps", env=dict(os.environ))
    assert proc.returncode == 0
    packages = proc.stdout.split()
    for needed in ("libboost-python-dev", "libprotobuf-dev", "protobuf-compiler", "libopenblas-dev"):
        assert needed in packages


def test_without_apt_it_prints_the_install_line_and_leaves_no_cache(tmp_path):
    # A dpkg-query that knows no package: every build dependency looks missing. APT=0 forbids apt-get,
    # as on a machine where the user is not root.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    stub = fake_bin / "dpkg-query"
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    cache = tmp_path / "cache"
    env = dict(os.environ, PATH=f"{fake_bin}:{os.environ['PATH']}", APT="0", RANKIQA_CACHE=str(cache),
               PYTHON=sys.executable)
    proc = run_script(env=env)
    assert proc.returncode != 0
    assert "FAILED: missing system packages" in proc.stderr
    assert "apt-get install -y --no-install-recommends" in proc.stderr
    assert "libboost-python-dev" in proc.stderr and "libopencv-dev" in proc.stderr
    assert not cache.exists() or not any(cache.iterdir())


def test_missing_python_is_reported(tmp_path):
    env = dict(os.environ, PYTHON=str(tmp_path / "no-python"), RANKIQA_CACHE=str(tmp_path / "cache"))
    proc = run_script(env=env)
    assert proc.returncode != 0
    assert "Python not found" in proc.stderr


@pytest.mark.caffe
def test_second_run_finds_the_cached_build():
    caffe = pytest.importorskip("caffe")
    prefix = Path(caffe.__file__).resolve().parents[2]
    env = dict(os.environ, PYTHON=str(REPO / ".venv" / "bin" / "python"),
               RANKIQA_CACHE=str(prefix.parent))
    # --print-prefix only computes the key: if the recipe changed since the venv's build, say so rather
    # than start a 7-minute build inside the test.
    expected = run_script("--print-prefix", env=env).stdout.strip().splitlines()[-1]
    assert expected == str(prefix), f"the venv's pycaffe ({prefix}) is not the current recipe's: make caffe"
    proc = run_script(env=env)
    assert proc.returncode == 0, proc.stderr
    assert "cached build found" in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(prefix)


def test_dockerfile_copies_every_file_the_caffe_build_uses_before_building():
    """The image builds Caffe from a few copied files (so code changes do not rebuild it): each file the
    build script sources or runs must be among them, or `docker build` fails where CI cannot see it."""
    import re

    lines = (REPO / "Dockerfile").read_text().splitlines()
    build_at = next(i for i, line in enumerate(lines) if line.startswith("RUN make caffe"))
    copied: set[str] = set()
    for line in lines[:build_at]:
        if line.startswith("COPY "):
            *sources, dest = line.split()[1:]
            copied.update(sources)
    scripts = {"dev/build_caffe.sh"}
    for script in sorted(scripts):
        text = (REPO / script).read_text()
        scripts |= set(re.findall(r"\$REPO_ROOT/(dev/[\w.]+\.sh)", text))
    scripts |= {m for s in list(scripts) for m in re.findall(r"\$REPO_ROOT/(dev/[\w.]+\.sh)",
                                                            (REPO / s).read_text())}
    needed = scripts | {"requirements.txt", "Makefile"}
    assert needed <= copied, f"not copied before `RUN make caffe`: {sorted(needed - copied)}"


def test_lean_build_drops_the_libraries_the_bundle_does_not_need():
    full = run_script("--list-deps", env=dict(os.environ, CUDA="1")).stdout.split()
    lean = run_script("--list-deps", env=dict(os.environ, CUDA="1", CAFFE_LEAN="1")).stdout.split()
    dropped = set(full) - set(lean)
    assert dropped == {"libopencv-dev", "libleveldb-dev", "liblmdb-dev", "libsnappy-dev"}
    assert set(lean) < set(full) and "libboost-python-dev" in lean and "libhdf5-dev" in lean


def test_lean_without_cuda_is_refused(tmp_path):
    proc = run_script("--list-deps", env=dict(os.environ, CAFFE_LEAN="1", RANKIQA_CACHE=str(tmp_path)))
    assert proc.returncode != 0
    assert "CAFFE_LEAN=1 is for the CUDA build (CUDA=1)" in proc.stderr


def _build_env(cache: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHON=str(REPO / ".venv" / "bin" / "python"), RANKIQA_CACHE=str(cache),
                APT="0", **extra)


def test_a_cache_without_room_for_a_build_is_refused_before_it_starts(tmp_path):
    with small_fs(tmp_path / "fs", 1 << 20) as fs:
        proc = run_script(env=_build_env(fs / "cache"))
        assert proc.returncode == 1
        assert (f"FAILED: not enough free space in {fs / 'cache'} for the Caffe build: it needs about "
                "150 MiB," in proc.stderr)
        assert "MiB free. Free some space (or set RANKIQA_CACHE" in proc.stderr
        assert not list((fs / "cache").glob("*.partial.*")) and not list((fs / "cache").glob("caffe-*/"))


def test_a_build_step_failing_on_a_full_disk_says_so_and_removes_the_partial_build(tmp_path):
    # The disk fills while the build runs (here: while fetching the source, shrunk by a stand-in curl):
    # the step's own error is followed by the reason and what a build needs.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    with small_fs(tmp_path / "fs", 200 << 20) as fs:  # room for the check; a tmpfs holds only what is written
        curl = fake_bin / "curl"
        curl.write_text(f"#!/bin/sh\nmount -o remount,size=64k '{fs}'\n"
                        "echo 'curl: (23) Failure writing output to destination' >&2\nexit 23\n")
        curl.chmod(0o755)
        proc = run_script(env=_build_env(fs / "cache", PATH=f"{fake_bin}:{os.environ['PATH']}"))
        assert proc.returncode == 1
        assert "FAILED: download failed" in proc.stderr
        assert re.search(f"The file system of {re.escape(str(fs / 'cache'))} is full \\([01] MiB free\\);\n"
                         r"\[caffe\]   a build needs about 150 MiB there\.", proc.stderr), proc.stderr
        assert proc.stderr.count("The file system of") == 1
        assert not list((fs / "cache").glob("*.partial.*"))
