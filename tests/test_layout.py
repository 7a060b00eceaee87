"""The test suite's own layout (``docs/DESIGN.md``): one ``tests/test_<module>.py`` per module of the packages
(the build and infrastructure ones in ``tests/infra/``), with the few exceptions named here and why; and the
markers of ``tests/conftest.py`` select and skip what they say."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("data_prep", "pylayers", "rankiqa", "tools", "experiments")
#: Modules whose tests live in another file: module -> that file.
TESTED_IN = {
    "experiments/recipes.py": "tests/test_experiments.py",  # the recipes and their runner, together
    "experiments/run.py": "tests/test_experiments.py",
    "rankiqa/caffe_proto.py": "tests/test_onnx_export.py",  # with the exporter that needs no Caffe
    "pylayers/images.py": "tests/test_prefetch.py",  # the data layers' shared machinery, together
    "pylayers/timed.py": "tests/test_bench.py",  # the timed layers, in the benchmark's solver
    "pylayers/fixed_data.py": "tests/test_gpu_check.py",  # the GPU check's fixed-batch training step
    "tools/export_onnx.py": "tests/test_onnx_export.py",  # the command of rankiqa.onnx_export
    # Parts of the training driver and the scoring tools, tested through them:
    "rankiqa/evaluation.py": "tests/test_evaluate.py",  # the library under tools/evaluate.py
    "rankiqa/demo_setup.py": "tests/test_demo.py",  # the library under tools/demo.py, tested through it
    "rankiqa/demo_report.py": "tests/test_demo.py",
    "rankiqa/measure.py": "tests/test_bench.py",
    "rankiqa/netconfig.py": "tests/test_train.py",
    "rankiqa/runprep.py": "tests/test_train.py",
    "rankiqa/scoring.py": "tests/test_evaluate.py",  # and tests/test_predict.py
}
#: Modules without tests, and why.
UNTESTED = {"experiments/ft_head_sweep.py": "a measurement script (fine-tuning runs; README has its figures)"}


def _modules() -> list[str]:
    return sorted(path.relative_to(REPO).as_posix() for package in PACKAGES
                  for path in (REPO / package).glob("*.py") if path.name != "__init__.py")


def test_every_module_has_its_test_file() -> None:
    missing = [module for module in _modules() if module not in TESTED_IN and module not in UNTESTED
               and not any((REPO / folder / f"test_{Path(module).stem}.py").is_file()
                           for folder in ("tests", "tests/infra"))]
    assert missing == [], "add tests/test_<module>.py for these (docs/DESIGN.md)"


def test_the_exceptions_name_modules_and_files_that_exist() -> None:
    modules = set(_modules())
    assert set(TESTED_IN) | set(UNTESTED) <= modules
    assert all((REPO / path).is_file() for path in TESTED_IN.values())


def _collected(*args: str) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 5), result.stdout + result.stderr  # 5: nothing selected
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_the_infra_marker_selects_the_tests_under_tests_infra() -> None:
    paths = ["tests/infra/test_docker_replay.py", "tests/test_errors.py"]
    infra, rest = _collected("-m", "infra", *paths), _collected("-m", "not infra", *paths)
    assert infra and all(test.startswith("tests/infra/") for test in infra)
    assert rest and not any(test.startswith("tests/infra/") for test in rest)


def test_caffe_tests_are_skipped_where_pycaffe_is_not_built() -> None:
    """pycaffe taken off ``sys.path`` in a child pytest: the ``caffe`` tests (marked, or using the
    ``pycaffe`` fixture) skip with the reason, the others run."""
    hide = ("import sys, pytest; sys.path = [p for p in sys.path if not __import__('os').path.isdir("
            "__import__('os').path.join(p, 'caffe'))]; sys.exit(pytest.main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", hide, "-q", "-rs", "-p", "no:cacheprovider",
                             "tests/test_caffe_io.py"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr  # nothing failed or errored
    # How many tests the file has is its own business: some ran, some skipped, every skip for pycaffe.
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", result.stdout.splitlines()[-1])}
    assert counts.get("passed", 0) > 0 and counts.get("skipped", 0) > 0, result.stdout
    assert not {"failed", "error", "errors"} & set(counts), result.stdout
    skips = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED [")]
    assert all(line.endswith(": pycaffe is not built (make caffe)") for line in skips), result.stdout
    skipped = sum(int(re.match(r"SKIPPED \[(\d+)\]", line)[1]) for line in skips)
    assert skipped == counts["skipped"], result.stdout


def test_every_command_module_runs_its_main_under_python_m() -> None:
    """A module with a ``main`` in tools/ or experiments/ is started by ``python -m``: without the
    ``__main__`` guard the Make targets would run nothing and exit 0."""
    missing = []
    for package in ("tools", "experiments"):
        for path in sorted((REPO / package).glob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            has_main = any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body)
            guarded = any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
                          for node in tree.body)
            if has_main and not guarded:
                missing.append(path.relative_to(REPO).as_posix())
    assert missing == []
