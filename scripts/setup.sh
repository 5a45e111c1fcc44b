#!/usr/bin/env bash
# Create .venv and install kpengine with its test tools. Safe to run again: it only
# reinstalls when pyproject.toml changed. torch is pinned to 2.13.0, the CPU wheel every
# machine here has locally; it is installed first so nothing pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.kpengine-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -m pip install -q torch==2.13.0 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import kpengine, torch; assert torch.__version__.startswith('2.13.0')"
  touch "$stamp"
fi
