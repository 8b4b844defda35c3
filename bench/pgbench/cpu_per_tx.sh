#!/usr/bin/env bash
# CPU per transaction of each proxy under pgbench select-only: user and system µs that the
# proxy process itself spends per transaction (/proc/<pid>/stat ticks over the run ÷
# transactions). On a shared 2-CPU machine TPS swings by ±20 % between identical runs (and
# more under hypervisor steal); CPU per transaction moves far less, so it is what tells two
# builds of pgmld apart, and pgmld from pgbouncer.
#
#   bench/pgbench/cpu_per_tx.sh                                  # pgbouncer vs target/release/pgmld
#   BINS="old=/tmp/pgmld-old new=target/release/pgmld" ROUNDS=4 bench/pgbench/cpu_per_tx.sh
#
# The floor any proxy stands on here: bench/pgbench/floor's byte relays take pgmld's command
# line, so after `cargo build --release --manifest-path bench/pgbench/floor/Cargo.toml`
#   BINS="pgmld=target/release/pgmld tokio=bench/pgbench/floor/target/release/floor-tokio
#         epoll=bench/pgbench/floor/target/release/floor-epoll
#         framed=bench/pgbench/floor/target/release/floor-epoll-framed" bench/pgbench/cpu_per_tx.sh
#
# Environment (defaults): BINS ("pgmld=target/release/pgmld": name=path pairs) ROUNDS (4)
#   DURATION (10) CLIENTS (50) JOBS (2) MODE (simple) PG_HOST (127.0.0.1) PG_PORT (5432)
#   PG_USER (postgres) BENCH_DB (pgbench_bench, made by run.sh: pgbench -i -s 10)
# Prints one line per run, in round order (targets interleaved), then the medians. Also per
# transaction: the proxy's context switches (voluntary: it slept; involuntary: preempted) and
# the whole machine's busy CPU (/proc/stat: Postgres and pgbench included).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BINS=${BINS:-pgmld=$ROOT/target/release/pgmld}
ROUNDS=${ROUNDS:-4} DURATION=${DURATION:-10} CLIENTS=${CLIENTS:-50} JOBS=${JOBS:-2} MODE=${MODE:-simple}
PG_HOST=${PG_HOST:-127.0.0.1} PG_PORT=${PG_PORT:-5432} PG_USER=${PG_USER:-postgres} BENCH_DB=${BENCH_DB:-pgbench_bench}
export PGSSLMODE=disable
PGB=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
[[ -x $PGB ]] || { echo "pgbouncer not found (apt-get install pgbouncer)" >&2; exit 2; }
psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$BENCH_DB" -Atc 'select 1 from pgbench_accounts limit 1' >/dev/null \
  || { echo "no $BENCH_DB: run bench/pgbench/run.sh once (it runs pgbench -i)" >&2; exit 2; }
