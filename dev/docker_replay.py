"""Read the project's Dockerfile into the steps that dev/docker_replay.sh replays without Docker.

    python3 -m dev.docker_replay steps [--dockerfile Dockerfile]     one step per line, tab-separated
    python3 -m dev.docker_replay context [--root .]                  the files `COPY . .` would send

Only what this project's Dockerfile uses is understood: FROM, ENV (``k=v`` pairs, quoted values), WORKDIR,
COPY (shell form, no flags, file sources), RUN (shell form); CMD, ENTRYPOINT, LABEL, EXPOSE, STOPSIGNAL and
HEALTHCHECK are skipped (they change nothing that is built). Anything else (SHELL, USER, ARG, ADD, ``$``
substitution outside RUN, a relative or ``..`` path) is refused with the file and line, so that a
Dockerfile change the replay cannot follow is noticed rather than silently ignored.

Step lines: ``FROM<TAB>image``, ``ENV<TAB>key<TAB>value``, ``WORKDIR<TAB>path``,
``COPY<TAB>dest<TAB>src1<TAB>src2...``, ``RUN<TAB>command``, ``SKIP<TAB>instruction``; each line is
prefixed by the Dockerfile line number it came from (``12<TAB>RUN<TAB>...``).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rankiqa.errors import InputError, cli_main

#: Instructions that build nothing (metadata for the container that runs the image).
SKIPPED = {"CMD", "ENTRYPOINT", "LABEL", "EXPOSE", "STOPSIGNAL", "HEALTHCHECK"}


@dataclass(frozen=True)
class Step:
    line: int
    kind: str
    args: tuple[str, ...]

    def tsv(self) -> str:
        for arg in self.args:
            if "\t" in arg or "\n" in arg:
                raise InputError(f"{self.kind} argument holds a tab or newline: {arg!r}", line=self.line)
        return "\t".join([str(self.line), self.kind, *self.args])


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, instruction text) with backslash continuations joined and comments dropped."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction, as Docker allows
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        out.append((start, " ".join(part for part in pending if part)))
        pending = []
    if pending:
        out.append((start, " ".join(pending)))
    return out


def parse(text: str, path: str = "Dockerfile") -> list[Step]:
    """The Dockerfile's steps; an instruction the replay cannot follow raises ``InputError`` (file:line)."""
    steps: list[Step] = []
    for line, instruction in logical_lines(text):
        keyword, _, rest = instruction.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword in SKIPPED:
            steps.append(Step(line, "SKIP", (keyword,)))
            continue
        if keyword not in ("FROM", "ENV", "WORKDIR", "COPY", "RUN"):
            raise InputError(f"instruction {keyword} is not replayed by dev/docker_replay.sh", path, line)
        if keyword in ("ENV", "WORKDIR", "COPY") and "$" in rest:
            raise InputError(f"{keyword}: variable substitution ($) is not replayed", path, line)
        if rest.startswith("["):
            raise InputError(f"{keyword} in JSON (exec) form is not replayed: use the shell form", path, line)
        if keyword == "FROM":
            steps.append(Step(line, "FROM", (rest.split()[0],)))
        elif keyword == "ENV":
            words = shlex.split(rest)
            if words and "=" not in words[0]:  # legacy "ENV key value"
                steps.append(Step(line, "ENV", (words[0], " ".join(words[1:]))))
                continue
            for word in words:
                key, eq, value = word.partition("=")
                if not eq or not key:
                    raise InputError(f"ENV: cannot read {word!r} (expected key=value)", path, line)
                steps.append(Step(line, "ENV", (key, value)))
        elif keyword == "WORKDIR":
            if not rest.startswith("/") or ".." in rest.split("/"):
                raise InputError(f"WORKDIR {rest}: only absolute paths without '..' are replayed", path, line)
            steps.append(Step(line, "WORKDIR", (rest,)))
        elif keyword == "COPY":
            words = shlex.split(rest)
            if any(word.startswith("--") for word in words):
                raise InputError("COPY with flags (--from, --chown, ...) is not replayed", path, line)
            if len(words) < 2:
                raise InputError("COPY needs a source and a destination", path, line)
            sources = words[:-1]
            if any(".." in word.split("/") for word in words) or any(src.startswith("/") for src in sources):
                raise InputError("COPY paths with '..' or absolute sources are not replayed", path, line)
            steps.append(Step(line, "COPY", (words[-1], *words[:-1])))
        else:  # RUN
            steps.append(Step(line, "RUN", (rest,)))
    if not steps or steps[0].kind != "FROM":
        raise InputError("the first instruction must be FROM", path, steps[0].line if steps else None)
    if sum(step.kind == "FROM" for step in steps) > 1:
        raise InputError("multi-stage builds are not replayed", path)
    return steps


def dockerignore_patterns(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    if any(pattern.startswith("!") for pattern in patterns):
        raise InputError("exceptions (!pattern) are not replayed", path)
    return patterns


def ignored(relative: str, patterns: Sequence[str]) -> bool:
    """Docker's rule, for the patterns used here: a pattern matches the path or any folder above it."""
    parts = relative.split("/")
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        for depth in range(1, len(parts) + 1):
            if fnmatch.fnmatchcase("/".join(parts[:depth]), pattern):
                return True
        if pattern.startswith("**/") and any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts):
            return True
    return False


def context_files(root: Path) -> list[str]:
    """The build context as Docker sends it: every file under ``root`` that .dockerignore does not name
    (git's ignore rules play no part, as in Docker)."""
    patterns = dockerignore_patterns(root)
    files: list[str] = []
    for folder, dirs, names in os.walk(root):
        relative = Path(folder).relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        dirs[:] = sorted(d for d in dirs if not ignored(prefix + d, patterns))
        files += [prefix + name for name in names if not ignored(prefix + name, patterns)
                  and (Path(folder) / name).is_file()]
    return sorted(files)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m dev.docker_replay",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_steps = sub.add_parser("steps", help="the Dockerfile's steps, tab-separated")
    p_steps.add_argument("--dockerfile", type=Path, default=Path("Dockerfile"))
    p_context = sub.add_parser("context", help="the files of the build context, one per line")
    p_context.add_argument("--root", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    if args.command == "steps":
        if not args.dockerfile.is_file():
            raise InputError("no such Dockerfile", args.dockerfile)
        for step in parse(args.dockerfile.read_text(encoding="utf-8"), str(args.dockerfile)):
            print(step.tsv())
    else:
        print("\n".join(context_files(args.root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
