//! Joins, polls, leaves, completions, panics, timeouts and forgets under a recording `tracing`
//! subscriber, with keys whose `Debug` (run by a leader to make its flight's span) can pause
//! the leader inside its join while other callers act: checked against the model, spans,
//! `follows_from` links and events included.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: coalescer_fuzz::TraceRace| {
    coalescer_fuzz::check(&input.scenario());
});
