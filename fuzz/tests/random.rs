//! Random inputs through both targets' decoders, without libFuzzer: a quick smoke run.

use arbitrary::{Arbitrary, Unstructured};
use coalescer_fuzz::{CancellationRace, ForgetRace, KeyRace, Scenario, Summary, UnwindRace, run};

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn smoke<T: for<'a> Arbitrary<'a>>(scenario: impl Fn(&T) -> Scenario) -> Summary {
    let mut total = Summary::default();
    for seed in 0..3000 {
        let data = bytes(seed, 64 + (seed as usize % 400));
        let Ok(input) = T::arbitrary_take_rest(Unstructured::new(&data)) else {
            continue;
        };
        let scenario = scenario(&input);
        match run(&scenario) {
            Ok(s) => {
                total.leaders += s.leaders;
                total.followers += s.followers;
                total.promotions += s.promotions;
                total.panics += s.panics;
                total.forgets += s.forgets;
                total.timeouts += s.timeouts;
                total.polls += s.polls;
                total.overlaps += s.overlaps;
                total.pauses += s.pauses;
            }
            Err(v) => panic!("seed {seed}: {scenario:?}\n{v}"),
        }
    }
    eprintln!("{total:?}");
    total
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
