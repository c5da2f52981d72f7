//! Regression tests for core bugs found by the conformance work, each written (failing) before
//! its fix.

use coalescer::Group;
use coalescer_conformance::Probe;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// A follower that sees its flight end with `Aborted::is_panic` should find the panic in
/// `counters().panics`. The core used to count it after releasing the waiters (`Handle::abort` called
/// `end`, which publishes and notifies, before `stats().record(Event::Panic)`), so a follower
/// polled at the right moment read a count that missed the panic it was just given (likewise
/// for `shutdowns`).
#[test]
fn a_released_follower_sees_the_panic_counted() {
    let mut stale = 0;
    for round in 0..200 {
        let group = Arc::new(Group::<u32, u32>::new());
        let probe = Probe::panicking("boom");
        let leader = std::thread::spawn({
            let (group, probe) = (group.clone(), probe.clone());
            move || {
                let call =
                    std::panic::AssertUnwindSafe(|| group.work_blocking(&round, || probe.run_blocking()));
                assert!(std::panic::catch_unwind(call).is_err());
            }
        });
        probe.started().wait_blocking();
        // A follower that polls without sleeping, so that it sees the flight end at once.
        let mut follower = pin!(group.work(&round, || async { 0 }));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(follower.as_mut().poll(&mut cx).is_pending());
        probe.release();
        let aborted = loop {
            if let Poll::Ready(result) = follower.as_mut().poll(&mut cx) {
                break result.unwrap_err();
            }
        };
        let panics = group.counters().panics;
        assert!(aborted.is_panic());
        leader.join().unwrap();
        stale += usize::from(panics == 0);
    }
    assert_eq!(stale, 0, "followers released with a panic that counters() did not show yet");
}

/// A spawner whose `spawn` panics, as `tokio::spawn` does outside a runtime: the task it was
/// given is dropped while the panic unwinds.
#[derive(Clone)]
struct NoRuntime;

impl coalescer::Spawn for NoRuntime {
    type Task = ();

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) {
        let _task = task;
        panic!("no runtime to spawn on");
    }

    fn aborts_when_abandoned(&self) -> bool {
        false
    }
}

/// A panic in `Spawn::spawn` is the leader's panic (the core resumes it there) and should be
/// counted once, as a panic. The core used to count the flight twice: the task dropped by the unwinding
/// `spawn` ended the flight through its handle with `Aborted::shutdown()` (counted in
/// `shutdowns`), then the leader's `fail` counted the panic as well. (A follower that joined
/// between the leader's join and its `spawn` would be told `is_shutdown`, though nothing shut
/// down.) Reached with `coalescer_tokio::Tokio::detach()` outside a runtime.
#[test]
fn a_panicking_spawn_is_counted_once_as_a_panic() {
    let group = Arc::new(Group::<u32, u32>::new().detached(NoRuntime));
    let call =
        std::panic::AssertUnwindSafe(|| futures_lite::future::block_on(group.work(&1, || async { 1 })));
    assert!(std::panic::catch_unwind(call).is_err(), "the leader sees the spawner's panic");
    assert!(group.is_idle());
    let c = group.counters();
    assert_eq!((c.panics, c.shutdowns), (1, 0), "{c:?}");
}
