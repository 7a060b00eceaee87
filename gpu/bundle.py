"""Pack a CUDA Caffe build for a GPU machine without network, and unpack it there.

    python3 -m gpu.bundle pack --prefix <caffe prefix> --out bundle/gpu-bundle.tar.xz [--max-mib 48]
    python3 -m gpu.bundle unpack --bundle bundle/gpu-bundle.tar.xz --dest /tmp/rankiqa-gpu-bundle
    python3 -m gpu.bundle env --dest /tmp/rankiqa-gpu-bundle [--cuda-lib-path DIR:DIR]

``pack`` runs where the build was made (gpu/bundle.sh runs it inside the Ubuntu 24.04 build root). It
takes the prefix's ``bin/caffe``, ``lib/libcaffe*``, ``python/caffe`` (without Caffe's own tests) and
``BUILD_INFO``, plus every shared library that ``ldd`` resolves for them except

* the C runtime and the compiler's runtime (glibc, libstdc++, libgcc_s): the GPU machine has its own,
  as new or newer, and two copies of glibc in one process do not work;
* CUDA's libraries (cudart, cuBLAS(Lt), cuRAND, NCCL, the driver): the GPU machine has them, matching its
  driver, inside its PyTorch install; they are several hundred MiB, far too big to carry in the bundle.

The CUDA sonames the build needs are written to the bundle's ``MANIFEST.json`` so that ``env`` can look
for exactly those on the GPU machine and name any it cannot find.

``env`` prints shell ``export`` lines (``LD_LIBRARY_PATH``, ``PYTHONPATH``, ``PATH``) for ``eval``; it
looks for the CUDA libraries in ``--cuda-lib-path`` (and ``RANKIQA_CUDA_LIB_PATH``), in the
``nvidia/*/lib`` folders of every site-packages of the running Python (where PyTorch's CUDA wheels put
them), in ``/usr/local/cuda*/lib64``, ``/usr/local/nvidia/lib64``, ``LD_LIBRARY_PATH`` and ``ldconfig``'s
cache.

Only the standard library (and ``rankiqa.errors``) is used: ``pack`` runs with the build root's bare
Python 3.12.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import site
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from rankiqa.errors import InputError, cli_main
from rankiqa.fsutil import atomic_path

MANIFEST = "MANIFEST.json"
#: Libraries never carried: the GPU machine's own C and C++ runtimes must be the ones loaded.
SYSTEM_LIBRARY = re.compile(
    r"^(linux-vdso|ld-linux[-\w]*|libc|libm|libpthread|libdl|librt|libresolv|libutil|libstdc\+\+|libgcc_s)"
    r"\.so(\.|$)")
#: CUDA's libraries: found on the GPU machine instead (see module docstring).
CUDA_LIBRARY = re.compile(
    r"^lib(cudart|cublas|cublasLt|curand|cuda|nvidia-ml|nccl|nvrtc|nvJitLink)\.so(\.|$)")


class BundleError(InputError):
    """A bundle that cannot be made, read or used; the message names the file at fault."""


def parse_ldd(text: str, source: str) -> tuple[dict[str, str], list[str]]:
    """``ldd`` output -> ({soname: resolved path}, [sonames ldd could not find])."""
    resolved: dict[str, str] = {}
    missing: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if "=>" not in line:
            continue  # the vdso and the loader itself ("/lib64/ld-linux-x86-64.so.2 (0x...)")
        name, _, rest = line.partition("=>")
        name, rest = name.strip(), rest.strip()
        if rest.startswith("not found"):
            missing.append(name)
            continue
        path = rest.split(" (0x", 1)[0].strip()
        if not path.startswith("/"):
            raise BundleError(f"unexpected ldd line for {source}: {raw!r}")
        resolved[name] = path
    return resolved, missing


def classify(sonames: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """Split sonames into (carried, CUDA, system), each sorted."""
    carried, cuda, system = [], [], []
    for name in sorted(set(sonames)):
        if SYSTEM_LIBRARY.match(name):
            system.append(name)
        elif CUDA_LIBRARY.match(name):
            cuda.append(name)
        else:
            carried.append(name)
    return carried, cuda, system


def ldd(path: Path) -> str:
    try:
        result = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise BundleError("ldd is not installed") from None
    if result.returncode != 0:
        raise BundleError(f"{path}: ldd failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def pack(prefix: Path, out: Path, max_mib: float, preset: int = 9) -> dict:
    """Write the bundle of the Caffe build at ``prefix`` to ``out`` (atomically); return its manifest."""
    binary = prefix / "bin" / "caffe"
    libcaffe = sorted(prefix.glob("lib/libcaffe.so.*"))
    pycaffe = prefix / "python" / "caffe"
    for needed in (binary, pycaffe / "_caffe.so", prefix / "BUILD_INFO"):
        if not needed.exists():
            raise BundleError(f"{needed}: not found; is {prefix} a finished build of dev/build_caffe.sh?")
    if not libcaffe:
        raise BundleError(f"{prefix / 'lib'}: no libcaffe.so.*")
    resolved: dict[str, str] = {}
    missing: set[str] = set()
    for obj in (binary, pycaffe / "_caffe.so", *libcaffe):
        found, lost = parse_ldd(ldd(obj), str(obj))
        resolved.update(found)
        missing.update(lost)
    carried, cuda, system = classify([*resolved, *missing])
    lost_carried = sorted(set(carried) & missing)
    if lost_carried:
        raise BundleError(f"{prefix}: ldd cannot find {', '.join(lost_carried)}; install them where the "
                          "bundle is packed")
    carried = [name for name in carried if not name.startswith("libcaffe.so")]
    build_info = (prefix / "BUILD_INFO").read_text(encoding="utf-8")
    # dev/build_caffe.sh writes "python 3.12 /usr/bin/python3.12": the Python pycaffe was built for.
    python = re.search(r"^python (\d+\.\d+) ", build_info, re.MULTILINE)
    if python is None:
        raise BundleError(f"{prefix / 'BUILD_INFO'}: no 'python X.Y' line")
    manifest = {
        "build_info": build_info,
        "python": python.group(1),
        "carried_libraries": carried,
        "cuda_libraries": cuda,
        "system_libraries": system,
    }
    with tempfile.TemporaryDirectory(prefix="gpu-bundle.") as tmp:
        stage = Path(tmp) / "gpu-bundle"
        (stage / "bin").mkdir(parents=True)
        (stage / "lib").mkdir()
        shutil.copy2(binary, stage / "bin" / "caffe")
        for lib in prefix.glob("lib/libcaffe.so*"):  # the library and its unversioned link
            shutil.copy2(lib, stage / "lib" / lib.name, follow_symlinks=False)
        for name in carried:
            # Under its soname (what the loader asks for), whatever file the soname linked to.
            shutil.copy2(resolved[name], stage / "lib" / name)
        shutil.copytree(pycaffe, stage / "python" / "caffe",
                        ignore=shutil.ignore_patterns("test", "__pycache__", "*.pyc"))
        shutil.copy2(prefix / "BUILD_INFO", stage / "BUILD_INFO")
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        with atomic_path(out) as partial:
            # A plain .tar (no compression) is for tests: the CPU build's libraries take 20 s to compress.
            with (tarfile.open(partial, "w:xz", preset=preset) if out.name.endswith(".xz")
                  else tarfile.open(partial, "w")) as tar:
                tar.add(stage, arcname="gpu-bundle")
            size_mib = partial.stat().st_size / 2**20
            if size_mib > max_mib:
                raise BundleError(f"{out}: {size_mib:.1f} MiB, over the {max_mib:g} MiB allowed (--max-mib); "
                                  f"largest libraries: {largest(stage / 'lib')}")
    manifest["size_mib"] = round(out.stat().st_size / 2**20, 1)
    return manifest


def largest(folder: Path, count: int = 5) -> str:
    files = sorted(folder.iterdir(), key=lambda p: p.stat().st_size, reverse=True)[:count]
    return ", ".join(f"{p.name} {p.stat().st_size / 2**20:.1f} MiB" for p in files)


def unpack(bundle: Path, dest: Path) -> dict:
    """Unpack ``bundle`` into ``dest`` (replacing an earlier unpack there); return its manifest."""
    if not bundle.is_file():
        raise BundleError(f"{bundle}: no such bundle; make it with `make gpu-bundle` and copy its folder "
                          "along with the checkout")
    dest = dest.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        try:
            with tarfile.open(bundle, "r:*") as tar:
                for member in tar.getmembers():
                    if member.name.split("/")[0] != "gpu-bundle":
                        raise BundleError(f"{bundle}: member {member.name!r} lies outside gpu-bundle/")
                # The "data" filter refuses absolute paths, links out of the folder and device files.
                tar.extractall(partial, filter="data")
        except (tarfile.TarError, EOFError, OSError) as err:
            raise BundleError(f"{bundle}: not a readable bundle ({err})") from None
        manifest = read_manifest(partial / "gpu-bundle")
        if dest.exists():
            # Only an earlier unpack (or an empty folder) is replaced: never a folder of something else.
            if not (dest / MANIFEST).is_file() and any(dest.iterdir()):
                raise BundleError(f"{dest}: exists and is not an unpacked bundle; give another --dest")
            shutil.rmtree(dest)
        os.replace(partial / "gpu-bundle", dest)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return manifest


def read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing; not a bundle of gpu/bundle.py") from None
    except json.JSONDecodeError as err:
        raise BundleError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    for key in ("cuda_libraries", "carried_libraries", "python"):
        if key not in manifest:
            raise BundleError(f"{path}: no {key!r} entry")
    return manifest


def cuda_search_dirs(extra: Sequence[str]) -> list[Path]:
    """Folders that may hold CUDA's libraries, in the order they are searched."""
    dirs: list[str] = [d for entry in extra for d in entry.split(os.pathsep) if d]
    packages = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
    for sp in packages:
        dirs += sorted(glob.glob(os.path.join(sp, "nvidia", "*", "lib")))
        dirs += sorted(glob.glob(os.path.join(sp, "nvidia", "*", "*", "lib")))
    dirs += sorted(glob.glob("/usr/local/cuda*/lib64")) + sorted(glob.glob("/usr/local/cuda*/targets/*/lib"))
    # Where NVIDIA's container runtime mounts the driver's libraries, and what the loader searches already.
    dirs += ["/usr/local/nvidia/lib64", "/usr/local/nvidia/lib"]
    dirs += os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
    seen: list[Path] = []
    for d in dirs:
        path = Path(d)
        if d and path.is_dir() and path not in seen:
            seen.append(path)
    return seen


