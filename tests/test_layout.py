"""The promise of ``docs/DESIGN.md``: one ``tests/test_<module>.py`` per module of the packages (the build and
infrastructure ones in ``tests/infra/``), with the few exceptions named here and why."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("data_prep", "pylayers", "rankiqa", "tools", "experiments")
#: Modules whose tests live in another file: module -> that file.
TESTED_IN = {
    "experiments/recipes.py": "tests/test_experiments.py",  # the recipes and their runner, together
    "experiments/run.py": "tests/test_experiments.py",
    "tools/logparse.py": "tests/test_train.py",  # the driver's log
    "tools/scoring.py": "tests/test_evaluate.py",  # through evaluate and predict
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
