#!/usr/bin/env bash
# Set up .venv with the test extras and run the test suite (default markers: everything but GPU tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"
