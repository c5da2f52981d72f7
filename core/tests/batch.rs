//! The contract of batches (`Group::work_batch` and its twins): keys in flight are joined and
//! never fetched twice, the rest are fetched in one call; a missing key, a failed fetch, a
//! panicking fetch and a caller that leaves each have their documented outcome.
//!
//! Every test runs on a real multi-threaded runtime (or real threads), orders its events with
//! gates and counters rather than sleeps, and has a watchdog (`common::run`).

mod common;

use coalescer::{Aborted, Group, Outcome, TryGroup};
use common::{Gate, Probe, poll_once, run, until};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

type G = Arc<Group<u32, Option<String>>>;
/// A boxed fetch's rows.
type Rows = std::pin::Pin<Box<dyn Future<Output = Vec<(u32, String)>> + Send>>;
type Results = Vec<Result<Outcome<Option<String>>, Aborted>>;

/// What a test's fetches saw: the keys of each call, and the probe of executions.
#[derive(Default)]
struct Db {
    calls: Mutex<Vec<Vec<u32>>>,
    probe: Probe,
}

impl Db {
    /// A fetch that logs its keys, waits for `gate` (if any), and returns every key but those
    /// in `missing`, as `"row {id}"`.
    fn fetch(
        self: &Arc<Self>,
        gate: Option<&Gate>,
        missing: &'static [u32],
    ) -> impl Fn(Vec<u32>) -> Rows + Send + Sync + 'static {
        let (db, gate) = (self.clone(), gate.cloned());
        move |ids: Vec<u32>| {
            db.calls.lock().unwrap().push(ids.clone());
            let (db, wait) = (db.clone(), gate.as_ref().map(Gate::wait));
            Box::pin(async move {
                let _running = db.probe.enter();
                if let Some(wait) = wait {
                    wait.await;
                }
                ids.into_iter()
                    .filter(|id| !missing.contains(id))
                    .map(|id| (id, format!("row {id}")))
                    .collect()
            })
        }
    }

    fn calls(&self) -> Vec<Vec<u32>> {
        self.calls.lock().unwrap().clone()
    }
}

fn values(results: &Results) -> Vec<Option<String>> {
    results.iter().map(|r| r.as_ref().expect("a value").value().clone()).collect()
}

fn row(id: u32) -> Option<String> {
    Some(format!("row {id}"))
}

