"""gpu/bundle.py: what is carried, what is left to the GPU machine, and a bundle that cannot be used
is refused with the file named and nothing half-written."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from gpu import bundle as gpu_bundle
from gpu.bundle import BundleError
from tests.caffe_marks import needs_caffe

REPO = Path(__file__).resolve().parents[2]

LDD_SAMPLE = """\
\tlinux-vdso.so.1 (0x00007ffd2b7f4000)
\tlibcaffe.so.1.0.0 => /opt/caffe/lib/libcaffe.so.1.0.0 (0x00007f3e1c000000)
\tlibboost_python312.so.1.83.0 => /lib/x86_64-linux-gnu/libboost_python312.so.1.83.0 (0x00007f3e1bf00000)
\tlibcublas.so.13 => not found
\tlibcurand.so.10 => not found
\tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f3e1bc00000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3e1b800000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f3e1c600000)
"""


def test_parse_ldd_separates_resolved_and_missing():
    resolved, missing = gpu_bundle.parse_ldd(LDD_SAMPLE, "x")
    assert resolved["libboost_python312.so.1.83.0"] == "/lib/x86_64-linux-gnu/libboost_python312.so.1.83.0"
    assert resolved["libc.so.6"] == "/lib/x86_64-linux-gnu/libc.so.6"
    assert "linux-vdso.so.1" not in resolved and len(resolved) == 4
    assert missing == ["libcublas.so.13", "libcurand.so.10"]


def test_parse_ldd_refuses_what_it_does_not_understand():
    with pytest.raises(BundleError, match="unexpected ldd line for obj.so"):
        gpu_bundle.parse_ldd("\tlibfoo.so.1 => ??? (0x1)\n", "obj.so")


def test_classify_keeps_glibc_and_cuda_out_of_the_bundle():
    carried, cuda, system = gpu_bundle.classify([
        "libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2",
        "libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libcuda.so.1",
        "libboost_python312.so.1.83.0", "libcurl-gnutls.so.4", "libhdf5_serial.so.103", "libcrypt.so.1",
        "libmvec.so.1"])
    assert system == ["ld-linux-x86-64.so.2", "libc.so.6", "libgcc_s.so.1", "libm.so.6", "libstdc++.so.6"]
    assert cuda == ["libcublas.so.13", "libcublasLt.so.13", "libcuda.so.1", "libcudart.so.13",
                    "libcurand.so.10"]
    # Names that merely start like a runtime's (libcrypt, libmvec, libcurl) are carried, not dropped.
    assert carried == ["libboost_python312.so.1.83.0", "libcrypt.so.1", "libcurl-gnutls.so.4",
                       "libhdf5_serial.so.103", "libmvec.so.1"]


def fake_prefix(root: Path, python: str = "3.12") -> Path:
    """A prefix laid out like dev/build_caffe.sh's, made of real ELF files of this machine (so that ldd
    answers): bin/caffe, libcaffe and _caffe.so are copies of Python's ssl module."""
    import _ssl

    prefix = root / "prefix"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "lib").mkdir()
    (prefix / "python" / "caffe" / "test").mkdir(parents=True)
    shutil.copy(_ssl.__file__, prefix / "bin" / "caffe")
    shutil.copy(_ssl.__file__, prefix / "lib" / "libcaffe.so.1.0.0")
    (prefix / "lib" / "libcaffe.so").symlink_to("libcaffe.so.1.0.0")
    (prefix / "lib" / "libcaffeproto.a").write_bytes(b"!<arch>\n")
    shutil.copy(_ssl.__file__, prefix / "python" / "caffe" / "_caffe.so")
    (prefix / "python" / "caffe" / "__init__.py").write_text("")
    (prefix / "python" / "caffe" / "test" / "test_net.py").write_text("")
    (prefix / "BUILD_INFO").write_text(f"mode cuda-lean arch 90\npython {python} /usr/bin/python{python}\n")
    return prefix


def ssl_libraries() -> set[str]:
    import _ssl

    resolved, _ = gpu_bundle.parse_ldd(gpu_bundle.ldd(Path(_ssl.__file__)), "_ssl")
    return set(resolved)


@pytest.mark.skipif(shutil.which("ldd") is None, reason="no ldd")
def test_pack_carries_the_build_and_its_libraries_but_not_glibc(tmp_path):
    out = tmp_path / "out" / "gpu-bundle.tar.xz"
    manifest = gpu_bundle.pack(fake_prefix(tmp_path), out, max_mib=48, preset=0)
    assert manifest["python"] == "3.12"
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
    for member in ("bin/caffe", "lib/libcaffe.so.1.0.0", "lib/libcaffe.so", "python/caffe/_caffe.so",
                   "python/caffe/__init__.py", "BUILD_INFO", "MANIFEST.json"):
        assert f"gpu-bundle/{member}" in names
    assert "gpu-bundle/python/caffe/test" not in names  # Caffe's own tests stay behind
    assert "gpu-bundle/lib/libcaffeproto.a" not in names
    lib_names = {Path(n).name for n in names if n.startswith("gpu-bundle/lib/")}
    assert "libc.so.6" not in lib_names
    expected = {name for name in ssl_libraries() if not gpu_bundle.SYSTEM_LIBRARY.match(name)}
    assert expected, "the ssl module links libssl/libcrypto on every Linux Python"
    assert expected <= lib_names
    assert set(manifest["carried_libraries"]) == expected
    assert "libc.so.6" in manifest["system_libraries"]


