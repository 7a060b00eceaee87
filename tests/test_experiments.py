"""The paper's rows as recipes (``experiments/recipes.py``, ``experiments/run.py``): each expands to ``make``
commands that the Makefile turns into the intended tool calls (read from ``make -n``), the runner stops at
the first failing step, and the README gives the recipe commands instead of shell one-liners."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from experiments import run
from experiments.recipes import RECIPES

REPO = Path(__file__).resolve().parents[1]
TOOLS = {"ranks": "data_prep.make_ranks", "train_rank": "tools.train", "finetune": "tools.train",
         "eval": "tools.evaluate"}
NEEDED = {"PRISTINE": "/photos/waterloo pristine", "WEIGHTS": "/models/VGG_ILSVRC_16_layers.caffemodel"}


def _given(name: str) -> dict[str, str]:
    return {key: NEEDED[key] for key in RECIPES[name]["needs"]}


def _tool_call(command: list[str]) -> list[str]:
    """The tool command line ``make -n`` prints for a recipe's ``make`` command (shell-split)."""
    assert command[:2] == ["make", "--no-print-directory"]
    result = subprocess.run(["make", "-n", *command[1:], "DATA=/no/such/dataset"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    module = TOOLS[command[2]]
    calls = [shlex.split(line) for line in result.stdout.replace("\\\n", " ").splitlines()
             if f"-m {module} " in line]
    assert calls, result.stdout
    return calls[-1]  # train_rank and finetune may first print the lists they would make


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _steps(commands: list[list[str]], target: str) -> list[dict[str, str]]:
    return [dict(word.split("=", 1) for word in command[3:]) for command in commands if command[2] == target]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_expands_to_the_tool_calls_it_means(name: str) -> None:
    commands = run.expand(name, _given(name), environ={})
    targets = [command[2] for command in commands]
    assert targets[-1] == "eval" and set(targets) <= set(TOOLS)
    spec = RECIPES[name]
    finetunes = _steps(commands, "finetune")
    assert len(finetunes) in (0, spec["splits"])
    every_split = [str(k) for k in range(spec["splits"])]
    assert [step["SPLIT"] for step in finetunes] in ([], ["original"], every_split)
    checked = set()
    for command in commands:
        variables = dict(word.split("=", 1) for word in command[3:])
        if command[2] == "finetune" and variables["SPLIT"] not in ("0", "original",
                                                                    str(spec["splits"] - 1)):
            continue  # the middle splits differ from the first and last by the number only
        argv = _tool_call(command)
        checked.add(command[2])
        if command[2] == "ranks":
            assert _value(argv, "--pristine") == NEEDED["PRISTINE"]
        elif command[2] == "train_rank":
            assert _value(argv, "--out") == variables["RANK_RUN"]
            assert _value(argv, "--net") == variables["NET"]
            if variables["NET"] == "vgg16":  # the paper's VGG-16 starts from ImageNet
                assert _value(argv, "--weights") == NEEDED["WEIGHTS"]
        elif command[2] == "finetune":
            assert _value(argv, "--out") == variables["FT_RUN"]
            assert _value(argv, "--lists").endswith(f"/split{variables['SPLIT']}")
            if "RANK_MODEL" in variables:
                assert _value(argv, "--rank-model") == NEEDED["WEIGHTS"]
            else:  # the ranking run the recipe trained, found by the driver's rule
                assert "--rank-model" not in argv and "--from-scratch" not in argv
        else:
            assert _value(argv, "--model") == variables["MODEL"]
            assert _value(argv, "--out") == f"results/{variables['RUN']}"
            if spec["splits"] > 1:
                assert _value(argv, "--splits") == str(spec["splits"])
                assert _value(argv, "--table").endswith("/split{split}/test.csv")
            else:
                assert _value(argv, "--table").endswith("/splitoriginal/test.csv")
    assert checked == set(targets)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_the_model_evaluated_is_the_last_snapshot_of_the_run_the_recipe_trains(name: str) -> None:
    commands = run.expand(name, _given(name), environ={})
    spec = RECIPES[name]
    model = _steps(commands, "eval")[-1]["MODEL"]
    if _steps(commands, "finetune"):
        folder = _steps(commands, "finetune")[0]["FT_RUN"].replace("_split0", "_split{split}")
        iters = spec["ft_iters"]
    else:
        folder, iters = _steps(commands, "train_rank")[0]["RANK_RUN"], spec["rank_iters"]
    assert model == f"{folder}/snapshots/{Path(folder).name}_iter_{iters}.caffemodel"
    # a shorter run (ITERS) is evaluated at its own last iteration
    short = run.expand(name, {**_given(name), "ITERS": "40"}, environ={})
    assert _steps(short, "eval")[-1]["MODEL"].endswith("_iter_40.caffemodel")
    assert all("ITERS=40" in command for command in short)


def _max_iter(solver: str) -> int:
    text = (REPO / "prototxts" / "solvers" / f"{solver}.prototxt").read_text(encoding="utf-8")
    return int(re.search(r"^max_iter:\s*(\d+)", text, re.MULTILINE).group(1))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_iterations_are_those_of_the_solvers_the_driver_uses(name: str) -> None:
    from rankiqa.registry import dataset

    spec = RECIPES[name]
    commands = run.expand(name, _given(name), environ={})
    for step in _steps(commands, "train_rank"):
        assert spec["rank_iters"] == _max_iter(f"rank_{step['RANKSET']}")
    for step in _steps(commands, "finetune"):
        assert spec["ft_iters"] == _max_iter(f"ft_{dataset(step['DATASET']).ft_style.name}")


def test_paper_figures_are_listed_with_each_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(RECIPES)
    by_name = dict(zip(RECIPES, lines, strict=True))
    assert "paper SROCC 0.780 / PLCC 0.799" in by_name["tid2013_vgg16"]
    assert "paper SROCC 0.947 / PLCC 0.960" in by_name["csiq_vgg16"]
    assert "no paper figure" in by_name["tid2013_shallow"]


def test_dry_run_prints_the_commands_and_runs_nothing(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a dry run ran a command")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.delenv("WEIGHTS", raising=False)
    monkeypatch.delenv("PRISTINE", raising=False)
    assert run.main(["csiq_vgg16", "--dry-run", "GPU=0"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [shlex.join(c) for c in run.expand("csiq_vgg16", {"GPU": "0"}, placeholders=True)]
    assert len(printed) == 2 + 10 + 1 and "'WEIGHTS=<WEIGHTS>'" in printed[1]


@pytest.mark.parametrize(("argv", "fragment"), [
    (["tid2013_vgg17"], "no recipe 'tid2013_vgg17'; known: tid2013_vgg16"),
    (["tid2013_vgg16", "PRISTINE=/p"], "needs WEIGHTS= (ImageNet VGG-16"),
    (["tid2013_vgg16", "PRISTINE=/p", "WEIGHTS=/w", "NET=shallow"], "sets NET itself"),
    (["tid2013_vgg16", "PRISTINE=/p", "WEIGHTS"], "expected NAME=value, got 'WEIGHTS'"),
])
def test_bad_commands_exit_2_naming_what_is_wrong(argv: list[str], fragment: str,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEIGHTS", raising=False)
    assert run.main(argv) == 2
    assert fragment in capsys.readouterr().err


def test_needed_variables_may_come_from_the_environment() -> None:
    commands = run.expand("tid2013_imagenet_vgg16", {}, environ={"WEIGHTS": "/w/vgg.caffemodel"})
    assert _steps(commands, "finetune")[0]["RANK_MODEL"] == "/w/vgg.caffemodel"


METRICS = json.dumps({"overall": {"mean": {"srocc": 0.5, "plcc": 0.25}},
                      "overall_std": {"mean": {"srocc": 0.01, "plcc": 0.02}}})


def _fake_make(folder: Path, fail_target: str | None) -> Path:
    """A ``make`` that logs its arguments, fails on ``fail_target``, and writes an evaluation's metrics."""
    script = folder / "bin" / "make"
    script.parent.mkdir()
    fail = f'[ "$2" = {fail_target} ] && exit 3' if fail_target else ":"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {shlex.quote(str(folder / 'calls.txt'))}
{fail}
if [ "$2" = eval ]; then
  for word in "$@"; do case "$word" in RUN=*) run="${{word#RUN=}}";; esac; done
  mkdir -p "results/$run"
  echo {shlex.quote(METRICS)} > "results/$run/metrics.json"
fi
""")
    script.chmod(0o755)
    return script.parent


@pytest.mark.parametrize("fail_target", ["finetune", None])
def test_steps_run_in_order_until_one_fails_then_the_figures_are_compared(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        fail_target: str | None) -> None:
    monkeypatch.setenv("PATH", f"{_fake_make(tmp_path, fail_target)}:{__import__('os').environ['PATH']}")
    monkeypatch.setattr(run, "REPO_ROOT", tmp_path)
    monkeypatch.setenv("MAKEFLAGS", "-j2 --jobserver-auth=3,4")  # a calling make's: not passed on
    code = run.main(["live_vgg16", "PRISTINE=/p", "WEIGHTS=/w", "GPU=0"])
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    targets = [call.split()[1] for call in calls]
    if fail_target:
        assert code == 3 and targets == ["ranks", "train_rank", "finetune"]
        assert "step 3 of 13 failed (exit 3)" in capsys.readouterr().err
        assert not (tmp_path / "results").exists()
        return
    assert code == 0 and targets == ["ranks", "train_rank", *["finetune"] * 10, "eval"]
    assert all(call.endswith("GPU=0") for call in calls)
    out = capsys.readouterr().out
    assert "SROCC here 0.500 +- 0.010, paper 0.981" in out and "PLCC  here 0.250 +- 0.020, paper 0.982" in out
    assert json.loads((tmp_path / "results/live_vgg16/metrics.json").read_text())["overall"]


def test_readme_gives_the_recipe_commands_instead_of_shell_one_liners() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in RECIPES:
        assert f"python -m experiments.run {name}" in readme or f"make experiment NAME={name}" in readme, name
    assert "for k in $(seq" not in readme
    assert "make finetune NET=vgg16 RANK_MODEL=VGG_ILSVRC_16_layers.caffemodel" not in readme


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_experiment_runs_the_recipe_runner() -> None:
    command = ["make", "-n", "--no-print-directory", "experiment", "NAME=csiq_vgg16", "DRY_RUN=1"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    calls = [shlex.split(line) for line in result.stdout.splitlines() if "-m experiments.run" in line]
    assert len(calls) == 1 and calls[0][-3:] == ["experiments.run", "csiq_vgg16", "--dry-run"]
