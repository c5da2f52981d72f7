#!/usr/bin/env bash
# The cost of the observability features on the hot path, in instructions per S1 call
# (callgrind counts instructions, so the figure holds on a busy machine), and in allocations per
# call. Compares the core built without features, and with `tracing,metrics` but no subscriber
# or recorder installed (what a library user who turned the features on pays until they
# install one).
#
#   ci/observe-overhead.sh [CALLS]     (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-100000}
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)"; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/observe}
ir() { # binary mode calls -> total instructions
    local out
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" "$1" "$2" "$3" >/dev/null 2>&1
    callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'
    rm -f "$out"
}
declare -A per
for features in none tracing,metrics; do
    flags=()
    [[ $features != none ]] && flags=(--features "$features")
    cargo build --quiet --release -p coalescer --example s1 "${flags[@]}"
    cp "$CARGO_TARGET_DIR/release/examples/s1" "$CARGO_TARGET_DIR/s1-$features"
    for mode in work shared; do
        base=$(ir "$CARGO_TARGET_DIR/s1-$features" "$mode" 0)
        full=$(ir "$CARGO_TARGET_DIR/s1-$features" "$mode" "$calls")
        per[$features/$mode]=$(( (full - base) / calls ))
        allocs=$("$CARGO_TARGET_DIR/s1-$features" "$mode" "$calls" | sed 's/.*calls, //')
        echo "features=$features mode=$mode: ${per[$features/$mode]} instructions per call, $allocs"
    done
done
for mode in work shared; do
    awk -v off="${per[none/$mode]}" -v on="${per[tracing,metrics/$mode]}" -v mode="$mode" \
        'BEGIN { printf "%s: features on / off = %.3f\n", mode, on / off }'
done
