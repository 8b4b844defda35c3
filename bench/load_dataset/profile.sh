#!/usr/bin/env bash
# Where the time of one pgml.load_dataset goes: perf on pgmld (its threads) and on the
# whole machine (Postgres backend included) during one load.
#
#   bench/load_dataset/profile.sh bench/load_dataset/data/imdb.csv [OUTDIR]
#
# Needs perf and a pgmld built with debug info (the release profile has it). Data files come
# from bench/load_dataset/run.sh. Loads into database $BENCH_DB (load_bench) and drops the table.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FILE=$(realpath "$1")
OUTDIR=${2:-$(mktemp -d /tmp/load-profile.XXXXXX)}
BIN=${PGMLD_BIN:-$ROOT/target/release/pgmld}
DB=${BENCH_DB:-load_bench}
PG="psql -X -q -h 127.0.0.1 -U postgres"
mkdir -p "$OUTDIR/pgmld-data"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" --listen 127.0.0.1:$PORT --upstream postgres://postgres@127.0.0.1:5432/postgres --metrics-listen '' \
  --data-dir "$OUTDIR/pgmld-data" >"$OUTDIR/pgmld.log" 2>&1 &
PID=$!
PERF_PIDS=()
cleanup() {
  for p in "${PERF_PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${PERF_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  kill -TERM "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
}
trap cleanup EXIT
until $PG -p $PORT -d "$DB" -c 'SELECT pgml.version()' >/dev/null 2>&1; do
  kill -0 $PID || { cat "$OUTDIR/pgmld.log"; exit 1; }
  sleep 0.2
done
STEM=$(basename "$FILE"); STEM=${STEM%%.*}
$PG -d "$DB" -c "DROP TABLE IF EXISTS pgml.$STEM" -c CHECKPOINT
perf record -F 4000 -g -p $PID -o "$OUTDIR/pgmld.perf" 2>/dev/null & PERF_PIDS+=($!)
perf record -F 4000 -g -a -o "$OUTDIR/all.perf" 2>/dev/null & PERF_PIDS+=($!)
sleep 1
/usr/bin/time -f "load: %e s wall (psql)" $PG -p $PORT -d "$DB" -c "SELECT * FROM pgml.load_dataset('$FILE')"
sleep 0.2
cleanup; trap - EXIT
PERF_PIDS=()
$PG -d "$DB" -c "DROP TABLE IF EXISTS pgml.$STEM"
echo "== CPU by command (whole machine; swapper = idle)"
perf report -i "$OUTDIR/all.perf" --no-children --sort comm -g none --stdio 2>/dev/null | grep '%' | head -8 || true
echo "== Postgres backend, top symbols (% of all samples)"
perf report -i "$OUTDIR/all.perf" --no-children --comm postgres --sort sym -g none --stdio 2>/dev/null | grep '%' | head -8 || true
echo "== pgmld, top symbols (% of pgmld samples)"
perf report -i "$OUTDIR/pgmld.perf" --no-children --sort comm,sym -g none --stdio 2>/dev/null | grep '%' | head -15 || true
echo "perf data in $OUTDIR (perf report -i $OUTDIR/pgmld.perf)"
