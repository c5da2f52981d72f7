#!/usr/bin/env bash
# Benchmarks of coalescer against mutex-based designs, the published coalescers and Go's
# x/sync singleflight (crate `coalescer-benches`, see benches/README.md).
#
#   ci/bench.sh            the full set in the bench profile, in 3 passes (COALESCER_BENCH_PASSES;
#                          15-25 minutes on 2 cores, plus the waits for a quiet machine), then
#                          the results as markdown tables: timings (medians, ratios to coalescer,
#                          CPU / wall of the 2-task figures, the goals), instructions per call
#                          (callgrind), the wake-all cost, Go's figures, allocations
#   ci/bench.sh --quick    every scenario for a moment, as a smoke check: the competitors run and
#                          coalesce (each fan-out round checks its executions), nothing is
#                          asserted about time, nothing waits for a quiet machine. It builds in
#                          the dev profile, so it reuses what `cargo test` built and its figures
#                          mean nothing.
#   ci/bench.sh [--quick] -- ARGS   passes ARGS to criterion (a filter such as "S2")
#
# A quiet machine: before each timed pass (and before the Go and wake-all runs) the script
# waits until the 1-minute load average is below COALESCER_BENCH_MAX_LOAD per core (default
# 0.5), for at most COALESCER_BENCH_QUIET_WAIT seconds (default 300); then it runs anyway and
# the report marks those figures as taken on a loaded machine. Instruction counts (callgrind)
# do not depend on the load, so they run without waiting.
#
# Output goes under the cargo target directory ($CARGO_TARGET_DIR or ./target), in
# coalescer-bench/: criterion/ (criterion's data), extras.tsv, allocs.md, instructions.md,
# wake-all.md, go.txt, report.md.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) quick=1; shift ;;
        --) shift; break ;;
        *) echo "usage: ci/bench.sh [--quick] [-- criterion args]" >&2; exit 2 ;;
    esac
done

target="${CARGO_TARGET_DIR:-$PWD/target}"
out="$target/coalescer-bench"
mkdir -p "$out"

load() { cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?"; }

# Waits for a load average below COALESCER_BENCH_MAX_LOAD per core (see above); prints it.
wait_quiet() {
    local what=$1 max budget waited=0
    max=$(awk -v m="${COALESCER_BENCH_MAX_LOAD:-0.5}" -v n="$(nproc)" 'BEGIN { print m * n }')
    budget=${COALESCER_BENCH_QUIET_WAIT:-300}
    while awk -v l="$(load)" -v m="$max" 'BEGIN { exit !(l >= m) }'; do
        if (( waited >= budget )); then
            echo "$what: load average $(load) (>= $max) after ${waited} s: running anyway, on a loaded machine"
            return
        fi
        (( waited % 30 == 0 )) && echo "$what: load average $(load), waiting for < $max (${waited} s of ${budget} s)"
        sleep 5
        waited=$((waited + 5))
    done
    echo "$what: load average $(load) (< $max) after ${waited} s: quiet"
}

# Go's x/sync singleflight in S1 (1 and 2 goroutines) and S4, GOMAXPROCS=2, when Go and x/sync
# are installed (Debian: golang-go golang-golang-x-sync-dev; GOPATH mode finds x/sync there).
# Writes go.txt (go test's output) and go.tsv (benchmark, median ns/op, median cpu/wall, load).
go_bench() {
    local benchtime=$1 count=$2 gopath=${GOPATH:-/usr/share/gocode}
    if ! command -v go >/dev/null || [[ ! -d $gopath/src/golang.org/x/sync/singleflight ]]; then
        echo "(go or golang.org/x/sync is missing: no Go figures; apt-get install golang-go golang-golang-x-sync-dev)" \
            | tee "$out/go.txt"
        rm -f "$out/go.tsv"
        return
    fi
    local at
    at=$(load)
    # A broken Go install costs the Go figures, not the whole run.
    if ! (cd benches/go && GO111MODULE=off GOPATH=$gopath GOFLAGS= GOMAXPROCS=2 \
        go test -run '^$' -bench . -benchtime "$benchtime" -count "$count" .) > "$out/go.txt" 2>&1; then
        cat "$out/go.txt"
        echo "(the Go benchmark failed: no Go figures)"
        rm -f "$out/go.tsv"
        return
    fi
    cat "$out/go.txt"
    awk -v load="$at" '
        /^Benchmark/ {
            name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
            for (i = 2; i < NF; i++) { if ($(i + 1) == "ns/op") ns[name] = ns[name] " " $i; if ($(i + 1) == "cpu/wall") cw[name] = cw[name] " " $i }
        }
        function med(list,   a, n, i, j, t) {
            n = split(list, a, " ")
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
            return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        function lo(list,   a, n, i, m) { n = split(list, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 < m + 0) m = a[i]; return m }
        function hi(list,   a, n, i, m) { n = split(list, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 > m + 0) m = a[i]; return m }
        END { for (n in ns) printf "%s\t%s\t%s\t%s\t%s\t%s\n", n, med(ns[n]), lo(ns[n]), hi(ns[n]), med(cw[n]), load }
    ' "$out/go.txt" | sort > "$out/go.tsv"
}

if [[ $quick == 1 ]]; then
    export COALESCER_BENCH_QUICK=1
    export CRITERION_HOME="$out/quick"
    export COALESCER_BENCH_EXTRAS="$out/quick-extras.tsv"
    # No baseline to compare with, and few bootstrap resamples: criterion's analysis is built
    # unoptimized here, and at its default 100,000 resamples it would take most of the time.
    rm -rf "$CRITERION_HOME"
    cargo bench -p coalescer-benches --profile dev --bench coalesce --bench allocs --bench cache -- \
        --noplot --nresamples 1000 "$@"
    cargo run -q -p coalescer-benches --bin bench-report -- "$CRITERION_HOME" "$COALESCER_BENCH_EXTRAS" \
        > "$out/quick-report.md"
    ci/instructions.sh --smoke
    cargo run -q -p coalescer-benches --bin wake-all -- 1000 10 1
    go_bench 100x 1
    # The adapters' benches: coalescer-tower against a busy-polling layer, coalescer-redis's wake
    # latency across 4 processes against a polling lock (needs redis-server: ci/redis.sh).
    cargo bench -p coalescer-tower --profile dev --bench http
    WAKE_ROUNDS=2 cargo bench -p coalescer-redis --profile dev --bench wake
    echo "bench.sh --quick: every scenario ran"
    exit 0
fi

export CRITERION_HOME="$out/criterion"
export COALESCER_BENCH_EXTRAS="$out/extras.tsv"
rm -rf "$CRITERION_HOME" "$COALESCER_BENCH_EXTRAS"
{
    echo "machine: $(nproc) CPUs, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
    echo "rustc: $(rustc --version)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "command: ci/bench.sh $*"
    echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
} > "$out/machine.txt"
# Build everything first, so that the builds do not load the machine during the timed passes.
cargo bench -p coalescer-benches --no-run
cargo build --release -p coalescer-benches --bins
cargo bench -p coalescer-benches --bench coalesce -- --noplot "$@"
wait_quiet "Go"
go_bench 2s 3
wait_quiet "wake-all"
cargo run --release -q -p coalescer-benches --bin wake-all | tee "$out/wake-all.md"
cargo bench -p coalescer-benches --bench allocs | tee "$out/allocs.md"
cargo bench -p coalescer-benches --bench cache -- --noplot "$@" | tee "$out/cache.md"
cargo run --release -q -p coalescer-benches --bin bench-report -- "$CRITERION_HOME" "$COALESCER_BENCH_EXTRAS" \
    "$out/go.tsv" > "$out/report.md"
# Instructions per call: the figures that hold whatever the load (callgrind), when valgrind is
# there.
if command -v valgrind >/dev/null; then
    { echo; OUT="$out/instructions.md" ci/instructions.sh; } >> "$out/report.md"
else
    echo "(valgrind is missing: no instruction counts; apt-get install valgrind)" >> "$out/report.md"
fi
{
    echo
    echo "#### The wake-all cost (\`wake-all\`)"
    echo
    cat "$out/wake-all.md"
    echo
    echo "#### Allocations (\`--bench allocs\`)"
    echo
    cat "$out/allocs.md"
    echo
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
} >> "$out/report.md"
echo
cat "$out/machine.txt" "$out/report.md"
echo
echo "tables in $out/report.md, allocations in $out/allocs.md"
