#!/usr/bin/env bash
# pgmld's container images built with podman where no image registry is reachable:
#   - localhost/pgmld-debian:bookworm        Debian bookworm (minbase + libgomp1, CA certs) made
#     with mmdebstrap from Debian's own packages, then `podman import`;
#   - localhost/pgmld-postgres:15            Debian's postgresql-15 on such a base, started
#     like the official postgres image (POSTGRES_PASSWORD; Containerfile.postgres);
#   - localhost/pgmld:local                  deploy/Dockerfile with PGMLD_FROM=prebuilt over
#     the pgmld that `scripts/setup.sh install` lays out (bin/ + the libraries it loads).
#
#   cargo build --release --bin pgmld && bash deploy/podman/build.sh
#   PGMLD_BINARY=target/debug/pgmld bash deploy/podman/build.sh   # another binary
#   bash deploy/podman/compose.sh up -d                             # then run compose.yaml
#
# Base images are built once (delete them with `podman rmi` to refresh). Needs root (or
# podman's rootless set-up), mmdebstrap and podman (Debian packages). podman runs with
# deploy/podman/containers.conf unless CONTAINERS_CONF says otherwise.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CONTAINERS_CONF=$(realpath "${CONTAINERS_CONF:-$ROOT/deploy/podman/containers.conf}")
export CONTAINERS_CONF
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BIN=${PGMLD_BINARY:-$ROOT/target/release/pgmld}
log() { printf '[podman-build] %s\n' "$*" >&2; }
die() { printf '[podman-build] error: %s\n' "$*" >&2; exit 1; }
for cmd in podman mmdebstrap; do
    command -v "$cmd" >/dev/null || die "$cmd not found (apt-get install podman mmdebstrap)"
done
[ -x "$BIN" ] || die "no pgmld binary at $BIN (cargo build --release --bin pgmld, or set PGMLD_BINARY)"

# A root filesystem from Debian's packages, imported as an image.
base_image() {
    local name=$1 packages=$2 tar
    if podman image exists "$name"; then
        log "$name present"
        return
    fi
    tar=$(mktemp --suffix .tar)
    log "mmdebstrap bookworm ($packages) -> $name"
    mmdebstrap --quiet --variant=minbase --include="$packages" bookworm "$tar" "$MIRROR"
    podman import --quiet "$tar" "$name" >/dev/null
    rm -f "$tar"
}
base_image localhost/pgmld-debian:bookworm libgomp1,ca-certificates
base_image localhost/pgmld-postgres-base:bookworm postgresql-15,ca-certificates

log "building localhost/pgmld-postgres:15"
podman build --quiet -t localhost/pgmld-postgres:15 -f "$ROOT/deploy/podman/Containerfile.postgres" \
    "$ROOT/deploy/podman" >/dev/null

# The build context holds only deploy/dist: the prebuilt stage needs nothing else.
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
bash "$ROOT/scripts/setup.sh" install --prefix "$ctx/deploy/dist" --binary "$BIN"
# Untagged images this build leaves (the image it replaces, the prebuilt stage) are
# removed afterwards, so rebuilds do not pile up; untagged images that were there before
# are not ours and stay.
dangling() { podman image ls --quiet --no-trunc --filter dangling=true | sort; }
before=$(dangling)
log "building localhost/pgmld:local from $BIN"
podman build --quiet --network host -f "$ROOT/deploy/Dockerfile" \
    --build-arg PGMLD_FROM=prebuilt \
    --build-arg RUNTIME_IMAGE=localhost/pgmld-debian:bookworm \
    --build-arg BUILD_IMAGE=localhost/pgmld-debian:bookworm \
    -t localhost/pgmld:local "$ctx" >/dev/null
comm -13 <(echo "$before") <(dangling) | xargs -r podman rmi >/dev/null 2>&1 || true
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
    | grep -E '^localhost/pgmld(-postgres)?:(local|15) ' >&2
