//! The contract of a shared group's `work` (`Group::new().shared()`): the flight owns the work and any waiter drives it, so
//! a stalled or dropped leader neither blocks the others nor restarts the work.

mod common;

use coalescer::SharedGroup;
use coalescer::futures::Timeout;
use common::{Gate, Probe, poll_once, run, until};
use std::sync::Arc;

type G = Arc<SharedGroup<u32, u64>>;

fn never_called() -> u64 {
    unreachable!("a follower of a shared flight never runs its own closure")
}

/// Spawns a caller of `work(key)` whose closure must not be called (it follows).
fn follower(
    group: &G,
    key: u32,
) -> tokio::task::JoinHandle<Result<coalescer::Outcome<u64>, coalescer::Aborted>> {
    let group = group.clone();
    tokio::spawn(async move { group.work(&key, || async { never_called() }).await })
}

#[test]
fn stalled_leader_does_not_block_followers_and_the_work_runs_once() {
    run(async {
        let (group, probe) = (G::default(), Arc::new(Probe::default()));
        let (tx, rx) = tokio::sync::oneshot::channel::<u64>();
        let work_probe = probe.clone();
        let mut leader = Box::pin(group.work(&1, move || async move {
            let _running = work_probe.enter();
            rx.await.unwrap() // woken from outside: the wake must reach a waiter that is polled
        }));
        // Polled once, then parked forever: it is never polled again, and never dropped until
        // the end of the test.
        assert!(poll_once(&mut leader).is_pending());
        let followers: Vec<_> = (0..3).map(|_| follower(&group, 1)).collect();
        until(|| group.counters().followers == 3).await;
        tx.send(42).unwrap();
        for f in followers {
            let outcome = f.await.unwrap().unwrap();
            assert_eq!((*outcome.value(), outcome.is_leader()), (42, false));
        }
        assert_eq!(probe.runs(), 1);
        assert!(group.is_idle());
        // The stalled leader, polled at last, finds the value too.
        let outcome = poll_once(&mut leader);
        assert!(matches!(outcome, std::task::Poll::Ready(Ok(ref o)) if *o.value() == 42 && o.is_leader()));
    });
}

/// Ten callers with short timeouts against a slow load: with restart-on-cancel every timeout
/// would throw the work away and start it again; here the work runs once and the caller that
/// is still there gets the value.
#[test]
fn short_timeouts_do_not_restart_the_work() {
    run(async {
        let (group, probe, load) = (G::default(), Arc::new(Probe::default()), Gate::new());
        let mut timers = Vec::new();
        let mut callers = Vec::new();
        for i in 0..10 {
            let (group, probe, load) = (group.clone(), probe.clone(), load.wait());
            let (fire, timer) = tokio::sync::oneshot::channel::<()>();
            timers.push(fire);
            let patient = i == 9;
            callers.push(tokio::spawn(async move {
                let call = group.work(&1, move || async move {
                    let _running = probe.enter();
                    load.await;
                    7
                });
                let timer = async move {
                    if patient {
                        std::future::pending::<()>().await
                    }
                    let _ = timer.await;
                };
                Timeout::new(call, timer).await
            }));
        }
        until(|| group.counters().followers == 9).await;
        for fire in timers.drain(..9) {
            fire.send(()).unwrap();
        }
        let mut outcomes = Vec::new();
        for caller in callers.drain(..9) {
            outcomes.push(caller.await.unwrap());
        }
        assert!(
            outcomes.iter().all(|o| o.as_ref().is_err_and(coalescer::Aborted::is_timed_out)),
            "nine callers gave up at their deadline"
        );
        assert_eq!((probe.runs(), probe.drops()), (1, 0), "the work neither restarted nor stopped");
        load.open();
        let last = callers.pop().unwrap().await.unwrap().expect("no deadline");
        assert_eq!(*last.value(), 7);
        assert_eq!(probe.runs(), 1);
        assert!(group.is_idle());
    });
}

