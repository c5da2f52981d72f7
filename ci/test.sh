#!/usr/bin/env bash
# The README's test command: every test of the workspace (unit, integration, conformance on
# every runtime, the demo's integration test, doctests). The soak test is #[ignore]d here; it
# runs from ci/soak.sh. Ends with one line that adds up every test binary's result.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "==> cargo test --workspace"
cargo test --workspace 2>&1 | tee "$log"
# The core's observability test needs its optional features (tracing, metrics).
echo "==> cargo test -p coalescer --all-features --test observe"
cargo test -p coalescer --all-features --test observe 2>&1 | tee -a "$log"
# `test result: ok. 11 passed; 0 failed; 2 ignored; ...` per binary: add them up.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "\nworkspace tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