WORK=$(mktemp -d /tmp/cpu-per-tx.XXXXXX)
chmod 755 "$WORK"
declare -A PORT PID
cleanup() { for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_ready() { for _ in $(seq 1 100); do pg_isready -q -h 127.0.0.1 -p "$1" && return 0; sleep 0.1; done; return 1; }
# pgbouncer as run.sh starts it: session pooling, a server connection per client.
PORT[pgbouncer]=$(free_port)
printf '"%s" ""\n' "$PG_USER" >"$WORK/users.txt"
cat >"$WORK/pgbouncer.ini" <<INI
[databases]
* = host=$PG_HOST port=$PG_PORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${PORT[pgbouncer]}
unix_socket_dir =
auth_type = trust
auth_file = $WORK/users.txt
pool_mode = session
max_client_conn = $((CLIENTS + 50))
default_pool_size = $CLIENTS
server_idle_timeout = 1
ignore_startup_parameters = extra_float_digits
logfile = $WORK/pgbouncer.log
INI
run=()
if [[ $(id -u) == 0 ]]; then chown -R postgres: "$WORK"; run=(setpriv --reuid=postgres --regid=postgres --init-groups); fi
"${run[@]}" "$PGB" "$WORK/pgbouncer.ini" >"$WORK/pgbouncer.out" 2>&1 &
PID[pgbouncer]=$!
NAMES=(pgbouncer)
for pair in $BINS; do
  name=${pair%%=*} bin=${pair#*=}
  PORT[$name]=$(free_port)
  mkdir -p "$WORK/$name"
  "$bin" --listen "127.0.0.1:${PORT[$name]}" --upstream "postgres://$PG_USER@$PG_HOST:$PG_PORT/postgres?sslmode=disable" \
    --metrics-listen '' --data-dir "$WORK/$name" >"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  NAMES+=("$name")
done
for n in "${NAMES[@]}"; do wait_ready "${PORT[$n]}" || { echo "$n did not start (see $WORK)" >&2; exit 1; }; done
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
# Context switches of all the proxy's threads: voluntary (it slept) and involuntary (preempted).
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt/ {v += $2} /^nonvoluntary_ctxt/ {n += $2} END {print v + 0, n + 0}'; }
# Busy jiffies of the whole machine (every process, Postgres and pgbench included).
machine() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
TCK=$(getconf CLK_TCK)
: >"$WORK/runs"
for r in $(seq 1 "$ROUNDS"); do
  for n in "${NAMES[@]}"; do
    # The previous run's server connections first leave (max_connections).
    for _ in $(seq 1 50); do
      left=$(psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -Atc "select count(*) from pg_stat_activity where datname = '$BENCH_DB'" postgres)
      ((left == 0)) && break
      sleep 0.2
    done
    read -r u0 s0 < <(ticks "${PID[$n]}")
    read -r v0 i0 < <(switches "${PID[$n]}")
    m0=$(machine)
    tps=$(pgbench -h 127.0.0.1 -p "${PORT[$n]}" -U "$PG_USER" -S -c "$CLIENTS" -j "$JOBS" -T "$DURATION" -M "$MODE" "$BENCH_DB" 2>&1 \
      | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
    read -r u1 s1 < <(ticks "${PID[$n]}")
    read -r v1 i1 < <(switches "${PID[$n]}")
    m1=$(machine)
    python3 - "$r" "$n" "${tps:-0}" "$DURATION" "$TCK" "$u0" "$s0" "$u1" "$s1" "$v0" "$i0" "$v1" "$i1" "$m0" "$m1" <<'PY' | tee -a "$WORK/runs"
import sys
r, n, tps, dur, tck, u0, s0, u1, s1, v0, i0, v1, i1, m0, m1 = sys.argv[1:]
tx = float(tps) * float(dur)
us = lambda a, b: (int(b) - int(a)) * 1e6 / int(tck) / tx if tx else float("nan")
per = lambda a, b: (int(b) - int(a)) / tx if tx else float("nan")
u, s = us(u0, u1), us(s0, s1)
print(f"round {r} {n}: tps {float(tps):.0f}, user {u:.2f} us/tx, system {s:.2f} us/tx, total {u + s:.2f} us/tx, "
      f"switches {per(v0, v1):.2f} voluntary {per(i0, i1):.2f} involuntary /tx, machine {us(m0, m1):.1f} us/tx")
PY
  done
done
echo "medians over $ROUNDS rounds ($CLIENTS clients, $MODE, ${DURATION}s):"
python3 - "$WORK/runs" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"round \d+ (\S+): tps (\d+), user ([\d.]+) us/tx, system ([\d.]+) us/tx, total ([\d.]+) us/tx, "
                 r"switches ([\d.]+) voluntary ([\d.]+) involuntary /tx, machine ([\d.]+)", line)
    if m:
        rows.setdefault(m[1], []).append([float(x) for x in m.groups()[1:]])
base = rows.get("pgbouncer")
for n, v in rows.items():
    med = [statistics.median(c) for c in zip(*v)]
    ratio = f", total / pgbouncer {med[3] / statistics.median(r[3] for r in base):.2f}" if base and n != "pgbouncer" else ""
    print(f"  {n}: tps {med[0]:.0f}, user {med[1]:.2f}, system {med[2]:.2f}, total {med[3]:.2f} us/tx{ratio}; "
          f"switches {med[4]:.2f} + {med[5]:.2f} /tx; machine {med[6]:.1f} us/tx")
PY
