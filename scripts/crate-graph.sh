#!/usr/bin/env bash
# The workspace crate graph (each crate's direct workspace dependencies, normal and build,
# not dev), from `cargo metadata`, so docs/architecture.md can show it and CI can check it.
#   bash scripts/crate-graph.sh          # print it
#   bash scripts/crate-graph.sh --check  # fail when docs/architecture.md shows another graph
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
graph="$(cargo metadata --format-version 1 --no-deps --offline 2>/dev/null | python3 -c '
import json, sys
meta = json.load(sys.stdin)
names = {p["name"] for p in meta["packages"]}
for p in sorted(meta["packages"], key=lambda p: p["name"]):
    deps = sorted({d["name"] for d in p["dependencies"]
                   if d["name"] in names and d.get("kind") in (None, "build")})
    print(p["name"].ljust(16) + " -> " + (", ".join(deps) if deps else "(none)"))
')"
if [ "${1:-}" = --check ]; then
    doc="$(awk '/^## Crate graph/{f=1} f&&/^```$/{n++; next} f&&n==1{print} n==2{exit}' docs/architecture.md)"
    if [ "$doc" != "$graph" ]; then
        echo "docs/architecture.md shows another crate graph than Cargo.toml; run scripts/crate-graph.sh and paste:" >&2
        diff <(echo "$doc") <(echo "$graph") >&2 || true
        exit 1
    fi
    echo "crate graph in docs/architecture.md matches Cargo.toml"
else
    echo "$graph"
fi