def ldconfig_paths() -> dict[str, Path]:
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        return {}
    found: dict[str, Path] = {}
    for line in out.splitlines():
        # "\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1"
        name, sep, path = line.strip().partition(" => ")
        if sep and "x86-64" in name:
            found.setdefault(name.split(" ", 1)[0], Path(path.strip()))
    return found


def locate_cuda(sonames: Sequence[str], dirs: Sequence[Path], system: dict[str, Path]) -> list[Path]:
    """The folders to put on ``LD_LIBRARY_PATH`` for ``sonames``; names every one that cannot be found.

    The driver (``libcuda.so.1``) is the machine's own and must come from the system's loader path."""
    chosen: list[Path] = []
    lost: list[str] = []
    for name in sonames:
        where = next((d for d in dirs if (d / name).exists()), None)
        if where is None:
            if name in system:
                continue  # the loader finds it by itself
            lost.append(name)
        elif where not in chosen:
            chosen.append(where)
    if lost:
        raise BundleError("CUDA libraries not found: " + ", ".join(lost) + "; looked in "
                          + (", ".join(str(d) for d in dirs) or "no folder") + " and ldconfig's cache; "
                          "give their folder with --cuda-lib-path or RANKIQA_CUDA_LIB_PATH")
    return chosen


def env_lines(dest: Path, cuda_lib_path: Sequence[str]) -> list[str]:
    """``export`` lines that make the unpacked bundle at ``dest`` importable and runnable."""
    dest = dest.resolve()
    manifest = read_manifest(dest)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if manifest["python"] != here:
        raise BundleError(f"{dest / MANIFEST}: the bundle's pycaffe is for Python {manifest['python']}, "
                          f"this is Python {here} ({sys.executable})")
    extra = [*cuda_lib_path, os.environ.get("RANKIQA_CUDA_LIB_PATH", "")]
    cuda_dirs = locate_cuda(manifest["cuda_libraries"], cuda_search_dirs(extra), ldconfig_paths())
    lib_path = [str(dest / "lib"), *map(str, cuda_dirs)]
    if os.environ.get("LD_LIBRARY_PATH"):
        lib_path.append(os.environ["LD_LIBRARY_PATH"])
    py_path = [str(dest / "python")]
    if os.environ.get("PYTHONPATH"):
        py_path.append(os.environ["PYTHONPATH"])
    return [f"export LD_LIBRARY_PATH={shlex.quote(os.pathsep.join(lib_path))}",
            f"export PYTHONPATH={shlex.quote(os.pathsep.join(py_path))}",
            f"export PATH={shlex.quote(str(dest / 'bin') + os.pathsep + os.environ.get('PATH', ''))}"]


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m gpu.bundle", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_pack = sub.add_parser("pack", help="pack a Caffe prefix")
    p_pack.add_argument("--prefix", type=Path, required=True)
    p_pack.add_argument("--out", type=Path, required=True)
    p_pack.add_argument("--max-mib", type=float, default=48.0,
                        help="refuse a bundle over this size, so that it stays small enough to copy to the "
                             "GPU machine along with the checkout")
    p_pack.add_argument("--preset", type=int, default=9, choices=range(10), help="xz compression level")
    p_unpack = sub.add_parser("unpack", help="unpack a bundle")
    p_unpack.add_argument("--bundle", type=Path, required=True)
    p_unpack.add_argument("--dest", type=Path, required=True)
    p_env = sub.add_parser("env", help="print export lines for an unpacked bundle")
    p_env.add_argument("--dest", type=Path, required=True)
    p_env.add_argument("--cuda-lib-path", action="append", default=[],
                       help="folders holding CUDA's libraries (':'-separated; repeatable)")
    args = parser.parse_args(argv)
    if args.command == "pack":
        manifest = pack(args.prefix, args.out, args.max_mib, args.preset)
        print(f"{args.out}: {manifest['size_mib']} MiB, {len(manifest['carried_libraries'])} libraries "
              f"carried; CUDA libraries expected on the GPU machine: "
              f"{', '.join(manifest['cuda_libraries']) or 'none'}", file=sys.stderr)
    elif args.command == "unpack":
        manifest = unpack(args.bundle, args.dest)
        print(f"unpacked {args.bundle} into {args.dest} (pycaffe for Python {manifest['python']})",
              file=sys.stderr)
    else:
        print("\n".join(env_lines(args.dest, args.cuda_lib_path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
