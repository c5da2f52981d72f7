//! Hand-written scenarios through the driver: each must keep the contract and reach the state
//! it is about (the summary says so), so that the model's checks are known to be exercised.

use coalescer_fuzz::{Bound, Ending, KeyFn, Op, Scenario, Start, Summary, run};

fn join(key: u8, shared: bool) -> Op {
    Op::Join { key, shared, timed: false, poll: true, start: Start::Pending }
}

fn timed(key: u8, shared: bool) -> Op {
    Op::Join { key, shared, timed: true, poll: true, start: Start::Pending }
}

fn ok(keys: u8, ending: Ending, ops: Vec<Op>) -> Summary {
    let scenario = Scenario { keys, ops, ending, check_keys: false, bound: Bound::None, trace: false };
    run(&scenario).unwrap_or_else(|violation| panic!("{violation}"))
}

#[test]
fn concurrent_callers_share_one_execution() {
    for shared in [false, true] {
        let ops =
            vec![join(0, shared), join(0, shared), join(0, shared), Op::Complete { exec: 0 }, Op::Settle];
        let s = ok(1, Ending::Drain, ops);
        assert_eq!((s.leaders, s.followers), (1, 2), "shared: {shared}");
    }
}

#[test]
fn a_dropped_work_mode_leader_hands_over_to_one_follower() {
    let ops = vec![
        join(0, false),
        join(0, false),
        join(0, false),
        Op::DropLeader { key: 0 },
        Op::Settle,
        Op::Complete { exec: 0 },
        Op::Settle,
    ];
    let s = ok(1, Ending::Drain, ops);
    assert_eq!(s.promotions, 1);
}

#[test]
fn a_dropped_or_stalled_shared_leader_neither_restarts_nor_blocks_the_work() {
    let ops = vec![
        join(0, true),
        join(0, true),
        join(0, true),
        Op::Stall { caller: 0 },
        Op::Complete { exec: 0 },
        Op::Settle, // a follower drives the work; the stalled leader must not be needed
        Op::Poll { caller: 0 },
        join(0, true),
        join(0, true),
        Op::DropLeader { key: 0 },
        Op::Complete { exec: 0 },
        Op::Settle,
    ];
    let s = ok(1, Ending::Drain, ops);
    assert_eq!((s.leaders, s.promotions), (2, 0));
}

#[test]
fn forget_lets_a_new_flight_run_next_to_the_old_one() {
    for shared in [false, true] {
        let ops = vec![
            join(0, shared),
            join(0, shared),
            Op::Forget { key: 0 },
            join(0, shared),
            Op::Complete { exec: 0 }, // the old flight ends: it must not remove the new entry
            Op::Settle,
            join(0, shared), // joins the new flight
            Op::Complete { exec: 0 },
            Op::Settle,
        ];
        let s = ok(2, Ending::Drain, ops);
        assert_eq!((s.forgets, s.overlaps, s.leaders), (1, 1, 2), "shared: {shared}");
    }
}

#[test]
fn a_panic_reaches_the_caller_polling_the_work_and_aborts_the_others() {
    for shared in [false, true] {
        let ops = vec![
            join(0, shared),
            join(0, shared),
            join(0, shared),
            Op::Panic { exec: 0 },
            Op::Settle,
            join(0, shared), // the key is free again
        ];
        let s = ok(1, Ending::Drain, ops);
        assert_eq!((s.panics, s.leaders), (1, 2), "shared: {shared}");
    }
}

#[test]
fn a_timed_out_caller_leaves_like_a_dropped_one() {
    for shared in [false, true] {
        let ops = vec![
            timed(0, shared),
            timed(0, shared),
            join(0, shared),
            Op::FireTimer { caller: 1 },
            Op::Settle,
            Op::FireTimer { caller: 0 },
            Op::Settle,
        ];
        let s = ok(1, Ending::Drain, ops);
        assert_eq!(s.timeouts, 2, "shared: {shared}");
        assert_eq!(s.promotions, u64::from(!shared), "shared: {shared}");
    }
}

#[test]
fn abandoned_callers_leave_the_group_idle() {
    for ending in [Ending::AbandonOldestFirst, Ending::AbandonNewestFirst] {
        let ops = vec![
            join(0, false),
            join(0, false),
            join(1, true),
            join(1, true),
            Op::Forget { key: 1 },
            join(1, true),
        ];
        ok(2, ending, ops);
    }
}

#[test]
fn operations_run_while_an_execution_is_inside_its_poll() {
    for shared in [false, true] {
        let ops = vec![
            join(0, shared),
            join(0, shared),
            Op::Arm { exec: 0, ops: 3 },
            Op::Complete { exec: 0 }, // wakes it: the runner (or a member) polls it
            Op::Settle,
            // These run while the work is paused inside that poll: another thread's calls.
            join(0, shared),
            Op::Forget { key: 0 },
            join(0, shared),
            Op::Settle,
        ];
        let s = ok(1, Ending::Drain, ops);
        assert_eq!((s.pauses, s.leaders, s.followers, s.forgets), (1, 2, 2, 1), "shared: {shared}");
    }
}

