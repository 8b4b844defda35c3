#!/usr/bin/env bash
# pgbench select-only throughput: direct Postgres vs pgbouncer vs pgmld.
#
#   bench/pgbench/run.sh                 # 2 client counts x 3 modes x 3 targets, 30 s each (~10 min)
#   DURATION=5 bench/pgbench/run.sh      # quick check
#   ROUNDS=3 DURATION=10 bench/pgbench/run.sh   # 3 interleaved rounds, medians per cell
#
# Runs `pgbench -S -c <clients> -j $JOBS -T $DURATION -M <mode> -l` for every client count
# in $CLIENTS, every protocol mode (simple, extended, prepared) and every target,
# interleaved per mode (in reverse order every other round). Each cell reports TPS and the
# p50 / p99 transaction latency read from pgbench's per-transaction log (`--log`); with
# ROUNDS > 1 the whole sequence runs that many times and each figure is the median over the
# rounds (single runs on a shared 2-CPU machine vary by ±20 %), the last column lists
# pgmld ÷ pgbouncer per round, and bench/pgbench/ratios.py's table (geometric mean of those
# ratios with a bootstrap 95 % interval) closes the report. Targets:
#   direct     Postgres at $PG_HOST:$PG_PORT (trust auth as $PG_USER)
#   pgbouncer  a private pgbouncer (session pooling, a server connection per client) started
#              here on a free port; the Debian package is installed with apt-get when missing
#              and we are root
#   pgmld      $PGMLD_BIN started here on a free port (skipped, with a note, when missing)
# The data set is `pgbench -i -s $SCALE` in database $BENCH_DB, created directly on Postgres
# (re-initialised only when missing or at another scale, or with FORCE_INIT=1).
# Prints a markdown table and writes it, with the date, machine and command, to $OUT.
# Everything started here is stopped on exit.
#
# Environment (defaults): DURATION (30) SCALE (10) CLIENTS ("8 50") JOBS (2) ROUNDS (1)
#   MODES ("simple extended prepared") TARGETS ("direct pgbouncer pgmld")
#   PG_HOST (127.0.0.1) PG_PORT (5432) PG_USER (postgres) BENCH_DB (pgbench_bench)
#   SSLMODE (disable: pgbench's and pgmld's upstream sslmode, as pgbouncer's defaults)
#   PGMLD_BIN (target/release/pgmld) OUT (bench/pgbench/results.md) FORCE_INIT (0)
# Relative PGMLD_BIN / OUT given by the caller are taken from the caller's directory;
# the defaults are under the repository root.
set -euo pipefail

ORIG_PWD=$PWD
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$ORIG_PWD/$1" ;; esac; }

# The command as run, for the report: whatever the caller set beyond the sizes.
CALLER_SET=""
for v in MODES TARGETS PG_HOST PG_PORT PG_USER BENCH_DB SSLMODE FORCE_INIT PGMLD_BIN OUT; do
  if [[ -n "${!v+set}" ]]; then CALLER_SET+=" $v=$(printf '%q' "${!v}")"; fi
done

DURATION=${DURATION:-30}
SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-8 50}
JOBS=${JOBS:-2}
ROUNDS=${ROUNDS:-1}
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive integer, got '$ROUNDS'" >&2; exit 2; }
MODES=${MODES:-simple extended prepared}
TARGETS=${TARGETS:-direct pgbouncer pgmld}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-postgres}
BENCH_DB=${BENCH_DB:-pgbench_bench}
# Every leg in plaintext by default (pgbench's sslmode, pgmld's upstream sslmode), as
# pgbouncer's defaults are, so no target pays for TLS the others do not.
SSLMODE=${SSLMODE:-disable}
export PGSSLMODE=$SSLMODE
FORCE_INIT=${FORCE_INIT:-0}
if [[ -n "${PGMLD_BIN:-}" ]]; then BIN=$(abspath "$PGMLD_BIN"); else BIN=$ROOT/target/release/pgmld; fi
if [[ -n "${OUT:-}" ]]; then OUT_FILE=$(abspath "$OUT"); else OUT_FILE=$ROOT/bench/pgbench/results.md; fi
INVOCATION="DURATION=$DURATION SCALE=$SCALE CLIENTS=\"$CLIENTS\" JOBS=$JOBS ROUNDS=$ROUNDS$CALLER_SET bench/pgbench/run.sh"
MAX_CLIENTS=$(printf '%s\n' $CLIENTS | sort -n | tail -1)

