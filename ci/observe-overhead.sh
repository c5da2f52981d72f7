#!/usr/bin/env bash
# The cost of the observability features on the hot path, in instructions per S1 call
# (callgrind counts instructions, so the figure holds on a busy machine), and in allocations per
# call. Compares the core built without features, and with `tracing,metrics` but no subscriber
# or recorder installed (what a library user who turned the features on pays until they
# install one), for a group never named (the issue's bar: within 5%) and for a named one (which
# also times each flight for its histograms).
#
#   ci/observe-overhead.sh [CALLS]     (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-100000}
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)"; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/observe}
ir() { # binary mode calls [named] -> total instructions
    local out
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >/dev/null 2>&1
    callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'
    rm -f "$out"
}
declare -A per
for features in none tracing,metrics; do
    flags=()
    [[ $features != none ]] && flags=(--features "$features")
    cargo build --quiet --release -p coalescer --example s1 "${flags[@]}"
    cp "$CARGO_TARGET_DIR/release/examples/s1" "$CARGO_TARGET_DIR/s1-$features"
    for group in unnamed named; do
        named=()
        [[ $group == named ]] && named=(named)
        for mode in work shared; do
            base=$(ir "$CARGO_TARGET_DIR/s1-$features" "$mode" 0 "${named[@]}")
            full=$(ir "$CARGO_TARGET_DIR/s1-$features" "$mode" "$calls" "${named[@]}")
            per[$features/$group/$mode]=$(( (full - base) / calls ))
            allocs=$("$CARGO_TARGET_DIR/s1-$features" "$mode" "$calls" "${named[@]}" | sed 's/.*calls, //')
            echo "features=$features group=$group mode=$mode: ${per[$features/$group/$mode]} instructions per call, $allocs"
        done
    done
done
for group in unnamed named; do
    for mode in work shared; do
        awk -v off="${per[none/$group/$mode]}" -v on="${per[tracing,metrics/$group/$mode]}" \
            -v what="$group $mode" 'BEGIN { printf "%s: features on / off = %.3f\n", what, on / off }'
    done
done
