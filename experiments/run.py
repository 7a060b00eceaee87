"""Run one row of the paper's tables from its recipe (``experiments/recipes.py``) through the Make targets.

    python -m experiments.run                       # the recipes, with the paper's figures
    python -m experiments.run tid2013_vgg16 PRISTINE=/data/waterloo \
        WEIGHTS=/models/VGG_ILSVRC_16_layers.caffemodel
    python -m experiments.run csiq_vgg16 --dry-run  # the commands, nothing run
    make experiment NAME=tid2013_vgg16 PRISTINE=... WEIGHTS=... [DRY_RUN=1]

Other ``NAME=value`` words (``DATA``, ``GPU``, ``ITERS`` ...) go to every ``make`` command; a variable the
recipe sets itself cannot be given (the row would no longer be the paper's). A recipe's needed variables
may also come from the environment (``make experiment`` passes its command line's that way). The steps run
in order, each a ``make`` command in the repository root, and the first that fails stops the run with its
exit status; a rerun resumes, as each target does. At the end the evaluated SROCC and PLCC are printed
beside the paper's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Any

from experiments.recipes import RECIPES
from rankiqa.errors import InputError, cli_main
from rankiqa.paths import REPO_ROOT

_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
#: make's own variables of a calling make: a child make given them would join a jobserver it cannot reach.
_MAKE_ENV = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def parse_assignments(words: Sequence[str]) -> dict[str, str]:
    """``NAME=value`` words as a dict; ``InputError`` for a word of another form."""
    values: dict[str, str] = {}
    for word in words:
        found = _ASSIGNMENT.match(word)
        if found is None:
            raise InputError(f"expected NAME=value, got {word!r}")
        values[found.group(1)] = found.group(2)
    return values


def recipe(name: str) -> dict[str, Any]:
    """The recipe called ``name``; ``InputError`` naming the known ones otherwise."""
    if name not in RECIPES:
        raise InputError(f"no recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def recipe_variables(spec: Mapping[str, Any]) -> set[str]:
    """The Make variables the recipe's steps set."""
    return {key for _, variables, _ in spec["steps"] for key in variables}


def expand(name: str, given: Mapping[str, str], environ: Mapping[str, str] | None = None,
           placeholders: bool = False) -> list[list[str]]:
    """The ``make`` command lines (argv lists) of recipe ``name`` with the user's variables ``given``.

    A needed variable missing from ``given`` is taken from ``environ``; still missing, it is an
    ``InputError`` naming it, or with ``placeholders`` written as ``<NAME>`` (for ``--dry-run``). A
    variable in ``given`` that the recipe sets is an ``InputError``. The needed variables go where the steps
    name them (``${NAME}``), the others in ``given`` to every command, after the recipe's own variables.
    """
    spec = recipe(name)
    environ = os.environ if environ is None else environ
    clash = sorted(set(given) & (recipe_variables(spec) - set(spec["needs"])))
    if clash:
        raise InputError(f"recipe {name!r} sets {', '.join(clash)} itself: leave {'/'.join(clash)} out "
                         "(or run the Make targets by hand for another configuration)")
    values: dict[str, str] = {}
    missing = []
    for variable in spec["needs"]:
        value = given.get(variable, environ.get(variable, ""))
        if not value and not placeholders:
            missing.append(variable)
        values[variable] = value or f"<{variable}>"
    if missing:
        raise InputError(f"recipe {name!r} needs " + "; ".join(
            f"{variable}= ({spec['needs'][variable]})" for variable in missing))
    iters = given.get("ITERS") or environ.get("ITERS")
    for key in ("rank_iters", "ft_iters"):
        values[key] = str(iters or spec[key])
    values["SPLITS"] = str(spec["splits"])
    passed = [f"{key}={value}" for key, value in given.items() if key not in spec["needs"]]
    commands = []
    for target, variables, each_split in spec["steps"]:
        for split in range(spec["splits"]) if each_split else [None]:
            step_values = dict(values, SPLIT="" if split is None else str(split))
            words = [f"{key}={Template(value).substitute(step_values)}" for key, value in variables.items()]
            commands.append(["make", "--no-print-directory", target, *words, *passed])
    return commands


def listing() -> str:
    """One line per recipe: its name, the row and the paper's figures."""
    lines = []
    for name, spec in RECIPES.items():
        paper = spec["paper"]
        figures = ("no paper figure" if paper is None
                   else f"paper SROCC {paper['srocc']:.3f} / PLCC {paper['plcc']:.3f}")
        lines.append(f"{name:24s} {spec['row']} ({figures})")
    return "\n".join(lines)


def results_folder(name: str) -> Path:
    """The ``results/<RUN>/`` folder of the recipe's last evaluation."""
    evals = [variables for target, variables, _ in recipe(name)["steps"] if target == "eval"]
    return REPO_ROOT / "results" / evals[-1]["RUN"]


def comparison(name: str) -> str:
    """The evaluated SROCC and PLCC (mean over the splits, with their std) beside the paper's."""
    spec = recipe(name)
    path = results_folder(name) / "metrics.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"no evaluation to compare: {err}", path) from None
    lines = [f"{name}: {spec['row']} ({path.relative_to(REPO_ROOT)})"]
    for key in ("srocc", "plcc"):
        measured = report["overall"]["mean"][key]
        std = report.get("overall_std", {}).get("mean", {}).get(key)
        here = f"{measured:.3f}" + ("" if std is None else f" +- {std:.3f}")
        paper = "-" if spec["paper"] is None else f"{spec['paper'][key]:.3f}"
        lines.append(f"  {key.upper():5s} here {here}, paper {paper}")
    return "\n".join(lines)


def run_commands(commands: Sequence[Sequence[str]]) -> int:
    """Run ``commands`` in the repository root one after another; the first non-zero exit status ends it."""
    environ = {key: value for key, value in os.environ.items() if key not in _MAKE_ENV}
    for index, command in enumerate(commands, 1):
        print(f"[{index}/{len(commands)}] {shlex.join(command)}", flush=True)
        code = subprocess.run(list(command), cwd=REPO_ROOT, env=environ).returncode
        if code != 0:
            print(f"error: step {index} of {len(commands)} failed (exit {code}); the same command resumes",
                  file=sys.stderr)
            return code
    return 0


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``[NAME] [VAR=value ...] [--dry-run]``; without a name, the recipes are listed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="recipe (without: list them)")
    parser.add_argument("variables", nargs="*", metavar="VAR=value", help="variables for every make command")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_intermixed_args(argv)
    if not args.name:
        print(listing())
        return 0
    commands = expand(args.name, parse_assignments(args.variables), placeholders=args.dry_run)
    if args.dry_run:
        print("\n".join(shlex.join(command) for command in commands))
        return 0
    code = run_commands(commands)
    if code == 0:
        print(comparison(args.name))
    return code


if __name__ == "__main__":
    sys.exit(main())
