#!/usr/bin/env bash
# The core without default features is `#![no_std]` + `alloc`: the flight state machine, the
# named futures and `Single` must build, and nothing that needs std may come in through the
# dependency graph (scc needs std, so it must be absent).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> cargo build -p coalescer --no-default-features"
cargo build -p coalescer --no-default-features
echo "==> cargo test -p coalescer --no-default-features --lib (the state machine's unit tests)"
cargo test -p coalescer --no-default-features --lib
echo "==> dependency graph without default features"
tree=$(cargo tree -p coalescer --no-default-features -e normal,build -f '{p} {f}')
echo "$tree"
if grep -Eq '^(.* )?scc ' <<<"$tree"; then
    echo "error: scc (which needs std) is in the no_std build" >&2
    exit 1
fi
if grep -E 'event-listener' <<<"$tree" | grep -q 'std'; then
    echo "error: event-listener's std feature is on in the no_std build" >&2
    exit 1
fi
echo "no_std build ok"
