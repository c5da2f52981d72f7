//! The scenarios, each written once, generic over the runtime.
//!
//! They order events with gates, counters and [`Group::counters`](coalescer::Group::counters),
//! never with timing: a scenario waits until, say, every follower has joined before it lets the
//! leader's work finish. A waiter that never wakes up is caught by the
//! [`Watchdog`](crate::Watchdog) of the test.

use crate::probe::{Gate, Probe};
use crate::runtime::{AsyncRuntime, Runtime, Shutdown, TestGroup, join_all, spawn_thread, until};
use coalescer::futures::Timeout;
use coalescer::{Outcome, Sleep};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

/// Concurrent callers of one key in the coalescing scenario.
const CALLERS: usize = 8;

fn joined<M>(group: &coalescer::Group<u32, u32, coalescer::DefaultHashBuilder, M>) -> u64 {
    let c = group.counters();
    c.leaders + c.followers
}

fn values(outcomes: &[Outcome<u32>]) -> Vec<u32> {
    outcomes.iter().map(|o| *o.value()).collect()
}

/// N concurrent callers of one key: the work runs once, every caller gets its value, exactly
/// one of them led, all of them shared; a call for another key meanwhile is not held up.
pub fn coalescing<R: Runtime>() {
    let rt = R::start();
    let group = Arc::new(TestGroup::new());
    let probe = Probe::gated(7);
    let calls: Vec<_> = (0..CALLERS).map(|_| rt.call(&group, 1, &probe)).collect();
    let outcomes = rt.block_on(async {
        until(&rt, || joined(&group) == CALLERS as u64).await;
        assert_eq!(group.counters().leaders, 1, "one leader for one key");
        // Another key runs its own flight while this one is held.
        let other = rt.call(&group, 2, &Probe::ready(8)).join().await.outcome();
        assert_eq!((*other.value(), other.is_leader()), (8, true));
        assert_eq!(group.in_flight(), 1);
        probe.release();
        let calls = join_all(calls).await;
        calls.into_iter().map(|c| c.outcome()).collect::<Vec<_>>()
    });
    assert_eq!(values(&outcomes), vec![7; CALLERS]);
    assert_eq!(outcomes.iter().filter(|o| o.is_leader()).count(), 1);
    assert!(outcomes.iter().all(Outcome::is_shared));
    assert_eq!(probe.runs(), 1, "the work ran once for {CALLERS} callers");
    let c = group.counters();
    assert_eq!((c.leaders, c.followers), (2, CALLERS as u64 - 1));
    assert!(group.is_idle());
}

/// Not a cache: a caller that arrives after a flight completed starts a new one.
pub fn late_caller_starts_a_new_flight<R: Runtime>() {
    let rt = R::start();
    let group = Arc::new(TestGroup::new());
    let probe = Probe::ready(1);
    rt.block_on(async {
        for _ in 0..2 {
            let outcome = rt.call(&group, 1, &probe).join().await.outcome();
            assert!(outcome.is_leader() && !outcome.is_shared());
            assert!(group.is_idle());
        }
    });
    assert_eq!(probe.runs(), 2);
    let c = group.counters();
    assert_eq!((c.leaders, c.followers), (2, 0));
}

/// Go's `TestForget`: after `forget`, a new call starts a new flight while the old one's
/// callers still get the old value; the old flight's completion does not remove the new one,
/// so a third caller joins the new flight.
pub fn forget<R: Runtime>() {
    let rt = R::start();
    let group = Arc::new(TestGroup::new());
    let (first, second, third) = (Probe::gated(1), Probe::gated(2), Probe::ready(3));
    rt.block_on(async {
        let first_leader = rt.call(&group, 1, &first);
        until(&rt, || first.started().is_open()).await;
        let first_follower = rt.call(&group, 1, &first);
        until(&rt, || group.counters().followers == 1).await;

        assert!(group.forget(&1));
        assert!(!group.forget(&1), "nothing left to forget");
        let second_leader = rt.call(&group, 1, &second);
        until(&rt, || second.started().is_open()).await;

        first.release();
        for call in [first_leader, first_follower] {
            let outcome = call.join().await.outcome();
            assert_eq!(*outcome.value(), 1);
            assert!(outcome.is_shared());
        }
        assert_eq!(group.in_flight(), 1, "the old flight removed the new one");

        let second_follower = rt.call(&group, 1, &third);
        until(&rt, || group.counters().followers == 2).await;
        second.release();
        for call in [second_leader, second_follower] {
            assert_eq!(*call.join().await.outcome().value(), 2);
        }
    });
    assert_eq!((first.runs(), second.runs(), third.runs()), (1, 1, 0));
    let c = group.counters();
    assert_eq!((c.leaders, c.forgets), (2, 1));
    assert!(group.is_idle());
}

