//! The `trace_race` target's scenarios (runs under a recording `tracing` subscriber): written
//! by hand to reach the states the observability checks are about (the summary says they
//! were reached), random inputs through its decoder, and its committed seeds.
//!
//! Its own test binary: every run in it installs its scoped subscriber before it makes a
//! flight, so no test that traces nothing shares the process (see `src/trace.rs`).

mod common;

use coalescer_fuzz::{Bound, Ending, Op, Scenario, Start, Summary, TraceRace, run};

fn join(key: u8, shared: bool) -> Op {
    Op::Join { key, shared, timed: false, poll: true, start: Start::Pending }
}

fn traced(keys: u8, ending: Ending, bound: Bound, ops: Vec<Op>) -> Summary {
    let scenario = Scenario { keys, ops, ending, check_keys: false, bound, trace: true };
    run(&scenario).unwrap_or_else(|violation| panic!("{violation}"))
}

#[test]
fn each_follower_links_once_to_its_flights_span() {
    for shared in [false, true] {
        for ending in [Ending::Drain, Ending::AbandonOldestFirst, Ending::AbandonNewestFirst] {
            let ops = vec![join(0, shared), join(0, shared), join(0, shared), join(1, shared)];
            let s = traced(2, ending, Bound::None, ops);
            assert_eq!((s.leaders, s.followers, s.links), (2, 2, 2), "shared: {shared}, {ending:?}");
        }
    }
}

/// The window of the defect fixed in 6e7e084: a leader is inside its join (formatting its key
/// for the flight's span) while followers join its flight, which is in the map already.
#[test]
fn followers_that_join_while_the_leader_makes_the_span_link_to_it_once_it_is_there() {
    for shared in [false, true] {
        // One follower finishes after the flight ends, one is dropped while the flight runs,
        // one leaves while the leader is still inside its join (no span to link to yet).
        let ops = vec![
            Op::PauseInDebug { ops: 4 },
            join(0, shared),
            join(0, shared),
            join(0, shared),
            join(0, shared),
            Op::Drop { caller: 2 },
            Op::Drop { caller: 1 },
            Op::Complete { exec: 0 },
            Op::Settle,
        ];
        let s = traced(1, Ending::Drain, Bound::None, ops);
        assert_eq!(s.pauses, 1, "shared: {shared}");
        assert_eq!((s.early_joins, s.early_joins_linked), (3, 2), "shared: {shared}");
    }
}

#[test]
fn promotions_panics_cancellations_and_forgets_are_events_of_their_flights_span() {
    // Work mode: the leader is dropped, a follower is promoted, its work panics.
    let ops = vec![
        join(0, false),
        join(0, false),
        Op::DropLeader { key: 0 },
        Op::Settle,
        Op::Panic { exec: 0 },
        Op::Settle,
        // A forgotten flight, then a new one for the same key, abandoned by its one caller.
        join(0, false),
        Op::Forget { key: 0 },
        join(0, false),
        Op::Drop { caller: 3 },
    ];
    let s = traced(1, Ending::Drain, Bound::None, ops);
    assert_eq!((s.promotions, s.panics, s.forgets, s.cancellations), (1, 1, 1, 1));
}

#[test]
fn a_refused_caller_makes_no_span_and_the_overflow_is_an_event_in_none() {
    let ops = vec![join(0, false), join(1, false), Op::Complete { exec: 0 }, Op::Settle, join(1, false)];
    let s = traced(2, Ending::Drain, Bound::Reject(0), ops);
    assert_eq!(s.leaders, 2);
    let ops = vec![join(0, true), join(1, true), join(1, true)];
    let s = traced(2, Ending::Drain, Bound::RunAlone(0), ops);
    assert_eq!((s.leaders, s.followers, s.panics), (3, 0, 0), "the second key's calls each run alone");
}

/// Leaders paused in their `Debug` while other flights' work is paused in its poll, forgets
/// in the window (the flight has no span to report it in yet), timeouts.
#[test]
fn random_trace_race_inputs_keep_the_contract() {
    let total = common::smoke(1500, 300, TraceRace::scenario);
    assert!(total.early_joins_linked > 0, "no random input reached the window: {total:?}");
}

/// `corpus/trace_race/seed-defect-*`: the inputs with which libFuzzer found a defect of the
/// core's tracing before its fix, as it wrote them; each keeps the contract with the fix in.
#[test]
fn trace_race_defect_seeds_keep_the_contract() {
    assert!(
        common::replay("trace_race", TraceRace::scenario) > 0,
        "no seed-defect-* file in corpus/trace_race"
    );
}