/// Spawns a batch call for `keys` with `fetch`.
fn spawn_batch<F, Fut>(group: &G, keys: &[u32], fetch: F) -> tokio::task::JoinHandle<Results>
where
    F: Fn(Vec<u32>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<(u32, String)>> + Send + 'static,
{
    let (group, keys) = (group.clone(), keys.to_vec());
    tokio::spawn(async move { group.work_batch(keys, fetch).await })
}

/// Spawns a single call for `key` that must join a flight (its own work is never run).
fn spawn_single(group: &G, key: u32) -> tokio::task::JoinHandle<Result<Outcome<Option<String>>, Aborted>> {
    let group = group.clone();
    tokio::spawn(
        async move { group.work(&key, || async { unreachable!("a single call joins the batch") }).await },
    )
}

#[test]
fn overlapping_sets_cost_one_fetch_of_the_first_and_one_of_the_new_key() {
    run(async {
        let (group, db, gate) = (G::default(), Arc::new(Db::default()), Gate::new());
        let first = spawn_batch(&group, &[1, 2, 3], db.fetch(Some(&gate), &[]));
        until(|| db.calls().len() == 1).await; // {1, 2, 3} in flight
        let second = spawn_batch(&group, &[2, 3, 4], db.fetch(Some(&gate), &[]));
        until(|| db.calls().len() == 2 && group.counters().followers == 2).await;
        gate.open();
        let (first, second) = (first.await.unwrap(), second.await.unwrap());
        assert_eq!(values(&first), [row(1), row(2), row(3)]);
        assert_eq!(values(&second), [row(2), row(3), row(4)]);
        assert_eq!(db.calls(), [vec![1, 2, 3], vec![4]]);
        assert_eq!(db.probe.runs(), 2);
        // Who led what: the second call led only key 4.
        let led: Vec<bool> = second.iter().map(|r| r.as_ref().unwrap().is_leader()).collect();
        assert_eq!(led, [false, false, true]);
        assert!(group.is_idle());
    });
}

#[test]
fn single_call_during_a_batch_joins_it_instead_of_fetching() {
    run(async {
        let (group, db, gate) = (G::default(), Arc::new(Db::default()), Gate::new());
        let batch = spawn_batch(&group, &[1, 2, 3], db.fetch(Some(&gate), &[]));
        until(|| db.calls().len() == 1).await;
        let single = spawn_single(&group, 2);
        until(|| group.counters().followers == 1).await;
        gate.open();
        let single = single.await.unwrap().unwrap();
        assert_eq!((single.value().clone(), single.is_leader(), single.is_shared()), (row(2), false, true));
        assert_eq!(values(&batch.await.unwrap()), [row(1), row(2), row(3)]);
        assert_eq!(db.calls(), [vec![1, 2, 3]]);
        assert!(group.is_idle());
    });
}

#[test]
fn batch_joins_keys_a_single_call_has_in_flight() {
    run(async {
        let (group, db, gate) = (G::default(), Arc::new(Db::default()), Gate::new());
        let single = {
            let (group, wait) = (group.clone(), gate.wait());
            tokio::spawn(async move {
                group
                    .work(&2, || async move {
                        wait.await;
                        Some("single 2".to_string())
                    })
                    .await
            })
        };
        until(|| group.counters().leaders == 1).await;
        let batch = spawn_batch(&group, &[1, 2, 3], db.fetch(None, &[]));
        until(|| db.calls().len() == 1 && group.counters().followers == 1).await;
        gate.open();
        let batch = batch.await.unwrap();
        assert_eq!(values(&batch), [row(1), Some("single 2".to_string()), row(3)]);
        assert_eq!(db.calls(), [vec![1, 3]], "key 2 was in flight: joined, not fetched");
        assert_eq!(single.await.unwrap().unwrap().value().as_deref(), Some("single 2"));
        assert!(group.is_idle());
    });
}

#[test]
fn a_key_missing_from_the_result_is_none_for_every_caller_of_it() {
    run(async {
        let (group, db, gate) = (G::default(), Arc::new(Db::default()), Gate::new());
        let batch = spawn_batch(&group, &[1, 2, 3], db.fetch(Some(&gate), &[2]));
        until(|| db.calls().len() == 1).await;
        let single = spawn_single(&group, 2);
        until(|| group.counters().followers == 1).await;
        gate.open();
        assert_eq!(values(&batch.await.unwrap()), [row(1), None, row(3)]);
        assert_eq!(*single.await.unwrap().unwrap().value(), None);
        assert!(group.is_idle(), "a missing key is not left in flight");
    });
}

#[test]
fn duplicate_keys_get_their_result_at_each_place_and_are_fetched_once() {
    run(async {
        let (group, db) = (G::default(), Arc::new(Db::default()));
        let results = group.work_batch([5, 6, 5], db.fetch(None, &[])).await;
        assert_eq!(values(&results), [row(5), row(6), row(5)]);
        assert_eq!(db.calls(), [vec![5, 6]]);
        assert!(group.is_idle());
    });
}

#[test]
fn a_failed_fetch_shares_one_error_with_every_key_and_its_single_callers() {
    run(async {
        let group = Arc::new(TryGroup::<u32, Option<u32>, String>::new());
        let gate = Gate::new();
        let batch = {
            let (group, gate) = (group.clone(), gate.clone());
            tokio::spawn(async move {
                group
                    .try_work_batch([1, 2, 3], move |_| {
                        let gate = gate.clone();
                        async move {
                            gate.wait().await;
                            Err::<Vec<(u32, u32)>, _>("database down".to_string())
                        }
                    })
                    .await
            })
        };
        until(|| group.counters().leaders == 3).await;
        let single = {
            let group = group.clone();
            tokio::spawn(async move { group.try_work(&2, || async { unreachable!("joins") }).await })
        };
        until(|| group.counters().followers == 1).await;
        gate.open();
        let batch = batch.await.unwrap();
        let errors: Vec<_> = batch.iter().map(|r| r.as_ref().unwrap_err()).collect();
        assert!(errors.iter().all(|e| e.failure().map(String::as_str) == Some("database down")));
        let single = single.await.unwrap().unwrap_err();
        let (coalescer::Error::Failed(a), coalescer::Error::Failed(b)) = (errors[1], &single) else {
            panic!("both failed")
        };
        assert!(Arc::ptr_eq(a, b), "one error, shared behind one Arc");
        assert!(group.is_idle(), "an error is not retained");
        let retry =
            group.try_work_batch([1], |ids| async move { Ok::<_, String>(ids.into_iter().map(|i| (i, i))) });
        assert_eq!(*retry.await[0].as_ref().unwrap().value(), Some(1));
    });
}

#[test]
fn a_panicking_fetch_releases_every_key_and_frees_them() {
    run(async {
        let (group, gate) = (G::default(), Gate::new());
        let batch = {
            let (group, gate) = (group.clone(), gate.clone());
            tokio::spawn(async move {
                group
                    .work_batch([1, 2, 3], move |_| {
                        let gate = gate.clone();
                        async move {
                            gate.wait().await;
                            panic!("fetch on fire");
                            #[allow(unreachable_code)]
                            Vec::<(u32, String)>::new()
                        }
                    })
                    .await
            })
        };
        until(|| group.counters().leaders == 3).await;
        let singles: Vec<_> = [2, 3].into_iter().map(|k| spawn_single(&group, k)).collect();
        until(|| group.counters().followers == 2).await;
        gate.open();
        // Exactly one caller drove the fetch's last poll and got the panic (any waiter of any
        // key may drive it); every other caller of every key got `Aborted::is_panic` with the
        // message.
        let check = |aborted: &Aborted| {
            assert!(aborted.is_panic());
            assert_eq!(aborted.message(), Some("fetch on fire"));
        };
        let mut panicked = 0;
        match batch.await {
            Ok(results) => results.iter().for_each(|r| check(r.as_ref().unwrap_err())),
            Err(join) => panicked += usize::from(join.is_panic()),
        }
        for single in singles {
            match single.await {
                Ok(result) => check(&result.unwrap_err()),
                Err(join) => panicked += usize::from(join.is_panic()),
            }
        }
        assert_eq!(panicked, 1, "the panic is resumed in the one caller that drove the fetch");
        assert!(group.is_idle(), "no key is poisoned");
        let db = Arc::new(Db::default());
        assert_eq!(values(&group.work_batch([1, 2, 3], db.fetch(None, &[])).await), [row(1), row(2), row(3)]);
    });
}

#[test]
fn a_batch_caller_leaving_mid_batch_fails_nobody() {
    run(async {
        let (group, db, gate) = (G::default(), Arc::new(Db::default()), Gate::new());
        let batch = spawn_batch(&group, &[1, 2, 3], db.fetch(Some(&gate), &[]));
        until(|| db.probe.running() == 1).await; // the fetch has started
        let singles: Vec<_> = [1, 3].into_iter().map(|k| spawn_single(&group, k)).collect();
        until(|| group.counters().followers == 2).await;
        batch.abort(); // the caller that made and drove the fetch is dropped
        assert!(batch.await.unwrap_err().is_cancelled());
        // Key 2 had no other waiter: freed. The fetch goes on for keys 1 and 3.
        until(|| group.in_flight() == 2).await;
        assert_eq!(db.probe.drops(), 0, "the fetch still runs");
        gate.open();
        for (single, key) in singles.into_iter().zip([1, 3]) {
            assert_eq!(*single.await.unwrap().unwrap().value(), row(key));
        }
        assert_eq!((db.probe.runs(), db.calls().len()), (1, 1), "neither restarted nor fetched again");
        assert!(group.is_idle());
    });
}

#[test]
fn a_stalled_batch_caller_does_not_block_the_callers_of_its_keys() {
    run(async {
        let (group, db) = (G::default(), Arc::new(Db::default()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rx = Arc::new(Mutex::new(Some(rx)));
        let mut batch = Box::pin(group.work_batch([1, 2], {
            let db = db.clone();
            move |ids: Vec<u32>| {
                db.calls.lock().unwrap().push(ids.clone());
                let rx = rx.lock().unwrap().take().expect("fetched once");
                async move {
                    rx.await.unwrap(); // woken from outside: the wake must reach a polled waiter
                    ids.into_iter().map(|id| (id, format!("row {id}"))).collect::<Vec<_>>()
                }
            }
        }));
        assert!(poll_once(&mut batch).is_pending()); // polled once, then never again
        let single = spawn_single(&group, 2);
        until(|| group.counters().followers == 1).await;
        tx.send(()).unwrap();
        assert_eq!(*single.await.unwrap().unwrap().value(), row(2));
        // The stalled caller, polled at last, finds both keys done.
        let std::task::Poll::Ready(results) = poll_once(&mut batch) else { panic!("both keys are done") };
        assert_eq!(values(&results), [row(1), row(2)]);
        assert_eq!(db.calls(), [vec![1, 2]]);
        assert!(group.is_idle());
    });
}

/// A fetch future that never finishes and counts its drops.
struct Endless(Arc<AtomicUsize>);

impl Future for Endless {
    type Output = Vec<(u32, String)>;
    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::task::Poll::Pending
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

#[test]
fn the_fetch_is_dropped_only_when_every_waiter_of_every_key_has_left() {
    run(async {
        let group = G::default();
        let dropped = Arc::new(AtomicUsize::new(0));
        let batch = {
            let (group, dropped) = (group.clone(), dropped.clone());
            tokio::spawn(async move { group.work_batch([1, 2, 3], move |_| Endless(dropped.clone())).await })
        };
        until(|| group.counters().leaders == 3).await;
        let one = spawn_single(&group, 1);
        let two = spawn_single(&group, 2);
        until(|| group.counters().followers == 2).await;
        batch.abort();
        assert!(batch.await.unwrap_err().is_cancelled());
        until(|| group.in_flight() == 2).await; // key 3 had nobody else: freed
        assert_eq!(dropped.load(SeqCst), 0, "keys 1 and 2 still have waiters");
        one.abort();
        assert!(one.await.unwrap_err().is_cancelled());
        until(|| group.in_flight() == 1).await;
        assert_eq!(dropped.load(SeqCst), 0, "key 2 still has a waiter");
        two.abort();
        assert!(two.await.unwrap_err().is_cancelled());
        until(|| group.is_idle()).await;
        assert_eq!(dropped.load(SeqCst), 1, "dropped once, with the last waiter");
    });
}

#[test]
fn keys_are_free_after_a_batch_the_next_batch_fetches_again() {
    run(async {
        let (group, db) = (G::default(), Arc::new(Db::default()));
        for _ in 0..2 {
            assert_eq!(values(&group.work_batch([1, 2], db.fetch(None, &[])).await), [row(1), row(2)]);
            assert!(group.is_idle());
        }
        assert_eq!(db.calls(), [vec![1, 2], vec![1, 2]], "not a cache");
    });
}

#[test]
fn a_batch_promoted_after_a_single_work_leader_is_dropped_fetches_that_key_alone() {
    run(async {
        let (group, db, gate) = (G::default(), Arc::new(Db::default()), Gate::new());
        let leader = {
            let group = group.clone();
            tokio::spawn(async move { group.work(&2, std::future::pending).await })
        };
        until(|| group.counters().leaders == 1).await;
        let batch = spawn_batch(&group, &[1, 2], db.fetch(Some(&gate), &[]));
        until(|| group.counters().followers == 1 && db.calls().len() == 1).await;
        leader.abort(); // key 2's work-mode leader is gone: the batch call takes over
        assert!(leader.await.unwrap_err().is_cancelled());
        until(|| db.calls().len() == 2).await;
        gate.open();
        let results = batch.await.unwrap();
        assert_eq!(values(&results), [row(1), row(2)]);
        assert_eq!(db.calls(), [vec![1], vec![2]]);
        assert_eq!(group.counters().promotions, 1);
        assert!(group.is_idle());
    });
}

#[test]
fn blocking_batches_and_async_batches_share_flights() {
    run(async {
        let (group, db, gate) = (G::default(), Arc::new(Db::default()), Gate::new());
        let batch = spawn_batch(&group, &[1, 2], db.fetch(Some(&gate), &[]));
        until(|| db.calls().len() == 1).await;
        let blocking = {
            let (group, db) = (group.clone(), db.clone());
            std::thread::spawn(move || {
                group.work_batch_blocking([2, 3], |ids| {
                    db.calls.lock().unwrap().push(ids.clone());
                    ids.into_iter().map(|id| (id, format!("row {id}")))
                })
            })
        };
        until(|| group.counters().followers == 1).await; // the thread follows key 2
        gate.open();
        assert_eq!(values(&batch.await.unwrap()), [row(1), row(2)]);
        let blocking = tokio::task::spawn_blocking(move || blocking.join().unwrap()).await.unwrap();
        assert_eq!(values(&blocking), [row(2), row(3)]);
        assert_eq!(db.calls(), [vec![1, 2], vec![3]]);
        assert!(group.is_idle());
    });
}

#[test]
fn a_panicking_blocking_fetch_releases_the_async_callers_of_its_keys() {
    run(async {
        let group = G::default();
        let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
        let go = Gate::new();
        let thread = {
            let (group, go) = (group.clone(), go.clone());
            std::thread::spawn(move || {
                group.work_batch_blocking([1, 2], |_| -> Vec<(u32, String)> {
                    entered_tx.send(()).unwrap();
                    futures_lite::future::block_on(go.wait());
                    panic!("blocking fetch on fire")
                })
            })
        };
        tokio::task::spawn_blocking(move || entered_rx.recv().unwrap()).await.unwrap();
        let single = spawn_single(&group, 2);
        until(|| group.counters().followers == 1).await;
        go.open();
        let aborted = single.await.unwrap().unwrap_err();
        assert_eq!((aborted.is_panic(), aborted.message()), (true, Some("blocking fetch on fire")));
        assert!(tokio::task::spawn_blocking(move || thread.join()).await.unwrap().is_err());
        assert!(group.is_idle());
    });
}

#[test]
fn many_concurrent_overlapping_batches_fetch_each_key_once_at_a_time() {
    run(async {
        let group = G::default();
        let fetched: Arc<Vec<AtomicUsize>> = Arc::new((0..64).map(|_| AtomicUsize::new(0)).collect());
        let in_fetch: Arc<Vec<AtomicUsize>> = Arc::new((0..64).map(|_| AtomicUsize::new(0)).collect());
        let mut calls = Vec::new();
        for c in 0..32u32 {
            let (group, fetched, in_fetch) = (group.clone(), fetched.clone(), in_fetch.clone());
            calls.push(tokio::spawn(async move {
                let keys: Vec<u32> = (0..8).map(|i| (c * 3 + i * 5) % 64).collect();
                let results = group
                    .work_batch(keys.clone(), move |ids: Vec<u32>| {
                        let (fetched, in_fetch) = (fetched.clone(), in_fetch.clone());
                        async move {
                            for &id in &ids {
                                fetched[id as usize].fetch_add(1, SeqCst);
                                assert_eq!(
                                    in_fetch[id as usize].fetch_add(1, SeqCst),
                                    0,
                                    "key {id} fetched twice at once"
                                );
                            }
                            tokio::task::yield_now().await;
                            for &id in &ids {
                                in_fetch[id as usize].fetch_sub(1, SeqCst);
                            }
                            ids.into_iter().map(|id| (id, format!("row {id}"))).collect::<Vec<_>>()
                        }
                    })
                    .await;
                assert_eq!(values(&results), keys.iter().map(|&k| row(k)).collect::<Vec<_>>());
            }));
        }
        for call in calls {
            call.await.unwrap();
        }
        assert!(group.is_idle());
        assert!(fetched.iter().all(|n| n.load(SeqCst) <= 32));
    });
}

// ---- Batcher ----------------------------------------------------------------------------------

use coalescer::{Batcher, Sleep, Window};

/// A window that closes when the test opens its gate (the test decides when, without timing).
#[derive(Clone, Debug)]
struct GateWindow(Gate);

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

impl Window for GateWindow {
    type Timer = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
    fn start(&self) -> Self::Timer {
        Box::pin(self.0.wait())
    }
}

/// A `Sleep` whose timers are a gate, counting the windows it was asked for.
#[derive(Clone)]
struct GateSleep(Gate, Arc<Mutex<Vec<std::time::Duration>>>);

impl Sleep for GateSleep {
    type Timer = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
    fn sleep(&self, duration: std::time::Duration) -> Self::Timer {
        self.1.lock().unwrap().push(duration);
        Box::pin(self.0.wait())
    }
}

type Loader = Batcher<
    u32,
    Option<String>,
    coalescer::futures::Many<Box<dyn Fn(Vec<u32>) -> Rows + Send + Sync>>,
    GateWindow,
>;

fn loader(db: &Arc<Db>, window: &Gate, fetch_gate: Option<&Gate>, missing: &'static [u32]) -> Arc<Loader> {
    let fetch: Box<dyn Fn(Vec<u32>) -> Rows + Send + Sync> = Box::new(db.fetch(fetch_gate, missing));
    Arc::new(Batcher::new(fetch).with_window(GateWindow(window.clone())))
}

fn spawn_load(
    loader: &Arc<Loader>,
    key: u32,
) -> tokio::task::JoinHandle<Result<Outcome<Option<String>>, Aborted>> {
    let loader = loader.clone();
    tokio::spawn(async move { loader.load(key).await })
}

fn sorted(mut calls: Vec<Vec<u32>>) -> Vec<Vec<u32>> {
    calls.iter_mut().for_each(|c| c.sort_unstable());
    calls.sort();
    calls
}

#[test]
fn batcher_collects_concurrent_loads_in_its_window_into_one_fetch() {
    run(async {
        let (db, window) = (Arc::new(Db::default()), Gate::new());
        let loader = loader(&db, &window, None, &[3]);
        let loads: Vec<_> = (1..=5).map(|k| spawn_load(&loader, k)).collect();
        until(|| loader.in_window() == 5).await;
        assert!(db.calls().is_empty(), "the window is still open");
        window.open();
        for (load, key) in loads.into_iter().zip(1..) {
            let expected = if key == 3 { None } else { row(key) };
            assert_eq!(*load.await.unwrap().unwrap().value(), expected);
        }
        assert_eq!(sorted(db.calls()), [vec![1, 2, 3, 4, 5]]);
        assert!(loader.group().is_idle());
    });
}

#[test]
fn batcher_closes_a_full_batch_at_once_without_waiting_for_the_window() {
    run(async {
        let (db, window) = (Arc::new(Db::default()), Gate::new());
        let fetch: Box<dyn Fn(Vec<u32>) -> Rows + Send + Sync> = Box::new(db.fetch(None, &[]));
        let loader: Arc<Loader> =
            Arc::new(Batcher::new(fetch).with_window(GateWindow(window.clone())).max_batch(3));
        let loads: Vec<_> = (1..=7).map(|k| spawn_load(&loader, k)).collect();
        // Two full batches fetched at once, the window still closed; the seventh key waits in it.
        until(|| db.calls().len() == 2 && loader.in_window() == 1).await;
        assert_eq!(db.calls().iter().map(Vec::len).collect::<Vec<_>>(), [3, 3]);
        window.open(); // the third batch (one key) waited for its window
        for (load, key) in loads.into_iter().zip(1..) {
            assert_eq!(*load.await.unwrap().unwrap().value(), row(key));
        }
        let calls = db.calls();
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
        assert_eq!(sorted(calls).concat().len(), 7, "each key fetched once");
        assert!(loader.group().is_idle());
    });
}

#[test]
fn batcher_default_window_of_yields_collects_ready_tasks_without_a_timer() {
    // A current-thread runtime: the tasks run in turn, so the window's yields are the only way
    // the other loads can add their keys before the fetch (no timer, no runtime feature used).
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap(); // time: the watchdog only
    rt.block_on(async {
        tokio::time::timeout(common::WATCHDOG, async {
            let db = Arc::new(Db::default());
            let loader = Arc::new(Batcher::new(db.fetch(None, &[])));
            let loads: Vec<_> = (1..=5)
                .map(|k| {
                    let loader = loader.clone();
                    tokio::spawn(async move { loader.load(k).await })
                })
                .collect();
            for (load, key) in loads.into_iter().zip(1..) {
                assert_eq!(*load.await.unwrap().unwrap().value(), row(key));
            }
            assert_eq!(sorted(db.calls()), [vec![1, 2, 3, 4, 5]]);
        })
        .await
        .expect("watchdog: the test hung");
    });
}

#[test]
fn batcher_loads_dropped_in_the_window_are_left_out_and_fail_nobody() {
    run(async {
        let (db, window) = (Arc::new(Db::default()), Gate::new());
        let loader = loader(&db, &window, None, &[]);
        let opener = spawn_load(&loader, 1);
        until(|| loader.in_window() == 1).await;
        let (two, three) = (spawn_load(&loader, 2), spawn_load(&loader, 3));
        until(|| loader.in_window() == 3).await;
        // The load that opened the batch (and drove its window) and another are dropped.
        opener.abort();
        two.abort();
        assert!(opener.await.unwrap_err().is_cancelled() && two.await.unwrap_err().is_cancelled());
        until(|| loader.group().in_flight() == 1).await;
        window.open();
        assert_eq!(*three.await.unwrap().unwrap().value(), row(3));
        assert_eq!(db.calls(), [vec![3]], "the keys nobody waits for are left out of the fetch");
        assert!(loader.group().is_idle());
    });
}

#[test]
fn batcher_every_load_dropped_in_the_window_drops_the_batch_and_the_next_load_opens_a_new_one() {
    run(async {
        let (db, window) = (Arc::new(Db::default()), Gate::new());
        let loader = loader(&db, &window, None, &[]);
        let loads: Vec<_> = (1..=2).map(|k| spawn_load(&loader, k)).collect();
        until(|| loader.in_window() == 2).await;
        for load in loads {
            load.abort();
            assert!(load.await.unwrap_err().is_cancelled());
        }
        until(|| loader.group().is_idle()).await;
        window.open();
        assert_eq!(*loader.load(9).await.unwrap().value(), row(9));
        assert_eq!(db.calls(), [vec![9]], "the abandoned batch never fetched");
    });
}

#[test]
fn batcher_load_that_opened_the_batch_dropped_mid_fetch_fails_nobody() {
    run(async {
        let (db, window, fetch_gate) = (Arc::new(Db::default()), Gate::new(), Gate::new());
        let loader = loader(&db, &window, Some(&fetch_gate), &[]);
        let opener = spawn_load(&loader, 1);
        until(|| loader.in_window() == 1).await;
        let other = spawn_load(&loader, 2);
        until(|| loader.in_window() == 2).await;
        window.open();
        until(|| db.probe.running() == 1).await; // the fetch of {1, 2} runs
        opener.abort();
        assert!(opener.await.unwrap_err().is_cancelled());
        fetch_gate.open();
        assert_eq!(*other.await.unwrap().unwrap().value(), row(2));
        assert_eq!((db.probe.runs(), db.calls().len()), (1, 1));
        assert!(loader.group().is_idle());
    });
}

#[test]
fn batcher_loads_of_a_key_in_flight_join_it_and_so_do_single_calls() {
    run(async {
        let (db, window) = (Arc::new(Db::default()), Gate::new());
        let loader = loader(&db, &window, None, &[]);
        let first = spawn_load(&loader, 4);
        until(|| loader.in_window() == 1).await;
        let again = spawn_load(&loader, 4);
        let single = {
            let loader = loader.clone();
            tokio::spawn(async move { loader.group().work(&4, || async { unreachable!("joins") }).await })
        };
        until(|| loader.group().counters().followers == 2).await;
        window.open();
        for outcome in [first.await.unwrap(), again.await.unwrap(), single.await.unwrap()] {
            assert_eq!(*outcome.unwrap().value(), row(4));
        }
        assert_eq!(db.calls(), [vec![4]]);
        assert!(loader.group().is_idle());
    });
}

#[test]
fn batcher_fallible_fetch_shares_its_error_with_every_load_of_the_batch() {
    run(async {
        let window = Gate::new();
        let loader = Arc::new(
            Batcher::fallible(|_: Vec<u32>| async { Err::<Vec<(u32, u32)>, _>("down".to_string()) })
                .with_window(GateWindow(window.clone())),
        );
        let loads: Vec<_> = (1..=3)
            .map(|k| {
                let loader = loader.clone();
                tokio::spawn(async move { loader.try_load(k).await })
            })
            .collect();
        until(|| loader.in_window() == 3).await;
        window.open();
        let mut errors = Vec::new();
        for load in loads {
            match load.await.unwrap().unwrap_err() {
                coalescer::Error::Failed(e) => errors.push(e),
                other => panic!("expected the fetch's error, got {other:?}"),
            }
        }
        assert!(errors.iter().all(|e| Arc::ptr_eq(e, &errors[0]) && e.as_str() == "down"));
        assert!(loader.group().is_idle());
    });
}

#[test]
fn batcher_panicking_fetch_releases_every_load_and_frees_the_keys() {
    run(async {
        let window = Gate::new();
        let loader = Arc::new(
            Batcher::new(|_: Vec<u32>| async {
                panic!("batch on fire");
                #[allow(unreachable_code)]
                Vec::<(u32, u32)>::new()
            })
            .with_window(GateWindow(window.clone())),
        );
        let loads: Vec<_> = (1..=3)
            .map(|k| {
                let loader = loader.clone();
                tokio::spawn(async move { loader.load(k).await })
            })
            .collect();
        until(|| loader.in_window() == 3).await;
        window.open();
        let mut panicked = 0;
        for load in loads {
            match load.await {
                Ok(result) => assert_eq!(result.unwrap_err().message(), Some("batch on fire")),
                Err(join) => panicked += usize::from(join.is_panic()),
            }
        }
        assert_eq!(panicked, 1, "resumed in the one load that drove the fetch");
        assert!(loader.group().is_idle());
    });
}

#[test]
fn batcher_timed_window_asks_the_sleep_for_one_timer_per_batch() {
    run(async {
        let db = Arc::new(Db::default());
        let (gate, asked) = (Gate::new(), Arc::new(Mutex::new(Vec::new())));
        let window = std::time::Duration::from_millis(5);
        let loader = Arc::new(
            Batcher::new(db.fetch(None, &[])).window(GateSleep(gate.clone(), asked.clone()), window),
        );
        let loads: Vec<_> = (1..=3)
            .map(|k| {
                let loader = loader.clone();
                tokio::spawn(async move { loader.load(k).await })
            })
            .collect();
        until(|| loader.in_window() == 3).await;
        gate.open();
        for (load, key) in loads.into_iter().zip(1..) {
            assert_eq!(*load.await.unwrap().unwrap().value(), row(key));
        }
        assert_eq!(sorted(db.calls()), [vec![1, 2, 3]]);
        assert_eq!(*asked.lock().unwrap(), [window]);
    });
}

#[test]
fn batcher_load_many_is_a_batch_of_its_own_on_the_same_flights() {
    run(async {
        let (db, window) = (Arc::new(Db::default()), Gate::new());
        let loader = loader(&db, &window, None, &[]);
        let waiting = spawn_load(&loader, 2); // in the window
        until(|| loader.in_window() == 1).await;
        let many = {
            let loader = loader.clone();
            tokio::spawn(async move { values(&loader.load_many([1, 2, 3]).await) })
        };
        until(|| db.calls().len() == 1 && loader.group().counters().followers == 1).await;
        assert_eq!(db.calls(), [vec![1, 3]], "key 2 waits in the window: joined, not fetched");
        window.open();
        assert_eq!(many.await.unwrap(), [row(1), row(2), row(3)]);
        assert_eq!(*waiting.await.unwrap().unwrap().value(), row(2));
        assert!(loader.group().is_idle());
    });
}

// ---- User code that panics ---------------------------------------------------------------------

/// A key whose `Hash` panics for the value 13.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Touchy(u32);

impl std::hash::Hash for Touchy {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        assert_ne!(self.0, 13, "unlucky key");
        self.0.hash(state);
    }
}

#[test]
fn a_key_whose_hash_panics_ends_the_flights_the_batch_led_and_frees_them() {
    run(async {
        let group = Arc::new(Group::<Touchy, Option<u32>>::new());
        let db = Arc::new(Db::default());
        let call = {
            let (group, db) = (group.clone(), db.clone());
            tokio::spawn(async move {
                let keys = [Touchy(1), Touchy(13), Touchy(2)];
                group
                    .work_batch(keys, move |ids: Vec<Touchy>| {
                        db.calls.lock().unwrap().push(ids.iter().map(|k| k.0).collect());
                        async move { ids.into_iter().map(|k| (k.clone(), k.0)).collect::<Vec<_>>() }
                    })
                    .await
            })
        };
        let join = call.await.unwrap_err();
        assert!(join.is_panic(), "the panic reaches the caller whose key panicked");
        assert!(db.calls().is_empty(), "nothing was fetched");
        assert!(group.is_idle(), "key 1, led before the panic, is free again");
        let again =
            group.work_batch([Touchy(1)], |ids| async move { ids.into_iter().map(|k| (k.clone(), k.0)) });
        assert_eq!(*again.await[0].as_ref().unwrap().value(), Some(1));
    });
}

#[test]
fn a_fetch_closure_that_panics_releases_the_keys_it_led() {
    run(async {
        let group = G::default();
        let call = {
            let group = group.clone();
            tokio::spawn(async move {
                group
                    .work_batch([1, 2], |_: Vec<u32>| -> std::future::Ready<Vec<(u32, String)>> {
                        panic!("closure on fire")
                    })
                    .await
            })
        };
        assert!(call.await.unwrap_err().is_panic());
        assert!(group.is_idle());
        let db = Arc::new(Db::default());
        assert_eq!(values(&group.work_batch([1, 2], db.fetch(None, &[])).await), [row(1), row(2)]);
    });
}

/// A fetch whose `Drop` panics once it has returned its rows (after its gate opened).
struct DropBomb(Vec<u32>, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>);

impl Future for DropBomb {
    type Output = Vec<(u32, String)>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::task::ready!(self.1.as_mut().poll(cx));
        std::task::Poll::Ready(
            std::mem::take(&mut self.0).into_iter().map(|id| (id, format!("row {id}"))).collect(),
        )
    }
}

impl Drop for DropBomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("fetch drop on fire");
        }
    }
}