log() { printf '[pgbench-run] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
for tool in pgbench psql pg_isready; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install postgresql-client)"
done

# --- cleanup of everything started here -----------------------------------------------
WORK=$(mktemp -d /tmp/pgbench-run.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  local pid i
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    return
  fi
  local p
  for ((;;)); do
    p=$((20000 + RANDOM % 30000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

# wait_ready PORT PID NAME: until the port answers like Postgres, the process is alive.
wait_ready() {
  local port=$1 pid=$2 name=$3 i
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || { log "$name exited during startup"; return 1; }
    pg_isready -q -h 127.0.0.1 -p "$port" -U "$PG_USER" -d "$BENCH_DB" -t 1 && return 0
    sleep 0.1
  done
  log "$name not ready on port $port after 30 s"
  return 1
}

psql_direct() { psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$@"; }

# --- data set --------------------------------------------------------------------------
pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -t 5 \
  || die "Postgres not answering at $PG_HOST:$PG_PORT"
SERVER_VERSION=$(psql_direct -d postgres -Atc 'show server_version')
if [[ -z $(psql_direct -d postgres -Atc "select 1 from pg_database where datname = '$BENCH_DB'") ]]; then
  log "creating database $BENCH_DB"
  psql_direct -d postgres -c "create database \"$BENCH_DB\""
fi
current_scale=0
if [[ -n $(psql_direct -d "$BENCH_DB" -Atc "select to_regclass('pgbench_branches')") ]]; then
  current_scale=$(psql_direct -d "$BENCH_DB" -Atc 'select count(*) from pgbench_branches')
fi
if [[ "$FORCE_INIT" == 1 || "$current_scale" != "$SCALE" ]]; then
  log "initialising $BENCH_DB at scale $SCALE (was $current_scale)"
  pgbench -i -q -s "$SCALE" -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$BENCH_DB" >"$WORK/init.log" 2>&1 \
    || { cat "$WORK/init.log" >&2; die "pgbench -i failed"; }
else
  log "$BENCH_DB already at scale $SCALE (FORCE_INIT=1 to redo)"
fi

# --- targets ---------------------------------------------------------------------------
declare -A PORT
NOTES=()
PGB_VERSION=n/a
PGMLD_VERSION=n/a
PGMLD_CMD=n/a

want() { [[ " $TARGETS " == *" $1 "* ]]; }

if want direct; then PORT[direct]=$PG_PORT; fi

start_pgbouncer() {
  local pgb
  pgb=$(command -v pgbouncer || ls /usr/sbin/pgbouncer 2>/dev/null || true)
  if [[ -z "$pgb" ]]; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
      log "installing pgbouncer with apt-get"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >"$WORK/apt.log" 2>&1 \
        || { apt-get update -q >>"$WORK/apt.log" 2>&1 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >>"$WORK/apt.log" 2>&1; } \
        || { tail -5 "$WORK/apt.log" >&2; NOTES+=("pgbouncer: apt-get install failed"); return 1; }
      pgb=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
    else
      NOTES+=("pgbouncer: not installed (apt-get install pgbouncer)")
      return 1
    fi
  fi
  PGB_VERSION=$("$pgb" --version 2>/dev/null | head -1)
  local dir=$WORK/pgbouncer port
  port=$(free_port)
  mkdir -p "$dir"
  printf '"%s" ""\n' "$PG_USER" >"$dir/userlist.txt"
  cat >"$dir/pgbouncer.ini" <<INI
[databases]
* = host=$PG_HOST port=$PG_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = session
max_client_conn = $((MAX_CLIENTS + 50))
; Session pooling with a server connection for every client: nobody queues for one.
default_pool_size = $MAX_CLIENTS
; Idle server connections close at once between cells, so the next target's clients find
; Postgres' connection slots free (max_connections is often 100: 50 pooled + 50 direct
; would not fit). A running cell's connections are never idle in session mode.
server_idle_timeout = 1
ignore_startup_parameters = extra_float_digits
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
  local run=()
  if [[ $(id -u) == 0 ]]; then
    # pgbouncer refuses to run as root; setpriv execs, so $! is pgbouncer itself.
    chown -R postgres: "$dir"
    run=(setpriv --reuid=postgres --regid=postgres --init-groups)
  fi
  "${run[@]}" "$pgb" "$dir/pgbouncer.ini" >"$dir/stdout.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  if ! wait_ready "$port" "$pid" pgbouncer; then
    tail -20 "$dir/pgbouncer.log" "$dir/stdout.log" >&2 2>/dev/null || true
    NOTES+=("pgbouncer: failed to start")
    return 1
  fi
  PORT[pgbouncer]=$port
  log "pgbouncer ($PGB_VERSION) on 127.0.0.1:$port, session pooling"
}

start_pgmld() {
  if [[ ! -x "$BIN" ]]; then
    NOTES+=("pgmld: skipped, no binary at ${BIN#"$ROOT"/} (cargo build --release --bin pgmld, or set PGMLD_BIN)")
    log "note: ${NOTES[-1]}"
    return 1
  fi
  local port
  port=$(free_port)
  mkdir -p "$WORK/pgmld-data"
  # sslmode as pgbouncer's own upstream leg (server_tls_sslmode = disable by default):
  # libpq's default, prefer, would encrypt pgmld's leg alone (a third more CPU per query).
  local args=(--listen "127.0.0.1:$port" --upstream "postgres://$PG_USER@$PG_HOST:$PG_PORT/postgres?sslmode=$SSLMODE"
              --metrics-listen '' --data-dir "$WORK/pgmld-data")
  PGMLD_VERSION=$(env -u PGMLD_BIN "$BIN" --version 2>/dev/null | head -1 || true)
  PGMLD_VERSION=${PGMLD_VERSION:-unknown}
  PGMLD_CMD="${BIN#"$ROOT"/}$(printf ' %q' "${args[@]}")"
  PGMLD_CMD=${PGMLD_CMD//"$WORK"/\$TMP}
  # pgmld rejects unknown PGMLD_* variables, and PGMLD_BIN is this script's.
  env -u PGMLD_BIN "$BIN" "${args[@]}" >"$WORK/pgmld.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  if ! wait_ready "$port" "$pid" pgmld \
     || ! psql -X -q -h 127.0.0.1 -p "$port" -U "$PG_USER" -d "$BENCH_DB" -Atc 'select 1' >/dev/null 2>>"$WORK/pgmld.log"; then
    tail -20 "$WORK/pgmld.log" >&2
    NOTES+=("pgmld: failed to start or to answer a query; last log line: $(tail -1 "$WORK/pgmld.log")")
    return 1
  fi
  PORT[pgmld]=$port
  log "pgmld ($PGMLD_VERSION) on 127.0.0.1:$port"
}

if want pgbouncer; then start_pgbouncer || true; fi
if want pgmld; then start_pgmld || true; fi

# --- runs ------------------------------------------------------------------------------
declare -A TPS P50 P99
# latency_percentiles LOGPREFIX: "p50 p99" in ms over every transaction pgbench logged
# (third field of each `--log` line: the transaction's latency in microseconds).
latency_percentiles() {
  cat "$1".* 2>/dev/null | awk '{ print $3 }' | sort -n \
    | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "n/a n/a"; exit }
        i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
        i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
        printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000 }'
}
# wait_backends_gone: until no backend of $BENCH_DB is left from the previous cell (a
# pooler's idle server connections, a proxy's sessions still closing), at most 30 s.
wait_backends_gone() {
  local n
  for _ in $(seq 1 60); do
    n=$(psql_direct -d postgres -Atc "SELECT count(*) FROM pg_stat_activity WHERE datname = '$BENCH_DB'" || echo 0)
    [[ "$n" == 0 ]] && return 0
    sleep 0.5
  done
  log "warning: $n backends of $BENCH_DB still open before the next cell"
}
# median of the numbers given (n/a when none is a number)
median() {
  printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g \
    | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
declare -A ALL_TPS ALL_P50 ALL_P99
for round in $(seq 1 "$ROUNDS"); do
for clients in $CLIENTS; do
  pgbench_args=(-S -c "$clients" -j "$JOBS" -T "$DURATION")
  for mode in $MODES; do
    # Every other round in reverse order: a target that always ran second (after the
    # other's backends closed, its logs were sorted) would carry that in every round.
    order="direct pgbouncer pgmld"
    ((round % 2 == 0)) && order="pgmld pgbouncer direct"
    for target in $order; do
      want "$target" || continue
      cell=$target,$clients,$mode
      if [[ -z "${PORT[$target]:-}" ]]; then TPS[$cell]=n/a; continue; fi
      host=127.0.0.1; [[ $target == direct ]] && host=$PG_HOST
      logf=$WORK/$target-$clients-$mode.log
      txlog=$WORK/tx-$target-$clients-$mode
      wait_backends_gone
      log "round $round/$ROUNDS: $target / $clients clients / $mode: pgbench ${pgbench_args[*]} -M $mode -l (${DURATION}s)"
      rc=0
      pgbench -h "$host" -p "${PORT[$target]}" -U "$PG_USER" "${pgbench_args[@]}" -M "$mode" \
        -l --log-prefix="$txlog" "$BENCH_DB" >"$logf" 2>&1 || rc=$?
      tps=$(awk '/^tps = .*without initial connection time/ { print $3; exit }' "$logf")
      if [[ -z "$tps" ]]; then
        tail -15 "$logf" >&2
        TPS[$cell]=failed
        NOTES+=("$target / $clients clients / $mode: pgbench failed (exit $rc)")
        continue
      fi
      if [[ $rc != 0 ]]; then NOTES+=("$target / $clients clients / $mode: pgbench exit $rc (errors during the run)"); fi
      failed=$(awk '/^number of failed transactions:/ { print $5; exit }' "$logf")
      if [[ -n "$failed" && "$failed" != 0 ]]; then NOTES+=("$target / $clients clients / $mode: $failed failed transactions"); fi
      read -r p50 p99 < <(latency_percentiles "$txlog")
      rm -f "$txlog".*
      ALL_TPS[$cell]+=" $tps"; ALL_P50[$cell]+=" $p50"; ALL_P99[$cell]+=" $p99"
      # shellcheck disable=SC2086
      TPS[$cell]=$(median ${ALL_TPS[$cell]}); P50[$cell]=$(median ${ALL_P50[$cell]}); P99[$cell]=$(median ${ALL_P99[$cell]})
      log "$target / $clients clients / $mode: tps = $tps, p50 = $p50 ms, p99 = $p99 ms"
    done
  done
done
done

# --- report ----------------------------------------------------------------------------
fmt_tps() { [[ "$1" =~ ^[0-9.]+$ ]] && printf '%.0f' "$1" || printf '%s' "$1"; }
ratio() { [[ "$1" =~ ^[0-9.]+$ && "$2" =~ ^[0-9.]+$ ]] && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }' || printf 'n/a'; }
table() {
  echo "| clients | mode | direct TPS | pgbouncer TPS | pgmld TPS | pgmld/pgbouncer TPS | direct p50 / p99 ms | pgbouncer p50 / p99 ms | pgmld p50 / p99 ms | pgmld/pgbouncer p99 | pgmld/pgbouncer TPS by round |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  local c m d b p
  for c in $CLIENTS; do
    for m in $MODES; do
      d=${TPS[direct,$c,$m]:-n/a}; b=${TPS[pgbouncer,$c,$m]:-n/a}; p=${TPS[pgmld,$c,$m]:-n/a}
      echo "| $c | $m | $(fmt_tps "$d") | $(fmt_tps "$b") | $(fmt_tps "$p") | $(ratio "$p" "$b")" \
        "| $(lat direct "$c" "$m") | $(lat pgbouncer "$c" "$m") | $(lat pgmld "$c" "$m")" \
        "| $(ratio "${P99[pgmld,$c,$m]:-}" "${P99[pgbouncer,$c,$m]:-}") | $(round_ratios "$c" "$m") |"
    done
  done
}
lat() { printf '%s / %s' "${P50[$1,$2,$3]:-n/a}" "${P99[$1,$2,$3]:-n/a}"; }
# round_ratios CLIENTS MODE: pgmld ÷ pgbouncer TPS of each round, the two runs of a round
# being next to each other in time: their spread shows how much of a median's difference is
# the machine's own drift (n/a when a round lacks either run).
round_ratios() {
  local -a p b
  read -r -a p <<<"${ALL_TPS[pgmld,$1,$2]:-}"
  read -r -a b <<<"${ALL_TPS[pgbouncer,$1,$2]:-}"
  if ((${#p[@]} == 0 || ${#p[@]} != ${#b[@]})); then printf 'n/a'; return; fi
  local i out=()
  for i in "${!p[@]}"; do out+=("$(ratio "${p[$i]}" "${b[$i]}")"); done
  printf '%s' "${out[*]}"
}

TABLE=$(table)
echo
echo "$TABLE"
if ((${#NOTES[@]})); then printf '\nNotes:\n'; printf -- '- %s\n' "${NOTES[@]}"; fi

CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
MEM=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null || true)
OS=$(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release 2>/dev/null)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)
mkdir -p "$(dirname "$OUT_FILE")"
{
  echo "# pgbench select-only: direct Postgres vs pgbouncer vs pgmld"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- Machine: $(nproc) CPUs, ${CPU_MODEL:-unknown CPU}, ${MEM:-? GiB}, $OS, Linux $(uname -r)"
  echo "- Postgres $SERVER_VERSION at $PG_HOST:$PG_PORT; $PGB_VERSION; pgmld: $PGMLD_VERSION (repo commit $COMMIT)"
  echo "- Command: \`$INVOCATION\`"
  echo "- Each cell: \`pgbench -h <host> -p <port> -U $PG_USER -S -c <clients> -j $JOBS -T $DURATION -M <mode> -l $BENCH_DB\`" \
       "after \`pgbench -i -s $SCALE $BENCH_DB\` on Postgres directly"
  echo "- Latency: p50 / p99 over every transaction in pgbench's \`--log\` (its latency field), in ms"
  echo "- Rounds: $ROUNDS, interleaved (every cell of a round before the next round); targets in reverse order every other round; each figure is the median over the rounds"
  echo "- pgbouncer: pool_mode = session, default_pool_size = $MAX_CLIENTS, max_client_conn = $((MAX_CLIENTS + 50)), server_idle_timeout = 1, auth_type = trust"
  echo "- pgmld: \`$PGMLD_CMD\`"
  echo "- TLS: none on any leg (pgbench PGSSLMODE=$SSLMODE, pgmld upstream sslmode=$SSLMODE, pgbouncer's defaults)"
  echo "- pgbench, Postgres and the proxy share the same $(nproc) CPUs, so proxy CPU cost shows up as lost TPS."
  echo
  echo "$TABLE"
  if ((ROUNDS > 1)); then
    echo
    echo "Per round (TPS; p99 ms), in round order:"
    echo
    for c in $CLIENTS; do for m in $MODES; do for t in direct pgbouncer pgmld; do
      [[ -n "${ALL_TPS[$t,$c,$m]:-}" ]] || continue
      echo "- $c clients, $m, $t: TPS${ALL_TPS[$t,$c,$m]}; p99${ALL_P99[$t,$c,$m]}"
    done; done; done
  fi
  if ((${#NOTES[@]})); then echo; echo "Notes:"; printf -- '- %s\n' "${NOTES[@]}"; fi
} >"$OUT_FILE"
# Paired ratios per cell (geometric mean of the rounds, bootstrap 95 % interval), read back
# from the per-round lines just written.
if ((ROUNDS > 1)) && want pgbouncer && want pgmld && command -v python3 >/dev/null; then
  if ! ratios=$(python3 "$ROOT/bench/pgbench/ratios.py" "$OUT_FILE" 2>&1); then
    log "warning: no paired ratios: $ratios"
  else
    printf '\nPaired per round (`bench/pgbench/ratios.py`): geometric mean of pgmld ÷ pgbouncer over the rounds, bootstrap 95 %% interval:\n\n%s\n' "$ratios" >>"$OUT_FILE"
    printf '%s\n' "$ratios"
  fi
fi
log "wrote ${OUT_FILE}"
