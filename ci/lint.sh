#!/usr/bin/env bash
# Formatting, lints with warnings denied, and the docs with broken links denied.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo doc for the published crates (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p coalescer -p coalescer-tokio -p coalescer-smol -p coalescer-async-std -p coalescer-tower -p coalescer-redis
