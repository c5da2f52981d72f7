//! Random inputs through both targets' decoders, without libFuzzer: a quick smoke run.

mod common;

use arbitrary::Arbitrary;
use coalescer_fuzz::{CancellationRace, ForgetRace, KeyRace, Scenario, Summary, UnwindRace};

/// 3,000 random inputs of `T`, up to 463 bytes each.
fn smoke<T: for<'a> Arbitrary<'a>>(scenario: impl Fn(&T) -> Scenario) -> Summary {
    common::smoke(3000, 400, scenario)
}

#[test]
fn forget_race_random_inputs_keep_the_contract() {
    smoke::<ForgetRace>(ForgetRace::scenario);
}

#[test]
fn cancellation_race_random_inputs_keep_the_contract() {
    smoke::<CancellationRace>(CancellationRace::scenario);
}

// The two targets below found issue 11's defects on the core before its fix (a follower stranded
// by a panicking clone, a key wedged by a panicking drop, a key hashed after the join); they
// were ignored until the fix (ff8dad2) landed.

#[test]
fn unwind_race_random_inputs_keep_the_contract() {
    smoke::<UnwindRace>(UnwindRace::scenario);
}

#[test]
fn key_race_random_inputs_keep_the_contract() {
    smoke::<KeyRace>(KeyRace::scenario);
}
