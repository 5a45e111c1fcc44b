#!/usr/bin/env bash
# Set up everything the test suite needs, then run all of it (extra args go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest -q -n 2 "$@"
