#!/usr/bin/env bash
# Model-checks the flight protocol with loom: core/tests/loom.rs, one test per race (a leader
# completing, dropped or panicking while a follower joins or leaves, followers racing to be
# promoted, forget racing completion, the last waiter leaving, shared-work driver handover and
# cancellation, blocking callers, detached work); and core/tests/loom_batch.rs, the batches' models
# (a single call joining a key as a batch claims it, the last waiter of a key leaving while another
# key's waiter drives the batch, every waiter leaving at once, a batcher's window losing its opener).
#
# Issue 11's models, promotion_survives_concurrent_join_and_leave (defect 3: a lost wake-up at
# promotion; on Single, three threads) and detached_two_would_be_finishers_publish_once (defect
# 4: a Spawn that hands the task over and then panics), failed on the core before the fix
# (a deadlock; a concurrent write to the result's UnsafeCell). The latter is the longest model:
# about 90 s at bound 2.
#
#   ci/loom.sh                 run every model
#   ci/loom.sh NAME...         run the models whose names contain NAME (cargo test filters)
#
# Run it from anywhere; it works from the repository root.
#
# How: `--cfg loom` (RUSTFLAGS) switches the core's sync shim (core/src/sync.rs) to loom's
# types, and core/Cargo.toml's `[target.'cfg(loom)'.dependencies]` turns on the `loom` features
# of scc and event-listener. The loom switch is for the crate's own tests, outside semver.
# Release mode: loom explores tens of thousands of executions per model.
#
# Target directory: target/loom (or $CARGO_TARGET_DIR/loom). A different RUSTFLAGS rebuilds
# every crate; a directory of its own keeps the ordinary build's cache intact.
#
# Bound: at most 3 preemptions per execution (2 for the three largest models: the detached-mode
# one and the two with self-waking shared work); the bounds are the constants PREEMPTION_BOUND
# and HEAVY_PREEMPTION_BOUND in core/tests/loom.rs. LOOM_MAX_PREEMPTIONS=N overrides both.
# About 30 s of model checking on two cores, plus the build (3 to 4 min from scratch).
#
# A failure prints the model's failed check (an overlap, a wrong value, a leaked work future)
# or loom's own report (a deadlock, i.e. a lost wake-up; a causality violation, i.e. a missing
# happens-before on the result slot) with the backtrace of the step that failed. Rerun one model
# with `ci/loom.sh NAME`; RUST_BACKTRACE=1 LOOM_LOCATION=1 add source locations to loom's report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target_dir="${CARGO_TARGET_DIR:-target}/loom"
bound="${LOOM_MAX_PREEMPTIONS:-3 (2 for the heavy models)}"

echo "==> loom: cargo test -p coalescer --release --test loom --test loom_batch (RUSTFLAGS=--cfg loom, target dir $target_dir)"
echo "==> loom: preemption bound $bound"
started=$SECONDS
RUSTFLAGS="${RUSTFLAGS:-} --cfg loom" \
    cargo test -p coalescer --release --test loom --test loom_batch --target-dir "$target_dir" \
    -- --test-threads=1 --nocapture "$@"
echo "==> loom: every model passed ($((SECONDS - started)) s with the build)"
