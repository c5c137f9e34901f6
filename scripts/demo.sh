#!/usr/bin/env bash
# Set up, deploy the bundled SmolLM2 on llama.cpp (2 workers) on an embedded local Ray cluster, chat, stat, clean up.
# The commands are the README's "What the demo does" block, line for line (tests/integration/test_readme.py checks).
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo needs only llama.cpp; `bash scripts/test.sh` (or BYZER_LIKE_ENGINES=1) installs the other engines.
BYZER_LIKE_ENGINES=${BYZER_LIKE_ENGINES:-0} bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
started_cluster=0
byzer-like cluster status >/dev/null 2>&1 || started_cluster=1
cleanup() {
  byzer-like undeploy smol_chat >/dev/null 2>&1 || true
  if [ "$started_cluster" = 1 ]; then byzer-like cluster stop || true; fi
}
trap cleanup EXIT
set -x
byzer-like deploy --pretrained_model_type custom/auto --infer_backend llama_cpp --cpus_per_worker 1 --gpus_per_worker 0 \
  --num_workers 2 --model smol_chat --replace
byzer-like chat smol_chat "What is the capital of France?" --temperature 0 --max-tokens 64
byzer-like query --model smol_chat --query "Name one colour of the rainbow." --temperature 0 --max-tokens 32
byzer-like stat smol_chat
byzer-like stat --model smol_chat --json
byzer-like undeploy --model smol_chat
# `byzer-like cluster stop` runs in cleanup, and only when this script started the cluster.
