//! Joins, completions, forgets and joins again over 2 to 4 keys, checked against the model.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: coalescer_fuzz::ForgetRace| {
    coalescer_fuzz::check(&input.scenario());
});