@pytest.mark.skipif(shutil.which("ldd") is None, reason="no ldd")
def test_pack_over_the_size_limit_leaves_nothing(tmp_path):
    out = tmp_path / "gpu-bundle.tar.xz"
    with pytest.raises(BundleError, match=r"over the 0\.001 MiB allowed.*largest libraries"):
        gpu_bundle.pack(fake_prefix(tmp_path), out, max_mib=0.001, preset=0)
    assert list(tmp_path.glob("*gpu-bundle*")) == []


def test_pack_of_an_unfinished_prefix_names_what_is_missing(tmp_path):
    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    with pytest.raises(BundleError, match=r"bin/caffe: not found"):
        gpu_bundle.pack(prefix, tmp_path / "b.tar.xz", max_mib=48)


def write_bundle(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:xz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def manifest_bytes(**extra) -> bytes:
    manifest = {"python": f"{sys.version_info.major}.{sys.version_info.minor}", "carried_libraries": [],
                "cuda_libraries": [], **extra}
    return json.dumps(manifest).encode()


def test_unpack_never_replaces_a_folder_that_is_not_a_bundle(tmp_path):
    bundle = tmp_path / "b.tar.xz"
    write_bundle(bundle, {"gpu-bundle/MANIFEST.json": manifest_bytes(), "gpu-bundle/lib/libx.so.1": b"x"})
    dest = tmp_path / "home"
    dest.mkdir()
    (dest / "thesis.tex").write_text("a user's work")
    with pytest.raises(BundleError, match="exists and is not an unpacked bundle"):
        gpu_bundle.unpack(bundle, dest)
    assert (dest / "thesis.tex").read_text() == "a user's work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar.xz", "home"]


def test_unpack_replaces_an_earlier_unpack(tmp_path):
    bundle = tmp_path / "b.tar.xz"
    write_bundle(bundle, {"gpu-bundle/MANIFEST.json": manifest_bytes(), "gpu-bundle/lib/libx.so.1": b"x"})
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "MANIFEST.json").write_bytes(manifest_bytes())
    (dest / "stale").write_text("from an older bundle")
    gpu_bundle.unpack(bundle, dest)
    assert (dest / "lib" / "libx.so.1").read_bytes() == b"x"
    assert not (dest / "stale").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar.xz", "dest"]  # no partial folder left


