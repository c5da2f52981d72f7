//! Joins, polls, dropped leaders and followers, stalls, panics, completions and timeouts, in
//! work mode and shared-work mode, checked against the model.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: coalescer_fuzz::CancellationRace| {
    coalescer_fuzz::check(&input.scenario());
});
