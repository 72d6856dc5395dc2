#!/usr/bin/env bash
# One-command setup: a virtual environment in .venv with the project and its dev tools.
# torch is pinned to 2.13.0 in pyproject.toml, so pip takes the CPU build (no CUDA downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
echo "ready: . .venv/bin/activate"
