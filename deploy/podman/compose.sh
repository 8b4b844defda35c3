#!/usr/bin/env bash
# Runs deploy/compose.yaml with podman-compose (pinned, installed into .deps/podman-compose
# on first use) over the images deploy/podman/build.sh made:
#   bash deploy/podman/compose.sh up -d
#   psql postgres://postgres:pgmld@127.0.0.1:6432/postgres
#   bash deploy/podman/compose.sh down -v
# Extra compose files: COMPOSE_FILES="a.yaml b.yaml"; project name: COMPOSE_PROJECT (pgmld).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CONTAINERS_CONF=$(realpath "${CONTAINERS_CONF:-$ROOT/deploy/podman/containers.conf}")
export CONTAINERS_CONF
export POSTGRES_IMAGE=${POSTGRES_IMAGE:-localhost/pgmld-postgres:15}
export PGMLD_IMAGE=${PGMLD_IMAGE:-localhost/pgmld:local}
export PGMLD_FROM=prebuilt
PC=$ROOT/.deps/podman-compose
if ! PYTHONPATH=$PC python3 -c 'import podman_compose' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --target "$PC" podman-compose==1.2.0 >&2
fi
files=(-f "$ROOT/deploy/compose.yaml")
for f in ${COMPOSE_FILES:-}; do files+=(-f "$f"); done
cmd=$1
shift
# The images are built by build.sh; compose must not try to build or pull them.
extra=()
[ "$cmd" = up ] && extra=(--no-build)
exec env PYTHONPATH="$PC" python3 -m podman_compose "${files[@]}" -p "${COMPOSE_PROJECT:-pgmld}" "$cmd" "${extra[@]}" "$@"
