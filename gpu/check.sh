#!/usr/bin/env bash
# The GPU check as one command for a GPU machine (see tools/gpu_check.py):
#   bash gpu/check.sh [extra tools.gpu_check flags, e.g. --gpu 1 or --cpu-smoke]
# Writes $OUT/gpu_check.json and $OUT/gpu_check.md when $OUT is set (a folder the caller collects),
# else ./gpu_check.json and ./gpu_check.md; prints the Markdown; exits with the check's status
# (0 pass, 1 a check failed, 2 bad command line).
# PYTHON picks the interpreter (default: the repository's .venv/bin/python if there, else python3); it must
# import caffe (a CUDA build for the GPU run) and the repository's packages.
set -uo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT" || exit 2
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# Unbuffered: a run cut off by a time limit still shows how far it got.
export PYTHONUNBUFFERED=1
json="${OUT:+$OUT/}gpu_check.json"
# A report left by an earlier run must not be printed as this run's (a crash writes none).
rm -f "$json" "${json%.json}.md"

"$PYTHON" -m tools.gpu_check --out "$json" "$@"
status=$?
if [ -f "${json%.json}.md" ]; then
  echo
  cat "${json%.json}.md"
fi
echo "gpu_check: exit status $status ($json)"
exit "$status"
