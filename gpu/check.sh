#!/usr/bin/env bash
# The GPU check as one command for a GPU machine (see tools/gpu_check.py):
#   bash gpu/check.sh [extra tools.gpu_check flags, e.g. --gpu 1 or --cpu-smoke]
# Writes gpu_check.json and gpu_check.md into the folder GPU_CHECK_OUT (default results/gpu_check, made if
# missing; a relative folder is taken from the repository root); prints the Markdown; exits with the
# check's status (0 pass, 1 a check failed, 2 bad command line).
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
out_dir="${GPU_CHECK_OUT:-results/gpu_check}"
mkdir -p "$out_dir" || exit 2
json="$out_dir/gpu_check.json"
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
