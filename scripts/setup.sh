#!/usr/bin/env bash
# Create .venv and install byzer-like with the llama.cpp engine (and test tools with --test). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip wheel setuptools
extras="llama-cpp,saas"
[ "${1:-}" = "--test" ] && extras="llama-cpp,saas,test"
# NOTE: llama-cpp-python compiles from source (no wheel for this platform); LLAVA off saves minutes.
# pip caches the built wheel, so later installs on the same machine take seconds.
CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" pip install -q -e ".[${extras}]"
echo "byzer-like installed in .venv ($(.venv/bin/byzer-like --version))"
