#!/usr/bin/env bash
# Instructions per call of every async competitor of benches/, in S1 (fresh keys, one task) and
# S4 (one hot key, two tasks on one thread), counted by callgrind: the count is the same on a
# quiet machine and on a busy one, so it is the figure to compare hot paths with. Writes a
# markdown table to stdout (and to $OUT when set).
#
#   ci/instructions.sh [CALLS]        default 20000 calls per run
#   ci/instructions.sh --smoke        runs each competitor natively for 100 calls (no valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-20000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
profile=release
[[ $calls == --smoke ]] && profile=dev
cargo build --quiet --profile "$profile" -p coalescer-benches --bin instructions
dir=$CARGO_TARGET_DIR/$([[ $profile == dev ]] && echo debug || echo release)
bin=$dir/instructions
mapfile -t competitors < <("$bin" --list)
if [[ $calls == --smoke ]]; then
    for c in "${competitors[@]}"; do
        for s in s1 s4; do "$bin" "$c" "$s" 100; done
    done
    echo "instructions.sh --smoke: every competitor ran S1 and S4"
    exit 0
fi
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
ir() { # competitor scenario calls -> total instructions
    local out
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$1" "$2" "$3" >/dev/null 2>&1
    callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'
    rm -f "$out"
}
{
    echo "Instructions per call (callgrind, $calls calls per run, \`ci/instructions.sh $calls\`, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)):"
    echo
    echo "| competitor | S1, 1 task | × coalescer work | S4, 2 tasks on 1 thread | × coalescer work |"
    echo "|---|---|---|---|---|"
    declare -A per
    for c in "${competitors[@]}"; do
        for s in s1 s4; do
            base=$(ir "$c" "$s" 0)
            full=$(ir "$c" "$s" "$calls")
            per[$c/$s]=$(( (full - base) / calls ))
        done
    done
    ref1=${per["coalescer work/s1"]}
    ref4=${per["coalescer work/s4"]}
    for c in "${competitors[@]}"; do
        awk -v c="$c" -v a="${per[$c/s1]}" -v b="${per[$c/s4]}" -v r1="$ref1" -v r4="$ref4" \
            'BEGIN { printf "| %s | %d | %.2f× | %d | %.2f× |\n", c, a, a / r1, b, b / r4 }'
    done
} | tee "${OUT:-/dev/null}"
