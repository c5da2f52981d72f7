//! Regression tests for what the fuzz targets in `fuzz/` found, each cut down to the smallest
//! sequence of polls and drops that shows it (the fuzz driver runs everything on one thread,
//! so every test here is deterministic).
//!
//! Each test was written failing, before its fix; since the fixes, the fuzz driver generates and
//! checks these cases like any other.

use coalescer::Group;
use std::future::{Future, Pending, pending};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

fn poll<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// A closure that panics instead of returning its work future.
fn panicking_closure() -> Pending<u8> {
    panic!("the closure panicked before returning its work")
}

/// Found by `cancellation_race`, once closures were allowed to panic in work mode: in work mode, a panic in the caller's closure, before it returns the work future, is
/// not handled as a panic of the work. shared-mode `work` catches it (see the test below); `work`
/// calls the closure outside `catch_unwind`, both for the leader and for a promoted follower.
/// The panic unwinds out of the caller's poll like a cancellation: the flight is not ended, the
/// followers are not released with `Aborted`, no panic is counted, and the key stays taken
/// until the panicked future is dropped, at which point another follower is promoted and runs
/// its own closure. DESIGN.md §7 and `Group::work`'s `# Panics` promise the followers `Aborted`
/// at once and a free key.
#[test]
fn a_promoted_followers_panicking_closure_releases_the_other_followers() {
    let group = Group::<u8, u8>::new();
    let mut leader = Box::pin(group.work(&1, pending::<u8>));
    let mut promoted = Box::pin(group.work(&1, panicking_closure));
    let mut other = Box::pin(group.work(&1, pending::<u8>));
    assert!(poll(leader.as_mut()).is_pending());
    assert!(poll(promoted.as_mut()).is_pending());
    assert!(poll(other.as_mut()).is_pending());
    drop(leader); // vacates the flight: the next follower polled is promoted

    let ran = catch_unwind(AssertUnwindSafe(|| poll(promoted.as_mut())));
    assert!(ran.is_err(), "the panic propagates to the caller that ran the closure");
    assert_eq!(group.counters().panics, 1, "the panic is counted");
    assert!(group.is_idle(), "a panicked flight's key is freed at once");
    match poll(other.as_mut()) {
        Poll::Ready(Err(aborted)) => assert!(aborted.is_panic(), "{aborted:?}"),
        got => panic!("the other follower must get Aborted at once, got {got:?}"),
    }
}

/// The same bug for a leader's closure: nobody else is waiting yet, but the panic is not
/// counted and the key stays taken for as long as the panicked future is kept: a caller that
/// arrives meanwhile follows the dead flight instead of starting a new one.
#[test]
fn a_leaders_panicking_closure_frees_the_key() {
    let group = Group::<u8, u8>::new();
    let mut leader = Box::pin(group.work(&1, panicking_closure));
    let ran = catch_unwind(AssertUnwindSafe(|| poll(leader.as_mut())));
    assert!(ran.is_err(), "the panic propagates to the caller that ran the closure");
    assert_eq!(group.counters().panics, 1, "the panic is counted");
    assert!(group.is_idle(), "a panicked flight's key is freed at once");
    let mut next = Box::pin(group.work(&1, || std::future::ready(7)));
    match poll(next.as_mut()) {
        Poll::Ready(Ok(outcome)) => assert!(outcome.is_leader() && *outcome.value() == 7),
        got => panic!("the next caller must lead a new flight, got {got:?}"),
    }
    drop(leader);
}

/// What the two tests above expect, as shared-mode `work` already does it.
#[test]
fn a_shared_leaders_panicking_closure_frees_the_key() {
    let group = Group::<u8, u8>::new().shared();
    let mut leader = Box::pin(group.work(&1, panicking_closure));
    let ran = catch_unwind(AssertUnwindSafe(|| poll(leader.as_mut())));
    assert!(ran.is_err(), "the panic propagates to the caller that ran the closure");
    assert_eq!(group.counters().panics, 1);
    assert!(group.is_idle());
    let mut next = Box::pin(group.work(&1, || std::future::ready(7)));
    match poll(next.as_mut()) {
        Poll::Ready(Ok(outcome)) => assert!(outcome.is_leader() && *outcome.value() == 7),
        got => panic!("the next caller must lead a new flight, got {got:?}"),
    }
    drop(leader);
}