/// A panic in the work: the caller running it panics, every follower is released with
/// `Aborted::is_panic` and the message, and the key is not poisoned.
pub fn panic_releases_followers<R: Runtime>() {
    let rt = R::start();
    let group = Arc::new(TestGroup::new());
    let probe = Probe::panicking("database on fire");
    rt.block_on(async {
        let leader = rt.call(&group, 1, &probe);
        until(&rt, || probe.started().is_open()).await;
        let followers: Vec<_> = (0..3).map(|_| rt.call(&group, 1, &probe)).collect();
        until(&rt, || group.counters().followers == 3).await;
        probe.release();
        assert_eq!(leader.join().await.panicked(), "database on fire");
        for call in join_all(followers).await {
            let aborted = call.aborted();
            assert!(aborted.is_panic() && !aborted.is_shutdown());
            assert_eq!(aborted.message(), Some("database on fire"));
        }
        assert_eq!(group.counters().panics, 1);
        assert!(group.is_idle());
        let next = rt.call(&group, 1, &Probe::ready(5)).join().await.outcome();
        assert_eq!((*next.value(), next.is_leader()), (5, true));
    });
    assert_eq!(probe.runs(), 1);
}

/// Async and blocking callers on one flight: an async leader with blocking and async
/// followers, then a blocking leader with async and blocking followers.
pub fn mixed_async_and_blocking_callers<R: Runtime>() {
    let rt = R::start();
    let group = Arc::new(TestGroup::new());
    for (key, async_leader) in [(1, true), (2, false)] {
        let probe = Probe::gated(key);
        let unused = Probe::ready(0);
        let work_async = |probe: &Probe| {
            let (group, probe) = (group.clone(), probe.clone());
            rt.spawn(async move { group.work(&key, || probe.work()).await })
        };
        let work_blocking = |probe: &Probe| {
            let (group, probe) = (group.clone(), probe.clone());
            spawn_thread(move || group.work_blocking(&key, || probe.run_blocking()))
        };
        let followers_before = group.counters().followers;
        let mut calls = vec![if async_leader { work_async(&probe) } else { work_blocking(&probe) }];
        rt.block_on(until(&rt, || probe.started().is_open()));
        for _ in 0..2 {
            calls.push(work_async(&unused));
            calls.push(work_blocking(&unused));
        }
        let outcomes = rt.block_on(async {
            until(&rt, || group.counters().followers == followers_before + 4).await;
            probe.release();
            join_all(calls).await
        });
        let outcomes: Vec<_> = outcomes.into_iter().map(Result::unwrap).collect();
        assert_eq!(values(&outcomes), vec![key; 5]);
        assert!(outcomes[0].is_leader() && outcomes.iter().all(Outcome::is_shared));
        assert_eq!((probe.runs(), unused.runs()), (1, 0));
    }
    assert_eq!(group.counters().leaders, 2);
    assert!(group.is_idle());
}

/// Work mode, leader dropped mid-flight with followers waiting: its work is dropped, exactly
/// one follower is promoted and runs its own work, the others wait for it, and every follower
/// gets that value.
pub fn leader_cancellation_promotes_one_follower<R: AsyncRuntime>() {
    let rt = R::start();
    let group = Arc::new(TestGroup::new());
    let (stuck, promoted) = (Probe::gated(1), Probe::gated(2));
    rt.block_on(async {
        let leader = rt.call(&group, 1, &stuck);
        until(&rt, || stuck.started().is_open()).await;
        let followers: Vec<_> = (0..4).map(|_| rt.call(&group, 1, &promoted)).collect();
        until(&rt, || group.counters().followers == 4).await;

        leader.cancel().await;
        assert_eq!(stuck.dropped(), 1, "the leader's work went with it");
        until(&rt, || promoted.started().is_open()).await;
        assert_eq!(group.counters().promotions, 1);
        promoted.release();
        let outcomes: Vec<_> = join_all(followers).await.into_iter().map(|c| c.outcome()).collect();
        assert_eq!(values(&outcomes), vec![2; 4]);
        assert_eq!(outcomes.iter().filter(|o| o.is_leader()).count(), 1);
        assert!(outcomes.iter().all(Outcome::is_shared));
    });
    assert_eq!(promoted.runs(), 1, "exactly one promoted execution");
    let c = group.counters();
    assert_eq!((c.leaders, c.promotions, c.cancellations), (1, 1, 0));
    assert!(group.is_idle());
}

