"""dev/docker_replay.py: the project's Dockerfile reads into steps the replay can follow, every file it
COPYs exists, and what the replay cannot follow is refused with the line, not skipped."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dev import docker_replay
from rankiqa.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def test_the_project_dockerfile_reads_into_replayable_steps():
    steps = docker_replay.parse((REPO / "Dockerfile").read_text(encoding="utf-8"))
    kinds = [step.kind for step in steps]
    assert kinds[0] == "FROM" and "ubuntu24.04" in steps[0].args[0]
    assert {"ENV", "WORKDIR", "COPY", "RUN"} <= set(kinds)
    env = {step.args[0]: step.args[1] for step in steps if step.kind == "ENV"}
    assert env["CUDA"] == "1" and env["CUDA_ARCH"] == "70 75 80 86 89 90"  # the quotes are gone
    runs = [step.args[0] for step in steps if step.kind == "RUN"]
    assert any(run.startswith("make caffe CUDA=1") for run in runs)
    assert all(step.tsv().split("\t")[0] == str(step.line) for step in steps)


def test_every_file_the_dockerfile_copies_is_in_the_build_context():
    steps = docker_replay.parse((REPO / "Dockerfile").read_text(encoding="utf-8"))
    context = set(docker_replay.context_files(REPO))
    for step in (s for s in steps if s.kind == "COPY"):
        for source in step.args[1:]:
            if source != ".":
                assert source in context, f"Dockerfile:{step.line}: COPY {source} is not in the build context"


def test_build_context_is_the_folder_minus_the_projects_dockerignore(tmp_path):
    """Docker's rules, not git's: a file git ignores is sent unless .dockerignore names it."""
    shutil.copy(REPO / ".dockerignore", tmp_path / ".dockerignore")
    for name in ("Makefile", "tools/train.py", "tools/__pycache__/train.cpython-311.pyc", ".venv/bin/python",
                 ".git/HEAD", "data/ranks/x.png", "runs/r/log.txt", "results/m.json",
                 "bundle/gpu-bundle.tar.xz", ".pytest_cache/v", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    expected = [".dockerignore", "Makefile", "notes.txt", "tools/train.py"]
    assert docker_replay.context_files(tmp_path) == expected


def test_the_repository_context_holds_what_the_image_needs():
    context = docker_replay.context_files(REPO)
    assert "Makefile" in context and "dev/build_caffe.sh" in context and "requirements.txt" in context
    assert not [name for name in context if name.startswith((".venv/", ".git/", "bundle/"))]


def test_continuations_and_comments_inside_an_instruction():
    text = "FROM ubuntu:24.04\n# a comment\nRUN apt-get update \\\n    # inside\n    && echo done\n"
    steps = docker_replay.parse(text)
    assert steps[1].kind == "RUN" and steps[1].args == ("apt-get update && echo done",) and steps[1].line == 3


@pytest.mark.parametrize(("text", "message", "line"), [
    ("FROM ubuntu:24.04\nRUN [\"make\", \"caffe\"]\n", "JSON \\(exec\\) form", 2),
    ("FROM ubuntu:24.04\nADD x.tar /opt\n", "instruction ADD is not replayed", 2),
    ("FROM ubuntu:24.04\nCOPY --from=build /a /b\n", "COPY with flags", 2),
    ("FROM a AS build\nRUN true\nFROM ubuntu:24.04\n", "multi-stage", None),
    ("RUN true\n", "the first instruction must be FROM", 1),
    ("FROM ubuntu:24.04\nENV =x\n", "ENV: cannot read", 2),
    ("FROM ubuntu:24.04\nSHELL [\"/bin/bash\", \"-c\"]\n", "instruction SHELL is not replayed", 2),
    ("FROM ubuntu:24.04\nVOLUME /data\n", "instruction VOLUME is not replayed", 2),
    ("FROM ubuntu:24.04\nENV A=1\nENV B=$A\n", "variable substitution", 3),
    ("FROM ubuntu:24.04\nWORKDIR opt\n", "only absolute paths", 2),
    ("FROM ubuntu:24.04\nWORKDIR /opt/../etc\n", "only absolute paths", 2),
    ("FROM ubuntu:24.04\nCOPY ../secret /opt/\n", "COPY paths with '..'", 2),
])
def test_what_cannot_be_replayed_is_refused_with_its_line(text, message, line):
    with pytest.raises(InputError, match=message) as info:
        docker_replay.parse(text, "Dockerfile.test")
    assert info.value.path == "Dockerfile.test" and info.value.line == line


def test_skipped_instructions_are_listed_not_dropped():
    steps = docker_replay.parse('FROM ubuntu:24.04\nCMD ["make", "help"]\nLABEL a=b\n')
    assert [(s.kind, s.args) for s in steps[1:]] == [("SKIP", ("CMD",)), ("SKIP", ("LABEL",))]


@pytest.mark.parametrize(("path", "expected"), [
    (".venv/bin/python", True), ("data/x.png", True), ("tools/__pycache__/a.pyc", True),
    ("tools/train.py", False), ("datasets.md", False), ("runs", True), ("data_prep/pristine.py", False),
])
def test_dockerignore_rules_of_the_project(path, expected):
    patterns = docker_replay.dockerignore_patterns(REPO)
    assert docker_replay.ignored(path, patterns) is expected