#[test]
fn last_waiter_leaving_drops_the_work_and_frees_the_key() {
    run(async {
        let (group, probe) = (G::default(), Arc::new(Probe::default()));
        let work_probe = probe.clone();
        type Waiter<'a> = std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<coalescer::Outcome<u64>, coalescer::Aborted>>
                    + Send
                    + 'a,
            >,
        >;
        let mut waiters: Vec<Waiter<'_>> = vec![Box::pin(group.work(&4, move || async move {
            let _running = work_probe.enter();
            std::future::pending::<u64>().await
        }))];
        for _ in 0..2 {
            waiters.push(Box::pin(group.work(&4, || async { never_called() })));
        }
        for w in &mut waiters {
            assert!(poll_once(w).is_pending());
        }
        assert_eq!((probe.running(), group.counters().followers), (1, 2));
        while waiters.len() > 1 {
            drop(waiters.remove(0)); // the leader goes first: the work must survive it
            assert_eq!(probe.drops(), 0, "the work is dropped only when the last waiter leaves");
            assert_eq!(group.in_flight(), 1);
        }
        drop(waiters);
        assert_eq!((probe.drops(), probe.runs()), (1, 1));
        assert!(group.is_idle());
        assert_eq!(group.counters().cancellations, 1);
    });
}

#[test]
fn dropped_leader_neither_stops_nor_restarts_shared_work() {
    run(async {
        let (group, probe, gate) = (G::default(), Arc::new(Probe::default()), Gate::new());
        let leader = {
            let (group, probe, gate) = (group.clone(), probe.clone(), gate.wait());
            tokio::spawn(async move {
                group
                    .work(&2, move || async move {
                        let _running = probe.enter();
                        gate.await;
                        5
                    })
                    .await
            })
        };
        until(|| probe.running() == 1).await;
        let followers: Vec<_> = (0..3).map(|_| follower(&group, 2)).collect();
        until(|| group.counters().followers == 3).await;
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        assert_eq!(probe.drops(), 0);
        gate.open();
        for f in followers {
            assert_eq!(*f.await.unwrap().unwrap().value(), 5);
        }
        assert_eq!(probe.runs(), 1);
        assert!(group.is_idle());
    });
}

#[test]
fn shared_work_panic_is_resumed_in_its_driver_and_releases_the_others() {
    run(async {
        let (group, gate) = (G::default(), Gate::new());
        let mut callers = Vec::new();
        for i in 0..4 {
            let (group, gate) = (group.clone(), gate.wait());
            callers.push(tokio::spawn(async move {
                group
                    .work(&3, move || async move {
                        gate.await;
                        if i >= 0 {
                            panic!("shared work on fire")
                        }
                        0
                    })
                    .await
            }));
        }
        until(|| group.counters().followers == 3).await;
        gate.open();
        let (mut driver_panics, mut released) = (0, 0);
        for c in callers {
            match c.await {
                Err(join) if join.is_panic() => driver_panics += 1,
                Ok(Err(aborted))
                    if aborted.is_panic() && aborted.message() == Some("shared work on fire") =>
                {
                    released += 1
                }
                other => panic!("unexpected end of a caller: {other:?}"),
            }
        }
        assert_eq!((driver_panics, released), (1, 3), "one driver saw the panic, the rest were released");
        assert!(group.is_idle());
        assert_eq!(group.counters().panics, 1);
        assert_eq!(*group.work(&3, || async { 9 }).await.unwrap().value(), 9);
    });
}

