#!/usr/bin/env bash
# Set up everything the test suite needs, then run all of it (extra args go to pytest):
# the Python environment (setup.sh) and the system pieces the store, server and browser
# tests use (setup_system.sh: Debian chromium and postgresql when missing, the web build).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/setup_system.sh
exec .venv/bin/python -m pytest -q -n 2 "$@"
