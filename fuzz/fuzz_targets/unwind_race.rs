//! The cancellation race plus user code that panics outside the work's poll: a value's `Clone`
//! while the result is handed out, the work's `Drop` after it returned or when it is abandoned;
//! and wakers that change between polls. Checked against the model.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: coalescer_fuzz::UnwindRace| {
    coalescer_fuzz::check(&input.scenario());
});