#[test]
fn a_fetch_whose_drop_panics_still_hands_the_other_keys_their_values() {
    run(async {
        let group = G::default();
        let gate = Gate::new();
        let call = {
            let (group, gate) = (group.clone(), gate.clone());
            tokio::spawn(async move {
                group.work_batch([1, 2, 3], move |ids| DropBomb(ids, Box::pin(gate.wait()))).await
            })
        };
        until(|| group.counters().leaders == 3).await;
        let singles: Vec<_> = [1, 2, 3].into_iter().map(|k| spawn_single(&group, k)).collect();
        until(|| group.counters().followers == 3).await;
        gate.open();
        // The caller that drove the fetch to its end sees the panic of its `Drop` (its key ends
        // with the panic); every other key's callers get the value.
        let mut aborted_keys = Vec::new();
        let mut panicked = usize::from(matches!(&call.await, Err(join) if join.is_panic()));
        for (single, key) in singles.into_iter().zip(1..) {
            match single.await {
                Ok(Ok(outcome)) => assert_eq!(*outcome.value(), row(key)),
                Ok(Err(aborted)) => {
                    assert_eq!(aborted.message(), Some("fetch drop on fire"));
                    aborted_keys.push(key);
                }
                Err(join) => panicked += usize::from(join.is_panic()),
            }
        }
        assert_eq!(panicked, 1, "resumed in the one caller that dropped the fetch");
        assert!(aborted_keys.len() <= 1, "only the driver's key ends with the panic: {aborted_keys:?}");
        assert!(group.is_idle());
    });
}

#[test]
fn batch_futures_are_send_and_unpin() {
    fn send_unpin<T: Send + Unpin>(_: &T) {}
    let group = Group::<u32, Option<u32>>::new();
    send_unpin(&group.work_batch([1], |ids| async move { ids.into_iter().map(|i| (i, i)) }));
    let try_group = TryGroup::<u32, Option<u32>, String>::new();
    send_unpin(
        &try_group.try_work_batch([1], |ids| async move { Ok::<_, String>(ids.into_iter().map(|i| (i, i))) }),
    );
    let loader = Batcher::new(|ids: Vec<u32>| async move { ids.into_iter().map(|i| (i, i)) });
    send_unpin(&loader.load(1));
    let fallible =
        Batcher::fallible(|ids: Vec<u32>| async move { Ok::<_, String>(ids.into_iter().map(|i| (i, i))) });
    send_unpin(&fallible.try_load(1));
    fn sync<T: Sync + Send>(_: &T) {}
    sync(&loader);
}
