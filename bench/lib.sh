# Shell shared by the benchmarks that compare pgmld with Python (bench/chat, bench/tune,
# bench/transform, and the generic parts of bench/load_dataset): sourced, never run.
#
#   ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
#   source "$ROOT/bench/lib.sh"
#   bench_init chat-bench bench/chat/run.sh REPS=1 STEPS=0 ... OUT DOC   # log prefix, script, its knobs
#
# Sourcing sets ORIG_PWD (the caller's directory: relative paths the caller passes are
# taken from there) and defines abspath, log and die; the bench_* functions below do the
# steps every such script takes, in the order they take them. What differs between the
# benchmarks (workload, knobs and their defaults, files to check, Python modules) stays in
# each run.sh.

ORIG_PWD=$PWD
BENCH_TAG=bench

# The absolute path of $1, relative ones taken from the caller's directory.
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$ORIG_PWD/$1" ;; esac; }
log() { printf '[%s] %s\n' "$BENCH_TAG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# bench_init TAG SCRIPT KNOB...: the log prefix; INVOCATION, the command as run (the knobs
# the caller set, in the order given, then SCRIPT), which the reports print; and the
# defaults: a KNOB written NAME=DEFAULT is set to DEFAULT when unset or empty (a bare NAME
# is only recorded; NAME= makes an unset one empty).
bench_init() {
  BENCH_TAG=$1
  local script=$2 knob name caller_set=""
  shift 2
  for knob in "$@"; do
    name=${knob%%=*}
    if [[ -n "${!name+set}" ]]; then caller_set+="$name=$(printf '%q' "${!name}") "; fi
  done
  INVOCATION="${caller_set}${script}"
  for knob in "$@"; do
    name=${knob%%=*}
    if [[ $knob == *=* && -z "${!name:-}" ]]; then printf -v "$name" '%s' "${knob#*=}"; fi
  done
}

# bench_path VAR DEFAULT: the absolute path of $VAR (a relative one taken from the caller's
# directory) when VAR is set and not empty, else DEFAULT.
bench_path() {
  if [[ -n "${!1:-}" ]]; then abspath "${!1}"; else printf '%s\n' "$2"; fi
}

# bench_report_paths HERE: OUT_FILE, DOC_FILE and NOTES_FILE from OUT, DOC and NOTES.
# OUT and DOC set but empty mean "don't write" (an empty *_FILE); unset, the defaults
# HERE/results.md and docs/benchmarks.md. NOTES defaults to HERE/notes.md.
bench_report_paths() {
  local here=$1
  if [[ -n "${OUT+set}" ]]; then OUT_FILE=${OUT:+$(abspath "$OUT")}; else OUT_FILE=$here/results.md; fi
  if [[ -n "${DOC+set}" ]]; then DOC_FILE=${DOC:+$(abspath "$DOC")}; else DOC_FILE=$ROOT/docs/benchmarks.md; fi
  NOTES_FILE=$(bench_path NOTES "$here/notes.md")
}

# bench_setup_env: cd to the repository, take scripts/setup.sh's environment (LIBTORCH,
# LD_LIBRARY_PATH with libtorch, PATH with psql and cargo) and check the tools and the
# libtorch that the Python side with the CUDA stand-ins needs.
bench_setup_env() {
  cd "$ROOT"
  eval "$(bash scripts/setup.sh env)"
  command -v psql >/dev/null || die "psql not found (bash scripts/setup.sh deps)"
  command -v python3 >/dev/null || die "python3 not found"
  command -v cc >/dev/null || die "cc not found (apt-get install gcc): needed for the CUDA stubs"
  command -v readelf >/dev/null || die "readelf not found (apt-get install binutils)"
  [[ -f $LIBTORCH/lib/libtorch_cpu.so ]] || die "$LIBTORCH missing: bash scripts/setup.sh deps"
}

# bench_check_postgres: the upstream at PG_HOST:PG_PORT answers as PG_USER.
bench_check_postgres() {
  psql -X -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -c 'SELECT 1' >/dev/null ||
    die "no Postgres at $PG_HOST:$PG_PORT"
}

# bench_need FILE [WHAT]: FILE exists, else die saying WHAT (default: FILE) is missing and that
# scripts/setup.sh deps fetches it.
bench_need() {
  [[ -f $1 ]] || die "${2:-$1} missing: bash scripts/setup.sh deps"
}

# bench_check_psycopg: psycopg 3 is in .deps/python (the pgmld side's client).
bench_check_psycopg() {
  [[ -d $ROOT/.deps/python/psycopg ]] || die "psycopg 3 missing from .deps/python: bash scripts/setup.sh deps"
}

# bench_pgmld_bin: BIN, the pgmld binary to measure: PGMLD_BIN when set, else a fresh
# `cargo build --release --bin pgmld`.
bench_pgmld_bin() {
  if [[ -n "${PGMLD_BIN:-}" ]]; then
    BIN=$(abspath "$PGMLD_BIN")
  else
    log "cargo build --release --bin pgmld"
    cargo build --release --bin pgmld >&2
    BIN=$ROOT/target/release/pgmld
  fi
  [[ -x $BIN ]] || die "$BIN missing"
}

# bench_python_deps STAMP REQS [HASHED...]: the Python side's pinned packages in
# PYDEPS=.deps/bench (pip --target --no-deps, so pip never pulls PyPI's torch: torch is the
# lean .deps/libtorch), installed again only when the pins change (STAMP holds the sha256 of
# REQS and the HASHED files it includes). Then only PYDEPS and .deps/libtorch go on
# PYTHONPATH (setup.sh's env adds the test clients' packages), and the CUDA stand-ins that
# let Python import the lean torch are built when missing (see bench/tune/notes.md).
bench_python_deps() {
  local stamp=$PYDEPS_DIR/$1 reqs=$2 want
  shift 2
  PYDEPS=$PYDEPS_DIR
  STUBS=$PYDEPS/cuda-stubs
  want=$(cat "$reqs" "$@" | sha256sum | cut -d' ' -f1)
  if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    log "installing ${reqs#"$ROOT"/} into $PYDEPS (--no-deps: torch is .deps/libtorch)"
    mkdir -p "$PYDEPS"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      --no-deps --upgrade --target "$PYDEPS" -r "$reqs" >&2
    echo "$want" >"$stamp"
  fi
  export PYTHONPATH=$PYDEPS:$ROOT/.deps/libtorch
  export LD_LIBRARY_PATH=$STUBS:$LD_LIBRARY_PATH
  if ! python3 -c 'import torch' 2>/dev/null; then
    log "building CUDA stand-ins in $STUBS so Python can import the lean torch"
    rm -rf "$STUBS"
    python3 "$ROOT/bench/tune/bench.py" stubs "$STUBS" --torch-dir "$LIBTORCH" >&2
  fi
}

# bench_python_imports MODULE...: the Python side imports them (torch first) on the CPU.
bench_python_imports() {
  local modules
  modules=$(IFS=,; printf '%s' "$*")
  python3 -c "import ${modules//,/, }; assert not torch.cuda.is_available()" ||
    die "cannot import ${modules//,/ + } from $PYDEPS and $ROOT/.deps/libtorch"
}

PYDEPS_DIR=${ROOT:?set ROOT before sourcing bench/lib.sh}/.deps/bench
