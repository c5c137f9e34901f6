#!/usr/bin/env bash
# Set up, deploy the bundled SmolLM2 on llama.cpp (2 workers) on an embedded local Ray cluster, chat, stat, clean up.
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo needs only llama.cpp; `bash scripts/test.sh` (or BYZER_LIKE_ENGINES=1) installs the other engines.
BYZER_LIKE_ENGINES=${BYZER_LIKE_ENGINES:-0} bash scripts/setup.sh
BL=.venv/bin/byzer-like
started_cluster=0
$BL cluster status >/dev/null 2>&1 || started_cluster=1
cleanup() {
  $BL undeploy smol_chat >/dev/null 2>&1 || true
  if [ "$started_cluster" = 1 ]; then $BL cluster stop || true; fi
}
trap cleanup EXIT
set -x
$BL deploy --pretrained_model_type custom/auto --infer_backend llama_cpp --cpus_per_worker 1 --gpus_per_worker 0 \
  --num_workers 2 --model smol_chat --replace
$BL chat smol_chat "What is the capital of France?" --temperature 0 \
  --max-tokens 64
$BL query --model smol_chat --query "Name one colour of the rainbow." \
  --temperature 0 --max-tokens 32
$BL stat smol_chat
$BL stat --model smol_chat --json
$BL undeploy --model smol_chat
