#!/usr/bin/env bash
# Instructions per call of every async competitor of benches/, in S1 (fresh keys, one task) and
# S4 (one hot key, two tasks on one thread), with u64 and with String keys (each call clones
# its key, so a String row includes one allocation of the caller's), counted by
# callgrind: the count is the same on a quiet machine and on a busy one, so it is the figure to
# compare hot paths with. coalescer's modes and the mutex designs run with both hashers
# (foldhash, coalescer's default; SipHash, std's and so the mutex design's default); the
# published crates with their own. Then the fan-out of one flight to FANOUT_WAITERS (default
# 10,000) waiters, per waiter, against a bare event_listener::Event (src/bin/fanout.rs).
# Writes markdown tables, then the issue's goals with a verdict, to stdout (and to $OUT when
# set).
#
#   ci/instructions.sh [CALLS]        default 20000 calls per run
#   ci/instructions.sh --smoke        runs each competitor natively for 100 calls (no valgrind)
#
# Each figure is (instructions of a run with CALLS calls - those of a dry run that builds the
# same runtime, group and keys but makes no call) / CALLS. JOBS (default: the number of CPUs)
# valgrind runs go at once: instruction counts do not depend on the load.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-20000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
profile=release
[[ $calls == --smoke ]] && profile=dev
cargo build --quiet --profile "$profile" -p coalescer-benches --bin instructions --bin fanout
dir=$CARGO_TARGET_DIR/$([[ $profile == dev ]] && echo debug || echo release)
bin=$dir/instructions
fanout=$dir/fanout
# Fan-out (src/bin/fanout.rs): one flight handed to this many waiters, counted inside its
# measured phase only.
waiters=${FANOUT_WAITERS:-10000}
mapfile -t fanout_competitors < <("$fanout" --list)
# name <tab> hasher <tab> 1 if that is the competitor's default hasher
mapfile -t competitors < <("$bin" --list)
if [[ $calls == --smoke ]]; then
    for line in "${competitors[@]}"; do
        IFS=$'\t' read -r name hasher _ <<< "$line"
        for keys in u64 String; do
            for s in s1 s4; do "$bin" "$keys" "$name" "$hasher" "$s" 100; done
        done
    done
    for name in "${fanout_competitors[@]}"; do "$fanout" "$name" 100; done
    echo "instructions.sh --smoke: every competitor ran S1 and S4 with u64 and String keys, and the fan-out"
    exit 0
fi
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# One line per valgrind run: keys, name, hasher, scenario, calls or "--dry".
jobs_file=$work/jobs
for line in "${competitors[@]}"; do
    IFS=$'\t' read -r name hasher _ <<< "$line"
    for keys in u64 String; do
        for s in s1 s4; do
            printf '%s\t%s\t%s\t%s\t%s\n' "$keys" "$name" "$hasher" "$s" "--dry" >> "$jobs_file"
            printf '%s\t%s\t%s\t%s\t%s\n' "$keys" "$name" "$hasher" "$s" "$calls" >> "$jobs_file"
        done
    done
done
# Runs one job line under callgrind; prints the line and the run's total instructions.
ir() {
    local keys name hasher s arg out total
    IFS=$'\t' read -r keys name hasher s arg <<< "$1"
    out=$(mktemp "$work/cg.XXXXXX")
    if [[ $arg == --dry ]]; then
        valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$keys" "$name" "$hasher" "$s" "$calls" --dry >/dev/null 2>&1
    else
        valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$keys" "$name" "$hasher" "$s" "$calls" >/dev/null 2>&1
    fi
    total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
    rm -f "$out"
    printf '%s\t%s\n' "$1" "$total"
}
export -f ir
export bin calls work
xargs -d '\n' -P "${JOBS:-$(nproc)}" -I{} bash -c 'ir "$1"' _ {} < "$jobs_file" > "$work/totals"

# The fan-out: instructions inside `fan_out_phase` (the gate opens, the flight ends, every
# waiter is woken and handed the value) per waiter.
fan() {
    local out total
    out=$(mktemp "$work/fo.XXXXXX")
    valgrind --tool=callgrind --toggle-collect='*fan_out_phase*' --callgrind-out-file="$out" "$fanout" "$1" "$waiters" >/dev/null 2>&1
    total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
    rm -f "$out"
    printf '%s\t%d\n' "$1" $(( total / (waiters - 1) ))
}
export -f fan
export fanout waiters
printf '%s\n' "${fanout_competitors[@]}" | xargs -d '\n' -P "${JOBS:-$(nproc)}" -I{} bash -c 'fan "$1"' _ {} > "$work/fanout"
fan_of() { awk -F'\t' -v n="$1" '$1 == n { print $2 }' "$work/fanout"; }

