//! Joins, leaves, completions and forgets over keys whose `Hash`, `Eq` or `Clone` panic when
//! armed; the group runs them only while a caller joins (or in `forget`). Checked against the
//! model.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: coalescer_fuzz::KeyRace| {
    coalescer_fuzz::check(&input.scenario());
});