@pytest.mark.parametrize("member", ["../evil", "gpu-bundle/../../evil", "other/file"])
def test_unpack_refuses_members_outside_the_bundle(tmp_path, member):
    bundle = tmp_path / "b.tar.xz"
    write_bundle(bundle, {"gpu-bundle/MANIFEST.json": manifest_bytes(), member: b"x"})
    with pytest.raises(BundleError, match=str(bundle)):
        gpu_bundle.unpack(bundle, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() and not (tmp_path.parent / "evil").exists()


def test_unpack_of_a_broken_file_names_it(tmp_path):
    bundle = tmp_path / "b.tar.xz"
    bundle.write_bytes(b"not a tar file")
    with pytest.raises(BundleError, match=rf"{bundle}: not a readable bundle"):
        gpu_bundle.unpack(bundle, tmp_path / "dest")
    with pytest.raises(BundleError, match="no such bundle; make it with `make gpu-bundle`"):
        gpu_bundle.unpack(tmp_path / "missing.tar.xz", tmp_path / "dest")


def test_unpack_without_manifest_is_refused(tmp_path):
    bundle = tmp_path / "b.tar.xz"
    write_bundle(bundle, {"gpu-bundle/lib/libx.so.1": b"x"})
    with pytest.raises(BundleError, match=r"MANIFEST.json: missing"):
        gpu_bundle.unpack(bundle, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def unpacked(tmp_path: Path, **manifest) -> Path:
    dest = tmp_path / "dest"
    (dest / "lib").mkdir(parents=True)
    (dest / "MANIFEST.json").write_bytes(manifest_bytes(**manifest))
    return dest


def test_env_finds_the_cuda_libraries_in_the_given_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("RANKIQA_CUDA_LIB_PATH", raising=False)
    monkeypatch.setenv("LD_LIBRARY_PATH", "/already/there")
    cuda = tmp_path / "cuda" / "lib"
    cuda.mkdir(parents=True)
    for name in ("libcublas.so.13", "libcurand.so.10"):
        (cuda / name).write_bytes(b"")
    dest = unpacked(tmp_path, cuda_libraries=["libcublas.so.13", "libcurand.so.10"])
    lines = gpu_bundle.env_lines(dest, [str(cuda)])
    assert lines[0] == f"export LD_LIBRARY_PATH={dest / 'lib'}:{cuda}:/already/there"
    assert lines[1].startswith(f"export PYTHONPATH={dest / 'python'}")
    assert lines[2].startswith(f"export PATH={dest / 'bin'}:")


def test_env_names_the_cuda_libraries_it_cannot_find(tmp_path, monkeypatch):
    monkeypatch.delenv("RANKIQA_CUDA_LIB_PATH", raising=False)
    monkeypatch.setattr(gpu_bundle, "ldconfig_paths", dict)
    dest = unpacked(tmp_path, cuda_libraries=["libcublas.so.99-not-a-real-version"])
    with pytest.raises(BundleError, match=r"CUDA libraries not found: libcublas\.so\.99-not-a-real-version"):
        gpu_bundle.env_lines(dest, [])


def test_env_leaves_the_driver_to_the_system_loader(tmp_path, monkeypatch):
    monkeypatch.delenv("RANKIQA_CUDA_LIB_PATH", raising=False)
    monkeypatch.setattr(gpu_bundle, "ldconfig_paths", lambda: {"libcuda.so.1": Path("/usr/lib/libcuda.so.1")})
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    dest = unpacked(tmp_path, cuda_libraries=["libcuda.so.1"])
    assert gpu_bundle.env_lines(dest, [])[0] == f"export LD_LIBRARY_PATH={dest / 'lib'}"


def test_env_refuses_a_bundle_for_another_python(tmp_path):
    dest = unpacked(tmp_path, python="2.7")
    with pytest.raises(BundleError, match=r"pycaffe is for Python 2\.7, this is Python 3\."):
        gpu_bundle.env_lines(dest, [])


@pytest.mark.slow
@needs_caffe
def test_cpu_build_packed_unpacked_and_imported(tmp_path):
    """The whole round trip on this machine's real CPU build: the unpacked bundle's pycaffe is the one
    imported (not the venv's), with the Python layer, by a fresh interpreter that only has the exports."""
    import caffe

    prefix = Path(caffe.__file__).resolve().parents[2]
    bundle = tmp_path / "gpu-bundle.tar"  # uncompressed: the full CPU build carries ~150 libraries
    manifest = gpu_bundle.pack(prefix, bundle, max_mib=1000)
    assert any(name.startswith("libboost_python") for name in manifest["carried_libraries"])
    dest = tmp_path / "unpacked"
    gpu_bundle.unpack(bundle, dest)
    exports = "\n".join(gpu_bundle.env_lines(dest, []))
    probe = ("import caffe; assert 'Python' in caffe.layer_type_list(); print(caffe.__file__)")
    proc = subprocess.run(["bash", "-c", f'{exports}\n"{sys.executable}" -c "{probe}"'], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, GLOG_minloglevel="2"))
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).resolve().is_relative_to(dest.resolve())


def test_run_script_without_a_bundle_exits_2_and_says_how_to_make_one(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "gpu" / "bundle_run.sh")], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, BUNDLE=str(tmp_path / "none.tar.xz"),
                                               BUNDLE_DEST=str(tmp_path / "dest"), PYTHON=sys.executable))
    assert proc.returncode == 2
    assert f"{tmp_path / 'none.tar.xz'}: no such bundle; make it with `make gpu-bundle`" in proc.stderr
    assert not (tmp_path / "dest").exists()


def test_build_root_key_covers_its_recipe_and_pins():
    """What names the Ubuntu build root: the pins of requirements.txt, the -dev packages and the recipe lines
    themselves (an edit there must give a new root, not silently reuse the old one)."""
    proc = subprocess.run(["bash", str(REPO / "gpu" / "bundle.sh"), "--print-root-recipe"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    recipe = proc.stdout
    assert "numpy==" in recipe and "matplotlib==" in recipe  # the pins of the GPU machine's stand-in venv
    assert "libboost-python-dev" in recipe and "libopencv-dev" not in recipe  # the lean build's packages
    for step in ("debootstrap --variant=minbase", "dev/build_caffe.sh --deps-only",
                 "-m venv /opt/gpu-python", "pip install"):
        assert step in recipe, step


def test_device_like_cuda_wheels_are_the_versions_the_build_links():
    """The build root's stand-in for the GPU machine's NVIDIA wheels pins what dev/cuda_libs.sh builds
    against (cuBLAS, cuRAND, NCCL): a drift would test the bundle against other libraries than it uses."""
    bundle_script = (REPO / "gpu" / "bundle.sh").read_text()
    wheels = set(re.search(r"^CUDA_WHEELS=\((.*)\)$", bundle_script, re.MULTILINE).group(1).split())
    built = set(re.findall(r'"(nvidia-[a-z0-9-]+==[0-9.]+)"', (REPO / "dev" / "cuda_libs.sh").read_text()))
    assert built == {"nvidia-cublas==13.0.2.14", "nvidia-curand==10.4.0.35", "nvidia-nccl-cu13==2.31.2"}
    assert built <= wheels and any(w.startswith("nvidia-cuda-runtime==13.") for w in wheels)