# per-call figures: keys, name, hasher, scenario -> instructions per call
awk -F'\t' -v calls="$calls" '
    { key = $1 FS $2 FS $3 FS $4; if ($5 == "--dry") dry[key] = $6; else full[key] = $6 }
    END { for (k in full) printf "%s\t%d\n", k, (full[k] - dry[k]) / calls }
' "$work/totals" > "$work/per_call"
per() { # keys name hasher scenario
    awk -F'\t' -v k="$1" -v n="$2" -v h="$3" -v s="$4" '$1 == k && $2 == n && $3 == h && $4 == s { print $5 }' "$work/per_call"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'; }

{
    echo "Instructions per call (callgrind, $calls calls per run minus a dry run, \`ci/instructions.sh $calls\`, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)). Each call clones its key (a \`String\` is an allocation) and lends it to the competitor; ratios are to \`coalescer work\` with foldhash and the same keys:"
    echo
    echo "| competitor | hasher | S1 u64 | S1 String | S4 u64 (2 tasks, 1 thread) | S4 String |"
    echo "|---|---|---:|---:|---:|---:|"
    for line in "${competitors[@]}"; do
        IFS=$'\t' read -r name hasher default <<< "$line"
        label=$hasher
        [[ $default == 1 && $hasher != own ]] && label="$hasher (its default)"
        row="| $name | $label |"
        for col in "u64 s1" "String s1" "u64 s4" "String s4"; do
            read -r keys s <<< "$col"
            v=$(per "$keys" "$name" "$hasher" "$s")
            ref=$(per "$keys" "coalescer work" foldhash "$s")
            row+=" $v ($(ratio "$v" "$ref")×) |"
        done
        echo "$row"
    done
    echo
    min() { printf '%s\n' "$@" | sort -n | head -1; }
    verdict() { awk -v r="$1" -v g="$2" 'BEGIN { print (r <= g) ? "met" : "**missed**" }'; }
    goal() { # text value reference goal
        local r
        r=$(ratio "$2" "$3")
        echo "| $1 | $2 / $3 = ${r}× | ≤ $4× | $(verdict "$r" "$4") |"
    }
    work_f=$(per u64 "coalescer work" foldhash s1)
    shared_f=$(per u64 "coalescer work_shared" foldhash s1)
    detached_f=$(per u64 "coalescer detached (tokio)" foldhash s1)
    mutex_f=$(min "$(per u64 "std Mutex+HashMap" foldhash s1)" "$(per u64 "parking_lot Mutex+HashMap" foldhash s1)")
    mutex_s=$(min "$(per u64 "std Mutex+HashMap" SipHash s1)" "$(per u64 "parking_lot Mutex+HashMap" SipHash s1)")
    echo "Goals of issue 18 (instructions per lone S1 call, u64 keys; \"mutex\" is the better of the two mutex designs):"
    echo
    echo "| goal | figure | target | verdict |"
    echo "|---|---|---|---|"
    goal "coalescer work / mutex, both with foldhash" "$work_f" "$mutex_f" 0.85
    goal "coalescer work (foldhash) / mutex (SipHash): each its default" "$work_f" "$mutex_s" 0.7
    goal "work_shared / work" "$shared_f" "$work_f" 1.15
    goal "detached / work" "$detached_f" "$work_f" 2
    echo
    floor=$(fan_of floor)
    echo "Fan-out (\`src/bin/fanout.rs\`, one thread, its own executor): one flight handed to $waiters waiters, instructions per waiter inside the measured phase (the leader's work ends, the flight is published, every waiter is woken, polled and handed the value); the floor is a bare \`event_listener::Event\` waking the same tasks:"
    echo
    echo "| competitor | instructions per waiter | × floor |"
    echo "|---|---:|---:|"
    for name in "${fanout_competitors[@]}"; do
        echo "| $name | $(fan_of "$name") | $(ratio "$(fan_of "$name")" "$floor")× |"
    done
    echo
    echo "| goal | figure | target | verdict |"
    echo "|---|---|---|---|"
    goal "fan-out: coalescer work / the bare event" "$(fan_of "coalescer work")" "$floor" 1.1
} | tee "${OUT:-/dev/null}"