/// Shared-work mode, leader polled once and then never again (kept alive, not dropped): the
/// followers drive the same work to completion, which runs once.
pub fn stalled_leader_does_not_block_shared_work<R: AsyncRuntime>() {
    let rt = R::start();
    let group = Arc::new(TestGroup::new().shared());
    let (probe, unused) = (Probe::gated(5), Probe::ready(0));
    let stalled = Arc::new(Gate::default());
    rt.block_on(async {
        let leader = rt.spawn({
            let (group, probe, stalled) = (group.clone(), probe.clone(), stalled.clone());
            async move {
                let mut call = pin!(group.work(&1, || probe.work()));
                let first = futures_lite::future::poll_once(&mut call).await;
                assert!(first.is_none(), "the work is gated");
                stalled.open();
                std::future::pending::<()>().await; // parked forever, holding the call
            }
        });
        until(&rt, || stalled.is_open()).await;
        assert_eq!(probe.runs(), 1);
        let followers: Vec<_> = (0..3)
            .map(|_| {
                let (group, unused) = (group.clone(), unused.clone());
                rt.spawn(async move { group.work(&1, || unused.work()).await })
            })
            .collect();
        until(&rt, || group.counters().followers == 3).await;
        probe.release();
        for outcome in join_all(followers).await {
            let outcome = outcome.unwrap();
            assert_eq!(*outcome.value(), 5);
            assert!(!outcome.is_leader() && outcome.is_shared());
        }
        assert!(group.is_idle());
        leader.cancel().await; // dropping the finished flight's stalled leader is harmless
    });
    assert_eq!((probe.runs(), probe.finished(), unused.runs()), (1, 1, 0));
    assert_eq!(group.counters().leaders, 1);
}

/// A caller with a deadline gives up with `TimedOut`; the flight and the other callers
/// (one without a deadline, one with a far one made from the adapter's `Sleep`) go on.
pub fn timeout_gives_up_alone<R: AsyncRuntime>() {
    let rt = R::start();
    let group = Arc::new(TestGroup::new());
    let (probe, unused) = (Probe::gated(3), Probe::ready(0));
    let far = rt.detach();
    rt.block_on(async {
        let leader = rt.call(&group, 1, &probe);
        until(&rt, || probe.started().is_open()).await;
        let call = |deadline: Option<Duration>| {
            let (group, unused, far) = (group.clone(), unused.clone(), far.clone());
            rt.spawn(async move {
                let call = group.work(&1, || unused.work());
                match deadline {
                    Some(d) => R::timeout(d, call).await,
                    None => Timeout::new(call, far.sleep(Duration::from_secs(3600))).await,
                }
            })
        };
        let impatient = call(Some(Duration::from_millis(1)));
        let patient = call(None);
        assert!(impatient.join().await.is_err(), "the work is gated: only the deadline can end it");
        until(&rt, || group.counters().followers == 2).await;
        assert_eq!(group.in_flight(), 1);
        probe.release();
        assert_eq!(*leader.join().await.outcome().value(), 3);
        let outcome = patient.join().await.expect("the far deadline");
        assert!(*outcome.value() == 3 && outcome.is_shared());
    });
    assert_eq!((probe.runs(), unused.runs()), (1, 0));
    assert_eq!(group.counters().promotions, 0);
    assert!(group.is_idle());
}