/// A shared work woken while a caller polls it must reach the waiters that slept meanwhile (the
/// scenario of `shared_work_that_yields_wakes_the_waiters_that_slept_meanwhile` in
/// `core/tests/fuzz_regressions.rs`, here on one thread).
#[test]
fn a_wake_during_the_shared_work_poll_with_the_driver_stalled_afterwards() {
    let ops = vec![
        join(0, true),
        Op::Arm { exec: 0, ops: 2 },
        Op::Wake { exec: 0 }, // the leader is woken and drives the work, which pauses
        Op::Poll { caller: 0 },
        join(0, true),           // joins while the work is being driven: it sleeps
        Op::Wake { exec: 0 },    // the work is woken while it is being polled
        Op::Stall { caller: 0 }, // the leader, which woke only itself, is never polled again
        Op::Settle,
    ];
    let s = ok(1, Ending::AbandonOldestFirst, ops);
    assert_eq!(s.pauses, 1);
}

// Issue 11: user code that panics outside the work's poll. These failed on the core before the
// fix (the messages below are what they printed there) and were ignored until it landed.

/// A clone of the value panics while the result is handed out: only the caller whose clone
/// panicked sees the panic; the other callers still get the value, and the key is free.
/// Before the fix: "flight 0 ended (Some(Value(0))) but waiting caller 1 was not woken".
#[test]
fn a_panicking_clone_of_the_value_strands_nobody() {
    for shared in [false, true] {
        let ops = vec![
            join(0, shared),
            join(0, shared),
            join(0, shared),
            Op::ClonePanics { exec: 0 },
            Op::Complete { exec: 0 },
            Op::Settle,
            join(0, shared),
            Op::Complete { exec: 0 },
            Op::Settle,
        ];
        let s = ok(1, Ending::Drain, ops);
        assert_eq!((s.leaders, s.followers), (2, 2), "shared: {shared}");
    }
}

/// The work's `Drop` panics after the work returned: the flight still ends with its value (the
/// followers get it), the panic goes to the caller that ran the work and counts as a panic,
/// and the key is free.
#[test]
fn a_panicking_drop_after_completion_keeps_the_value_and_frees_the_key() {
    for shared in [false, true] {
        let ops = vec![
            join(0, shared),
            join(0, shared),
            Op::DropPanics { exec: 0 },
            Op::Complete { exec: 0 },
            Op::Settle,
            join(0, shared),
            Op::Complete { exec: 0 },
            Op::Settle,
        ];
        let s = ok(1, Ending::Drain, ops);
        assert_eq!((s.leaders, s.followers, s.panics), (2, 1, 1), "shared: {shared}");
    }
}

/// The last caller leaves abandoned shared work whose `Drop` panics: the panic comes out of
/// that caller's drop, the key is free all the same (a new caller leads a new flight and gets
/// its value), and it counts as a cancellation.
/// Before the fix: "in_flight() is 1; 0 key(s) have a flight" (the key is wedged).
#[test]
fn a_panicking_drop_of_abandoned_shared_work_frees_the_key() {
    let ops = vec![
        join(0, true),
        join(0, true),
        Op::DropPanics { exec: 0 },
        Op::Drop { caller: 0 },
        Op::Drop { caller: 0 },
        join(0, true),
        Op::Complete { exec: 0 },
        Op::Settle,
    ];
    let s = ok(1, Ending::Drain, ops);
    assert_eq!((s.leaders, s.cancellations), (2, 1));
}

/// A caller gets a new waker between two polls (its task moved): a flight that ends later
/// wakes the new one.
#[test]
fn a_waker_that_changes_between_polls_is_the_one_woken() {
    for shared in [false, true] {
        let ops = vec![
            join(0, shared),
            join(0, shared),
            Op::NewWaker { caller: 1 },
            Op::Poll { caller: 1 },
            Op::NewWaker { caller: 0 },
            Op::Poll { caller: 0 },
            Op::Complete { exec: 0 },
            Op::Settle,
        ];
        let s = ok(1, Ending::Drain, ops);
        assert_eq!((s.leaders, s.followers), (1, 1), "shared: {shared}");
    }
}

/// The key's `Hash`, `Eq` or `Clone` panics when a caller joins: the panic comes out of that
/// caller's poll, it joined nothing, and the group is as it was. Then nothing runs the key's
/// methods again until the next join.
/// Before the fix: "the group ran the key's Hash while caller 0 left flight Some(0), after it
/// had joined" (the leave hashes the key again to remove the entry).
#[test]
fn a_panicking_key_method_at_the_join_leaves_the_group_unchanged() {
    for what in [KeyFn::Hash, KeyFn::Eq, KeyFn::Clone] {
        let ops = vec![
            join(0, false),
            Op::KeyPanics { what },
            join(0, false),
            join(0, false),
            Op::Complete { exec: 0 },
            Op::Settle,
        ];
        let scenario = Scenario {
            keys: 1,
            ops,
            ending: Ending::Drain,
            check_keys: true,
            bound: Bound::None,
            trace: false,
        };
        let s = run(&scenario).unwrap_or_else(|violation| panic!("{what:?}: {violation}"));
        assert_eq!(s.leaders, 1, "{what:?}");
    }
}