/// Regression: the last waiter out of shared work used to free the key before dropping the
/// work, so a new caller could start the key's next execution while the old one's drop still
/// ran. Now the flight is closed first: a caller arriving meanwhile waits for the drop to finish.
#[test]
fn abandoned_shared_work_is_dropped_before_the_key_is_free_again() {
    struct SlowDrop {
        entered: std::sync::mpsc::Sender<()>,
        release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
        probe: Arc<Probe>,
    }
    impl Drop for SlowDrop {
        fn drop(&mut self) {
            let _running = self.probe.enter();
            self.entered.send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
        }
    }
    let (group, probe) = (G::default(), Arc::new(Probe::default()));
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let slow =
        SlowDrop { entered: entered_tx, release: std::sync::Mutex::new(release_rx), probe: probe.clone() };
    let mut leader = Box::pin(group.work(&1, move || async move {
        let _slow = slow;
        std::future::pending::<u64>().await
    }));
    assert!(poll_once(&mut leader).is_pending());
    std::thread::scope(|s| {
        // The last (only) waiter leaves on another thread; the work's drop blocks there.
        let leaving = s.spawn(move || drop(leader));
        entered_rx.recv().unwrap();
        let next = s.spawn(|| {
            group.work_blocking(&1, || {
                let _running = probe.enter();
                2
            })
        });
        // Give the new caller a fair chance to start too early (the bug), then let the drop
        // finish. This wait cannot make a correct build fail: with the fix the next work
        // cannot start before the release below.
        let chance = std::time::Instant::now() + std::time::Duration::from_millis(300);
        while probe.runs() < 2 && std::time::Instant::now() < chance {
            std::thread::yield_now();
        }
        release_tx.send(()).unwrap();
        leaving.join().unwrap();
        assert_eq!(*next.join().unwrap().unwrap().value(), 2);
    });
    assert_eq!(probe.overlaps(), 0, "the next execution started only after the old work was dropped");
    assert!(group.is_idle());
}

/// Work made of a receiver and a drop counter: two words, small enough that the flight stores
/// it in itself; `PAD` words more make it large enough to be boxed. Either way it is the same
/// work to its callers.
struct PaddedWork<const PAD: usize> {
    rx: tokio::sync::oneshot::Receiver<u64>,
    dropped: Arc<std::sync::atomic::AtomicUsize>,
    _pad: [usize; PAD],
}

impl<const PAD: usize> std::future::Future for PaddedWork<PAD> {
    type Output = u64;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<u64> {
        std::pin::Pin::new(&mut self.rx).poll(cx).map(|v| v.unwrap())
    }
}

impl<const PAD: usize> Drop for PaddedWork<PAD> {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs [`PaddedWork`] work of each size through the same race: the leader polls it once and
/// stalls, followers on other worker threads drive it when its waker fires from outside, then
/// the last caller out of a second flight abandons it. Small work (stored in the flight) and
/// large work (boxed) alike run once, reach every caller, and are dropped exactly once.
fn small_or_large_work_runs_once_for_all_and_is_dropped_once<const PAD: usize>() {
    run(async {
        let group = G::default();
        let dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<u64>();
        let work_dropped = dropped.clone();
        let mut leader =
            Box::pin(group.work(&1, move || PaddedWork::<PAD> { rx, dropped: work_dropped, _pad: [0; PAD] }));
        assert!(poll_once(&mut leader).is_pending());
        let followers: Vec<_> = (0..3).map(|_| follower(&group, 1)).collect();
        until(|| group.counters().followers == 3).await;
        tx.send(9).unwrap();
        for f in followers {
            let outcome = f.await.unwrap().unwrap();
            assert_eq!((*outcome.value(), outcome.is_leader(), outcome.is_shared()), (9, false, true));
        }
        assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 1, "finished work is dropped once");
        let outcome = poll_once(&mut leader);
        assert!(matches!(outcome, std::task::Poll::Ready(Ok(ref o)) if *o.value() == 9 && o.is_leader()));

        // Abandoned: nobody drives it to its end, and the last caller out drops it.
        let (_tx, rx) = tokio::sync::oneshot::channel::<u64>();
        let work_dropped = dropped.clone();
        let mut abandoned =
            Box::pin(group.work(&2, move || PaddedWork::<PAD> { rx, dropped: work_dropped, _pad: [0; PAD] }));
        assert!(poll_once(&mut abandoned).is_pending());
        drop(abandoned);
        assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 2, "abandoned work is dropped once");
        assert!(group.is_idle());
    });
}

#[test]
fn small_shared_work_stored_in_its_flight_runs_once_for_all_and_is_dropped_once() {
    small_or_large_work_runs_once_for_all_and_is_dropped_once::<0>();
}

#[test]
fn large_shared_work_that_is_boxed_runs_once_for_all_and_is_dropped_once() {
    small_or_large_work_runs_once_for_all_and_is_dropped_once::<32>();
}
