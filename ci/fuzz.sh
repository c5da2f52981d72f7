#!/usr/bin/env bash
# Fuzzes the core's forget and cancellation races, user code that panics (values' clones,
# the work's drop, keys' Hash/Eq/Clone) and its observability (trace_race: flight spans, the
# followers' follows_from links, events): the cargo-fuzz targets in fuzz/, each run against a
# reference model of the contract (fuzz/src/lib.rs says what they check).
#
#   ci/fuzz.sh SECONDS        build the targets, then run each for SECONDS, one after the other
#   ci/fuzz.sh --build-only   plain `cargo build` of the targets and `cargo test` of the fuzz
#                             crate: no libFuzzer run, no cargo-fuzz, nothing unstable
#
# Run it from anywhere; it works from the repository root. cargo-fuzz is installed
# (`cargo install cargo-fuzz --locked`) when missing. cargo-fuzz needs unstable compiler flags
# (-Zsanitizer=address); the machines have one stable toolchain, so by default they are
# unlocked with RUSTC_BOOTSTRAP=1 on it. Set FUZZ_TOOLCHAIN=nightly to use a nightly instead.
#
# Environment:
#   FUZZ_TARGETS     targets to run, space-separated (default: every target of fuzz/ but those
#                    in AWAITING_FIX below, none at present)
#   FUZZ_TOOLCHAIN   a rustup toolchain for cargo-fuzz (default: the default one + RUSTC_BOOTSTRAP=1)
#   FUZZ_SANITIZER   address (default) or none (faster, for very long runs)
#   FUZZ_ARGS        extra libFuzzer flags, e.g. "-seed=1 -max_len=2048"
#
# The generated corpus (fuzz/corpus/<target>/, except the committed seed-* files) and any
# crash (fuzz/artifacts/<target>/) stay out of git. A crash is reproduced with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --debug-assertions <target> fuzz/artifacts/<target>/<file>
# and then becomes a regression test in core/tests/fuzz_regressions.rs.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Targets left out of the default run because they find known, unfixed defects (so that CI
# stays green), space-separated; FUZZ_TARGETS still runs them. It held "unwind_race key_race"
# (issue 11's defects: a panicking clone strands followers, a panicking drop wedges the key,
# the key is hashed again after the join) until the fix landed; empty since.
AWAITING_FIX=""

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit "${1:-0}"
}

# Without --locked: the core is a path dependency whose own dependencies change under this
# crate; fuzz/Cargo.lock pins the rest, and a dependency the core adds must not break this build.
build_only() {
    echo "==> fuzz: stable build of the fuzz targets (no libFuzzer run)"
    cargo build --manifest-path fuzz/Cargo.toml --bins
    echo "==> fuzz: the driver's own tests (seed corpus replayed, model self-checks, random smoke run)"
    cargo test --manifest-path fuzz/Cargo.toml
    echo "==> fuzz: build-only OK"
}

fuzz() {
    local seconds=$1
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "==> fuzz: cargo-fuzz is missing; installing it (cargo install cargo-fuzz --locked)"
        cargo install cargo-fuzz --locked
    fi
    local cargo=(cargo)
    if [[ -n ${FUZZ_TOOLCHAIN:-} ]]; then
        cargo=(cargo "+${FUZZ_TOOLCHAIN}")
        echo "==> fuzz: toolchain ${FUZZ_TOOLCHAIN}"
    else
        export RUSTC_BOOTSTRAP=1
        echo "==> fuzz: toolchain $(rustc --version) with RUSTC_BOOTSTRAP=1"
    fi
    local flags=(--debug-assertions --sanitizer "${FUZZ_SANITIZER:-address}")
    local targets
    if [[ -n ${FUZZ_TARGETS:-} ]]; then
        read -r -a targets <<<"${FUZZ_TARGETS}"
    else
        local all target
        read -r -a all <<<"$("${cargo[@]}" fuzz list | tr '\n' ' ')"
        targets=()
        for target in "${all[@]}"; do
            if [[ " ${AWAITING_FIX} " == *" ${target} "* ]]; then
                echo "==> fuzz: skipping ${target} (finds a known, unfixed defect; see AWAITING_FIX)"
            else
                targets+=("${target}")
            fi
        done
    fi

    echo "==> fuzz: building ${targets[*]} (release, debug assertions, sanitizer ${FUZZ_SANITIZER:-address})"
    "${cargo[@]}" fuzz build "${flags[@]}"

    local target
    for target in "${targets[@]}"; do
        echo "==> fuzz: running ${target} for ${seconds}s (one process, corpus fuzz/corpus/${target})"
        mkdir -p "fuzz/corpus/${target}"
        # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
        if ! "${cargo[@]}" fuzz run "${flags[@]}" "${target}" -- \
            -max_total_time="${seconds}" -max_len=512 -timeout=10 -print_final_stats=1 \
            ${FUZZ_ARGS:-}; then
            echo "==> fuzz: ${target} FAILED; the input is in fuzz/artifacts/${target}/" >&2
            exit 1
        fi
        echo "==> fuzz: ${target} OK"
    done
    echo "==> fuzz: all targets OK (${seconds}s each)"
}

case "${1:-}" in
    --build-only) build_only ;;
    -h | --help) usage 0 ;;
    '' | *[!0-9]*) usage 2 >&2 ;;
    *) fuzz "$1" ;;
esac