/// Shared and detached work coalesce too: one run for many callers in each mode.
pub fn every_mode_coalesces<R: AsyncRuntime>() {
    let rt = R::start();
    let shared_group = Arc::new(TestGroup::new().shared());
    let detached_group = Arc::new(TestGroup::new().detached(rt.detach()));
    let (shared, detached) = (Probe::gated(1), Probe::gated(2));
    let calls: Vec<_> = (0..2 * CALLERS)
        .map(|i| {
            let (shared_group, detached_group, shared, detached) =
                (shared_group.clone(), detached_group.clone(), shared.clone(), detached.clone());
            rt.spawn(async move {
                if i % 2 == 0 {
                    shared_group.work(&1, || shared.work()).await
                } else {
                    detached_group.work(&2, || detached.work()).await
                }
            })
        })
        .collect();
    let outcomes = rt.block_on(async {
        until(&rt, || joined(&shared_group) + joined(&detached_group) == 2 * CALLERS as u64).await;
        assert_eq!(shared_group.counters().leaders + detached_group.counters().leaders, 2);
        shared.release();
        detached.release();
        join_all(calls).await
    });
    for (i, outcome) in outcomes.into_iter().enumerate() {
        assert_eq!(*outcome.unwrap().value(), if i % 2 == 0 { 1 } else { 2 });
    }
    assert_eq!((shared.runs(), detached.runs()), (1, 1));
    assert!(shared_group.is_idle() && detached_group.is_idle());
}

/// Detached work finishes after every caller has left (the side effect happens), and a caller
/// that arrives while it runs (async or blocking) joins it instead of running it again.
pub fn detached_work_outlives_its_callers<R: AsyncRuntime>() {
    let rt = R::start();
    let group = Arc::new(TestGroup::new().detached(rt.detach()));
    let detached = |key: u32, probe: &Probe| {
        let (group, probe) = (group.clone(), probe.clone());
        rt.spawn(async move { group.work(&key, || probe.work()).await })
    };
    rt.block_on(async {
        // Everybody leaves; a late async caller and a late blocking caller join the work.
        let (probe, unused) = (Probe::gated(9), Probe::ready(0));
        let leader = detached(1, &probe);
        until(&rt, || probe.started().is_open()).await;
        let follower = detached(1, &unused);
        until(&rt, || group.counters().followers == 1).await;
        leader.cancel().await;
        follower.cancel().await;
        assert_eq!(group.in_flight(), 1, "the flight is still in the air");
        let late_async = detached(1, &unused);
        let late_blocking = spawn_thread({
            let (group, unused) = (group.clone(), unused.clone());
            move || group.work_blocking(&1, || unused.run_blocking())
        });
        until(&rt, || group.counters().followers == 3).await;
        probe.release();
        for outcome in [late_async.join().await, late_blocking.join().await] {
            let outcome = outcome.unwrap();
            assert_eq!(*outcome.value(), 9);
            assert!(!outcome.is_leader() && outcome.is_shared());
        }
        assert_eq!((probe.runs(), probe.finished(), probe.dropped()), (1, 1, 0));
        assert_eq!(unused.runs(), 0);

        // Nobody is left at all: the work still runs to its end and frees the key.
        let lonely = Probe::gated(10);
        let leader = detached(2, &lonely);
        until(&rt, || lonely.started().is_open()).await;
        leader.cancel().await;
        lonely.release();
        until(&rt, || lonely.finished() == 1).await;
        until(&rt, || group.is_idle()).await;
        assert_eq!(lonely.dropped(), 0);
    });
    let c = group.counters();
    assert_eq!((c.leaders, c.shutdowns, c.panics, c.cancellations), (2, 0, 0, 0));
}

/// A panic in detached work is caught in its task: every caller gets `Aborted::is_panic`
/// with the message, and the key is free again.
pub fn detached_panic_reaches_every_caller<R: AsyncRuntime>() {
    let rt = R::start();
    let group = Arc::new(TestGroup::new().detached(rt.detach()));
    let probe = Probe::panicking("detached on fire");
    let detached = |probe: &Probe| {
        let (group, probe) = (group.clone(), probe.clone());
        rt.spawn(async move { group.work(&1, || probe.work()).await })
    };
    rt.block_on(async {
        let mut calls = vec![detached(&probe)];
        until(&rt, || probe.started().is_open()).await;
        calls.extend((0..2).map(|_| detached(&probe)));
        until(&rt, || group.counters().followers == 2).await;
        probe.release();
        for result in join_all(calls).await {
            let aborted = result.unwrap_err();
            assert!(aborted.is_panic());
            assert_eq!(aborted.message(), Some("detached on fire"));
        }
        assert!(group.is_idle());
        let next = Probe::ready(4);
        assert_eq!(*detached(&next).join().await.unwrap().value(), 4);
    });
    assert_eq!(probe.runs(), 1);
    // The task counts the panic after releasing the callers (see `core_bugs.rs`).
    rt.block_on(until(&rt, || group.counters().panics == 1));
}

