#!/usr/bin/env bash
# Benchmarks of coalescer against mutex-based designs and published coalescers
# (crate `coalescer-benches`, see benches/README.md).
#
#   ci/bench.sh            the full set in the bench profile, in 3 passes (COALESCER_BENCH_PASSES;
#                          about 15 minutes on 2 cores), then
#                          the results as markdown tables (medians, ratios to coalescer, targets)
#   ci/bench.sh --quick    every scenario for a moment, as a smoke check: the competitors run and
#                          coalesce (each fan-out round checks its executions), nothing is
#                          asserted about time. It builds in the dev profile, so it reuses what
#                          `cargo test` built and its figures mean nothing.
#   ci/bench.sh [--quick] -- ARGS   passes ARGS to criterion (a filter such as "S2")
#
# The full run ends with instructions per call of every competitor in S1 and S4, counted by
# callgrind (ci/instructions.sh): unlike the timings, they do not depend on the machine's load.
#
# Output goes under the cargo target directory ($CARGO_TARGET_DIR or ./target), in
# coalescer-bench/: criterion/ (criterion's data), extras.tsv, allocs.md, report.md.
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

if [[ $quick == 1 ]]; then
    export COALESCER_BENCH_QUICK=1
    export CRITERION_HOME="$out/quick"
    export COALESCER_BENCH_EXTRAS="$out/quick-extras.tsv"
    # No baseline to compare with, and few bootstrap resamples: criterion's analysis is built
    # unoptimized here, and at its default 100,000 resamples it would take most of the time.
    rm -rf "$CRITERION_HOME"
    cargo bench -p coalescer-benches --profile dev --bench coalesce --bench allocs --bench cache -- \
        --noplot --nresamples 1000 "$@"
    ci/instructions.sh --smoke
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
} > "$out/machine.txt"
cargo bench -p coalescer-benches --bench coalesce -- --noplot "$@"
cargo bench -p coalescer-benches --bench allocs | tee "$out/allocs.md"
cargo bench -p coalescer-benches --bench cache -- --noplot "$@" | tee "$out/cache.md"
cargo run --release -q -p coalescer-benches --bin bench-report -- "$CRITERION_HOME" "$COALESCER_BENCH_EXTRAS" \
    > "$out/report.md"
# Instructions per call: the figures that hold whatever the load (callgrind), when valgrind is
# there.
if command -v valgrind >/dev/null; then
    { echo; OUT="$out/instructions.md" ci/instructions.sh; } >> "$out/report.md"
else
    echo "(valgrind is missing: no instruction counts; apt-get install valgrind)" >> "$out/report.md"
fi
echo
cat "$out/machine.txt" "$out/report.md"
echo
echo "tables in $out/report.md, allocations in $out/allocs.md"