/// Found by reading the driving loop while adding yields to `cancellation_race`: a caller driving shared work polls the work
/// again, in the same poll, whenever the work woke its own waker while it was being polled,
/// which is how a cooperative yield looks (`futures_lite::future::yield_now`,
/// `async_std::task::yield_now`, smol's). So shared work that yields in a loop until something
/// else happens (another task sets a flag, a channel fills) never lets its caller's poll return:
/// on a single-threaded executor the other task never runs and the thread spins for good
/// (DESIGN.md §10: never spin, never block an executor thread). Work mode returns `Pending` to
/// the executor after each yield, as expected.
#[test]
fn shared_work_that_yields_lets_the_callers_poll_return() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    static POLLS: AtomicUsize = AtomicUsize::new(0);
    // Yields 1000 times, then returns: a bounded stand-in for "yield until another task acts".
    let yielding = || {
        std::future::poll_fn(|cx| {
            if POLLS.fetch_add(1, SeqCst) < 1000 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(1)
            }
        })
    };
    let group = Group::<u8, u8>::new().shared();
    let mut call = Box::pin(group.work(&1, yielding));
    let wakes = Arc::new(Count(AtomicUsize::new(0)));
    let waker = Waker::from(wakes.clone());
    let first = call.as_mut().poll(&mut Context::from_waker(&waker));
    let polls = POLLS.load(SeqCst);
    assert!(
        first.is_pending() && polls < 1000,
        "one poll of the caller ran {polls} polls of the work: it must return Pending when the \
         work yields ({first:?})"
    );
    assert!(wakes.0.load(SeqCst) > 0, "and make sure it is polled again");
}

/// What the test above expects, as work mode already does it.
#[test]
fn work_mode_work_that_yields_lets_the_callers_poll_return() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    static POLLS: AtomicUsize = AtomicUsize::new(0);
    let yielding = || {
        std::future::poll_fn(|cx| {
            if POLLS.fetch_add(1, SeqCst) < 1000 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(1)
            }
        })
    };
    let group = Group::<u8, u8>::new();
    let mut call = Box::pin(group.work(&1, yielding));
    assert!(poll(call.as_mut()).is_pending());
    assert_eq!(POLLS.load(SeqCst), 1);
}

/// Found while checking the fix of the test above against the fuzz model's promise that a
/// stalled caller never holds up shared work (it needs two threads, which the single-threaded
/// fuzz driver cannot have). When shared work's waker fires while a caller is polling it (the
/// work yields, or a reactor on another thread wakes it mid-poll), the caller driving it
/// returned `Pending` and woke only itself, leaving `WOKEN` set "for whichever waiter polls
/// next". But a waiter that polled while the work was being driven had found `DRIVING` taken
/// and gone to sleep, and nobody woke it: the work's wake came while `DRIVING` was held, so it
/// notified nobody. If the caller that yielded was then never polled again (a `select!` branch
/// kept alive, the stalled leader that shared mode exists for), the other waiter slept forever
/// although the work wanted a poll. a shared group's `work`'s `# Cancel safety`: "A caller that stops being
/// polled does not hold the others up: the work's waker wakes the flight's waiters". Waking
/// the waiters (not only itself) when the work yields closes it.
#[test]
fn shared_work_that_yields_wakes_the_waiters_that_slept_meanwhile() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::mpsc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }
    let counting = || {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (Waker::from(count.clone()), count)
    };

    let (driving, is_driving) = mpsc::channel::<()>();
    let (go, may_go) = mpsc::channel::<()>();
    // Its first poll waits until the other caller has polled, then yields; then it waits.
    let mut first = true;
    let work = move || {
        std::future::poll_fn(move |cx| {
            if std::mem::take(&mut first) {
                driving.send(()).unwrap();
                may_go.recv().unwrap();
                cx.waker().wake_by_ref();
            }
            Poll::<u8>::Pending
        })
    };

    let group = Group::<u8, u8>::new().shared();
    let mut leader = Box::pin(group.work(&1, work));
    let mut follower = Box::pin(group.work(&1, pending::<u8>));
    let (follower_waker, follower_wakes) = counting();
    std::thread::scope(|s| {
        let leader = &mut leader;
        let polled = s.spawn(move || {
            let (waker, _) = counting();
            leader.as_mut().poll(&mut Context::from_waker(&waker)).is_pending()
        });
        is_driving.recv().unwrap(); // the leader is inside the work's poll, holding DRIVING
        let first = follower.as_mut().poll(&mut Context::from_waker(&follower_waker));
        assert!(first.is_pending(), "the follower joins and waits");
        go.send(()).unwrap(); // the work yields
        assert!(polled.join().unwrap(), "the leader's poll returns Pending after the yield");
    });
    // The leader is never polled again. The work wants a poll: the follower must hear of it.
    assert!(
        follower_wakes.0.load(SeqCst) > 0,
        "the follower sleeps while the work that yielded waits for a poll nobody will make"
    );
}
