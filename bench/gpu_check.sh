#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): on one CUDA GPU, in under 8 minutes, the lm recipe at
# GPT-2-small size in bfloat16 eager and compiled (tokens/s, MFU against the GPU's bf16 peak),
# GRPO steps at that size (full and LoRA), then `pytest -m cuda`. Figures go to
# $OUT/gpu_check.json, else gpu_check_out/gpu_check.json.
#
#   bench/gpu_check.sh                     # or: make gpu-check
#   bench/gpu_check.sh --only lm,tests     # any option of bench/gpu_check.py
#
# Environment: PYTHON (default .venv/bin/python, else python3), TIKTOKEN_CACHE_DIR (GPT-2's
# BPE offline; without it the lm data is character-level, and the output says so),
# GPU_PEAK_TFLOPS (dense bf16 peak of a GPU not in the table: H100/H200, A100, L4).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
exec timeout "${GPU_CHECK_TIMEOUT:-900}" "$PYTHON" bench/gpu_check.py "$@"