/// Abort mode: one caller of two leaving does not stop the work; the last caller out aborts it,
/// and the runtime drops it (observed); a caller that arrives meanwhile waits until the old work
/// is gone before it starts the key's next execution (no overlap), then leads.
pub fn abort_when_abandoned_drops_the_work<R: AsyncRuntime>() {
    let rt = R::start();
    let group = Arc::new(TestGroup::new().detached(rt.abort_when_abandoned()));
    let spawn = |key: u32, work: Box<dyn FnOnce() -> BoxedWork + Send>| {
        let group = group.clone();
        rt.spawn(async move { group.work(&key, work).await })
    };
    let aborting = |key: u32, probe: &Probe| {
        let probe = probe.clone();
        spawn(key, Box::new(move || Box::pin(probe.work())))
    };
    rt.block_on(async {
        let kept = Probe::gated(4);
        let leader = aborting(1, &kept);
        until(&rt, || kept.started().is_open()).await;
        let follower = aborting(1, &kept);
        until(&rt, || group.counters().followers == 1).await;
        follower.cancel().await;
        kept.release();
        assert_eq!(*leader.join().await.unwrap().value(), 4);
        assert_eq!((kept.finished(), kept.dropped()), (1, 0));

        let abandoned = Probe::gated(5); // never released
        let calls = [aborting(2, &abandoned), aborting(2, &abandoned)];
        until(&rt, || joined(&group) == 4 && abandoned.started().is_open()).await;
        for call in calls {
            call.cancel().await;
        }
        // The next execution reports how many runs of the old work had been dropped when it
        // started: all of them, or two executions of the key overlapped.
        let seen = abandoned.clone();
        let next = spawn(
            2,
            Box::new(move || {
                let dropped = seen.dropped() as u32;
                Box::pin(async move { dropped })
            }),
        );
        let outcome = next.join().await.unwrap();
        assert!(outcome.is_leader() && !outcome.is_shared());
        assert_eq!(*outcome.value(), 1, "the next execution started before the old work was dropped");
        assert_eq!((abandoned.dropped(), abandoned.finished()), (1, 0));
    });
    let c = group.counters();
    assert_eq!((c.leaders, c.cancellations, c.shutdowns), (3, 1, 0));
    assert!(group.is_idle());
}

/// A boxed work future, for scenarios that mix kinds of work on one key.
type BoxedWork = std::pin::Pin<Box<dyn std::future::Future<Output = u32> + Send>>;

/// The runtime shuts down under a detached flight: its callers elsewhere (async callers on
/// plain threads and a blocking caller) all get `Aborted::is_shutdown`, none hangs, the work
/// was dropped, and the key is free again.
pub fn runtime_shutdown_under_detached_flight<R: Shutdown>() {
    let rt = R::start();
    let group = Arc::new(TestGroup::new().detached(rt.detach()));
    let probe = Probe::gated(1); // never released
    let detached = || {
        let (group, probe) = (group.clone(), probe.clone());
        spawn_thread(move || futures_lite::future::block_on(group.work(&1, || probe.work())))
    };
    let mut calls = vec![detached()];
    rt.block_on(until(&rt, || probe.started().is_open()));
    calls.extend((0..2).map(|_| detached()));
    calls.push(spawn_thread({
        let (group, probe) = (group.clone(), probe.clone());
        move || group.work_blocking(&1, || probe.run_blocking())
    }));
    rt.block_on(until(&rt, || group.counters().followers == 3));

    rt.shut_down();
    for result in futures_lite::future::block_on(join_all(calls)) {
        let aborted = result.unwrap_err();
        assert!(aborted.is_shutdown() && !aborted.is_panic());
    }
    assert_eq!((probe.runs(), probe.dropped()), (1, 1));
    let c = group.counters();
    assert_eq!((c.shutdowns, c.cancellations), (1, 0));
    assert!(group.is_idle());
    assert!(group.work_blocking(&1, || 2).unwrap().is_leader());
}
