//! The contract of `coalescer::cache`: one load per key in flight whatever triggered it, fresh
//! hits that never load, stale-while-revalidate that nobody waits for, fail-safe, generations
//! that keep an invalidated load out, eviction that strands nobody, panics that cache nothing.
//! Time is a `ManualClock` moved by the tests; events are ordered with gates, not sleeps; the
//! runtime is a real two-worker tokio runtime, and some callers are plain threads.

mod common;

use coalescer::Spawn;
use coalescer::cache::{Cache, ManualClock, Served};
use common::{Gate, poll_once, run, until};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// Counts the loader's executions and catches two running at once.
#[derive(Default)]
struct Loads {
    started: AtomicUsize,
    running: AtomicUsize,
    overlaps: AtomicUsize,
    finished: AtomicUsize,
}

struct Running(Arc<Loads>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, SeqCst);
    }
}

impl Loads {
    fn enter(self: &Arc<Self>) -> Running {
        self.started.fetch_add(1, SeqCst);
        if self.running.fetch_add(1, SeqCst) > 0 {
            self.overlaps.fetch_add(1, SeqCst);
        }
        Running(self.clone())
    }

    /// A loader that returns `value` once `gate` opens.
    fn gated<T: Send + 'static>(
        self: &Arc<Self>,
        gate: &Gate,
        value: T,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = T> + Send>> + Send + 'static {
        let (loads, open) = (self.clone(), gate.wait());
        move || {
            let running = loads.enter();
            Box::pin(async move {
                open.await;
                loads.finished.fetch_add(1, SeqCst);
                drop(running);
                value
            })
        }
    }

    fn started(&self) -> usize {
        self.started.load(SeqCst)
    }
}

/// A spawner on the current tokio runtime, in detach mode.
struct OnTokio;

impl Spawn for OnTokio {
    type Task = tokio::task::JoinHandle<()>;
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> Self::Task {
        tokio::spawn(task)
    }
    fn aborts_when_abandoned(&self) -> bool {
        false
    }
}

/// A timer that fires when the test opens its gate (timeouts without waiting for real time).
struct GateTimer(Gate);

impl coalescer::Sleep for GateTimer {
    type Timer = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
    fn sleep(&self, _: Duration) -> Self::Timer {
        Box::pin(self.0.wait())
    }
}

fn never<T>() -> std::future::Ready<T> {
    unreachable!("this read must not load")
}

type C = Cache<u32, u64>;

/// A read that owns its cache (to be polled by hand, then spawned); it must not load.
async fn read_owned(
    cache: C,
    key: u32,
) -> Result<coalescer::cache::Read<u64>, coalescer::cache::Error<std::convert::Infallible>> {
    cache.get_with(key, never).await
}

fn cache(clock: &Arc<ManualClock>) -> coalescer::cache::CacheBuilder<u32, u64> {
    Cache::builder().clock(clock.clone()).time_to_live(10 * SEC)
}

#[test]
fn one_load_per_key_in_flight_whatever_triggered_it() {
    run(async {
        let clock = Arc::new(ManualClock::new());
        let cache: C = cache(&clock).refresh_after(5 * SEC).build();
        let loads = Arc::new(Loads::default());
        cache.insert(1, 10);
        clock.advance(6 * SEC);
        // A refresh starts (and waits for its gate) ...
        let gate = Gate::new();
        let read = cache.get_with(1, loads.gated(&gate, 11)).await.unwrap();
        assert_eq!((*read.value(), read.served()), (10, Served::Refreshing));
        // ... the key expires; misses from tasks and from threads all join that refresh.
        clock.advance(5 * SEC);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, loads, gate) = (cache.clone(), loads.clone(), gate.clone());
            tasks.push(tokio::spawn(async move { cache.get_with(1, loads.gated(&gate, 12)).await }));
        }
        let mut threads = Vec::new();
        for _ in 0..2 {
            let cache = cache.clone();
            threads.push(std::thread::spawn(move || cache.get_with_blocking(1, || unreachable!("joins"))));
        }
        until(|| cache.counters().misses == 10).await;
        gate.open();
        for task in tasks {
            let read = task.await.unwrap().unwrap();
            assert_eq!((*read.value(), read.served()), (11, Served::Joined));
        }
        for thread in threads {
            assert_eq!(*thread.join().unwrap().unwrap().value(), 11);
        }
        assert_eq!((loads.started(), loads.overlaps.load(SeqCst)), (1, 0));
        assert_eq!(cache.counters().loads, 1);
        assert_eq!(cache.peek(&1), Some(11));
    });
}

#[test]
fn concurrent_misses_from_tasks_and_threads_load_once() {
    run(async {
        let cache: C = Cache::builder().build();
        let loads = Arc::new(Loads::default());
        let gate = Gate::new();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (cache, loads, gate) = (cache.clone(), loads.clone(), gate.clone());
            tasks.push(tokio::spawn(async move { cache.get_with(7, loads.gated(&gate, 70)).await }));
        }
        // The thread comes once the load is in the air (so that it joins, not leads).
        until(|| loads.started() == 1).await;
        let blocking = {
            let cache = cache.clone();
            std::thread::spawn(move || cache.get_with_blocking(7, || unreachable!("joins the load")))
        };
        until(|| cache.counters().misses == 17).await;
        gate.open();
        let mut loaded = 0;
        for task in tasks {
            let read = task.await.unwrap().unwrap();
            loaded += usize::from(read.served() == Served::Loaded);
            assert!(read.served().is_loaded());
        }
        let from_thread = blocking.join().unwrap().unwrap();
        assert_eq!((*from_thread.value(), from_thread.served()), (70, Served::Joined));
        assert_eq!(loaded, 1);
        assert_eq!((loads.started(), loads.overlaps.load(SeqCst)), (1, 0));
    });
}

#[test]
fn a_fresh_hit_never_loads() {
    run(async {
        let clock = Arc::new(ManualClock::new());
        let cache: C = cache(&clock).refresh_after(5 * SEC).build();
        assert_eq!(cache.get_with(1, || async { 5 }).await.unwrap().served(), Served::Loaded);
        clock.advance(4 * SEC);
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let cache = cache.clone();
            tasks.push(tokio::spawn(async move { cache.get_with(1, never).await.unwrap() }));
        }
        for task in tasks {
            let read = task.await.unwrap();
            assert_eq!((*read.value(), read.served()), (5, Served::Fresh));
        }
        let blocking = cache.get_with_blocking(1, || unreachable!("a fresh hit never loads")).unwrap();
        assert_eq!(blocking.served(), Served::Fresh);
        let c = cache.counters();
        assert_eq!((c.loads, c.misses, c.hits, c.refreshes), (1, 1, 17, 0));
    });
}

#[test]
fn stale_while_revalidate_returns_at_once_and_one_spawned_refresh_finishes_after_every_caller_left() {
    run(async {
        let clock = Arc::new(ManualClock::new());
        let cache: C = cache(&clock).refresh_after(5 * SEC).spawner(OnTokio).build();
        let loads = Arc::new(Loads::default());
        cache.insert(1, 10);
        clock.advance(6 * SEC);
        let gate = Gate::new();
        // Every read returns at once, while the refresh is held at its gate.
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (cache, loads, gate) = (cache.clone(), loads.clone(), gate.clone());
            tasks.push(tokio::spawn(async move { cache.get_with(1, loads.gated(&gate, 11)).await }));
        }
        for task in tasks {
            let read = task.await.unwrap().unwrap();
            assert_eq!((*read.value(), read.served()), (10, Served::Refreshing));
        }
        assert_eq!(loads.started(), 1);
        assert_eq!(cache.counters().refreshes, 1);
        // Every caller has left; the refresh finishes by itself and fills the cache.
        gate.open();
        until(|| cache.peek(&1) == Some(11)).await;
        until(|| cache.loading() == 0).await;
        assert_eq!((loads.started(), loads.overlaps.load(SeqCst)), (1, 0));
        assert_eq!(cache.get_with(1, never).await.unwrap().served(), Served::Fresh);
    });
}

#[test]
fn without_a_spawner_the_refresh_is_driven_by_later_reads_none_of_which_waits() {
    run(async {
        let clock = Arc::new(ManualClock::new());
        let cache: C = cache(&clock).refresh_after(5 * SEC).build();
        let loads = Arc::new(Loads::default());
        cache.insert(1, 10);
        clock.advance(6 * SEC);
        let gate = Gate::new();
        let first = cache.get_with(1, loads.gated(&gate, 11)).await.unwrap();
        assert_eq!(first.served(), Served::Refreshing);
        // Reads while the refresh waits: at once, the stale value, no second load.
        for _ in 0..8 {
            let read = cache.get_with(1, loads.gated(&gate, 99)).await.unwrap();
            assert_eq!((*read.value(), read.served()), (10, Served::Refreshing));
        }
        gate.open();
        // Each read polls the refresh once (it was woken) and returns; one of them finishes it.
        let mut reads = 0;
        loop {
            let read = cache.get_with(1, never).await.unwrap();
            reads += 1;
            if *read.value() == 11 {
                assert_eq!(read.served(), Served::Fresh);
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(reads >= 1);
        assert_eq!((loads.started(), loads.overlaps.load(SeqCst)), (1, 0));
        until(|| cache.loading() == 0).await;
    });
}

#[test]
fn a_stalled_caller_does_not_hold_up_the_load_or_the_refresh() {
    run(async {
        let clock = Arc::new(ManualClock::new());
        let cache: C = cache(&clock).refresh_after(5 * SEC).build();
        let loads = Arc::new(Loads::default());
        let gate = Gate::new();
        // A miss whose caller is polled once (it leads the load) and then never again.
        let mut stalled = Box::pin(cache.get_with(1, loads.gated(&gate, 10)));
        assert!(poll_once(&mut stalled).is_pending());
        assert_eq!(loads.started(), 1);
        let joined = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get_with(1, never).await })
        };
        gate.open();
        let read = joined.await.unwrap().unwrap();
        assert_eq!((*read.value(), read.served()), (10, Served::Joined));
        // Now a refresh, with a stalled caller that joined it after the expiry.
        clock.advance(6 * SEC);
        let gate = Gate::new();
        assert_eq!(cache.get_with(1, loads.gated(&gate, 11)).await.unwrap().served(), Served::Refreshing);
        clock.advance(5 * SEC);
        let mut stalled_too = Box::pin(cache.get_with(1, never));
        assert!(poll_once(&mut stalled_too).is_pending());
        gate.open();
        // The next read drives the refresh to its end (it was woken): no wait, no new load.
        let read = cache.get_with(1, never).await.unwrap();
        assert_eq!(*read.value(), 11);
        assert_eq!((loads.started(), loads.overlaps.load(SeqCst)), (2, 0));
        drop((stalled, stalled_too));
        until(|| cache.loading() == 0).await;
    });
}

#[test]
fn fail_safe_serves_stale_on_error_within_max_stale_and_throttles_retries() {
    run(async {
        let clock = Arc::new(ManualClock::new());
        let cache = Cache::<u32, u64, &'static str>::builder()
            .clock(clock.clone())
            .time_to_live(10 * SEC)
            .max_stale(60 * SEC)
            .retry_after(5 * SEC)
            .build();
        cache.insert(1, 10);
        clock.advance(11 * SEC);
        let failures = Arc::new(AtomicUsize::new(0));
        let failing = || {
            let failures = failures.clone();
            move || async move {
                failures.fetch_add(1, SeqCst);
                Err("database down")
            }
        };
        let read = cache.try_get_with(1, failing()).await.unwrap();
        assert_eq!((*read.value(), read.served()), (10, Served::StaleOnFailure));
        // Within the throttle: served stale at once, no load.
        for _ in 0..4 {
            let read = cache.try_get_with(1, || async { unreachable!("throttled") }).await.unwrap();
            assert_eq!(read.served(), Served::StaleOnFailure);
        }
        assert_eq!(failures.load(SeqCst), 1);
        // After the throttle: one new attempt, which fails too.
        clock.advance(5 * SEC);
        assert_eq!(cache.try_get_with(1, failing()).await.unwrap().served(), Served::StaleOnFailure);
        assert_eq!(failures.load(SeqCst), 2);
        // Past max_stale: the error.
        clock.advance(60 * SEC);
        let err = cache.try_get_with(1, failing()).await.unwrap_err();
        assert_eq!(err.failure(), Some(&"database down"));
        assert_eq!(failures.load(SeqCst), 3);
        // A success puts the key back to normal.
        let read = cache.try_get_with(1, || async { Ok(12) }).await.unwrap();
        assert_eq!((*read.value(), read.served()), (12, Served::Loaded));
        assert_eq!(cache.counters().fail_safe, 6);
    });
}

#[test]
fn errors_are_never_cached_without_negative_caching() {
    run(async {
        let clock = Arc::new(ManualClock::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let failing = || {
            let calls = calls.clone();
            move || async move {
                calls.fetch_add(1, SeqCst);
                Err::<u64, _>("not found")
            }
        };
        let plain = Cache::<u32, u64, &'static str>::builder().clock(clock.clone()).build();
        for expected in 1..=3 {
            assert!(plain.try_get_with(1, failing()).await.unwrap_err().is_failed());
            assert_eq!(calls.load(SeqCst), expected);
        }
        assert!(plain.is_empty());

        calls.store(0, SeqCst);
        let negative =
            Cache::<u32, u64, &'static str>::builder().clock(clock.clone()).negative_ttl(2 * SEC).build();
        assert!(negative.try_get_with(1, failing()).await.unwrap_err().is_failed());
        let cached = negative.try_get_with(1, failing()).await.unwrap_err();
        assert!(cached.is_negative());
        assert_eq!(cached.failure(), Some(&"not found"));
        assert_eq!(calls.load(SeqCst), 1);
        clock.advance(2 * SEC);
        assert!(negative.try_get_with(1, failing()).await.unwrap_err().is_failed());
        assert_eq!(calls.load(SeqCst), 2);
    });
}

#[test]
fn jitter_spreads_the_expiries_of_keys_written_together() {
    run(async {
        // A deterministic, evenly spread source: the golden-ratio sequence.
        let n = Arc::new(AtomicU64::new(1));
        let golden = move || (n.fetch_add(1, SeqCst) as f64 * 0.618_033_988_75).fract();
        let clock = Arc::new(ManualClock::new());
        let jittered = cache(&clock).jitter(10 * SEC).random(golden).build();
        let plain = cache(&clock).build();
        for key in 0..100 {
            let _ = jittered.get_with(key, move || async move { u64::from(key) }).await.unwrap();
            let _ = plain.get_with(key, move || async move { u64::from(key) }).await.unwrap();
        }
        let alive = |cache: &C| (0..100).filter(|k| cache.peek(k).is_some()).count();
        assert_eq!(alive(&jittered), 100, "every key was written: {:?}", jittered.counters());
        clock.advance(10 * SEC); // the plain TTL: every plain key expires at once
        let dead: Vec<u32> = (0..100).filter(|k| jittered.peek(k).is_none()).collect();
        assert_eq!(alive(&plain), 0);
        assert!(
            dead.is_empty(),
            "keys {dead:?} expired at the plain TTL despite the jitter: {:?}",
            jittered.counters()
        );
        clock.advance(5 * SEC); // half way through the jitter
        let half = alive(&jittered);
        assert!((40..=60).contains(&half), "{half} of 100 keys alive half way through the jitter");
        clock.advance(5 * SEC);
        assert_eq!(alive(&jittered), 0);
    });
}

#[test]
fn an_invalidate_during_a_load_keeps_the_loads_value_out() {
    run(async {
        let cache: C = Cache::builder().build();
        let loads = Arc::new(Loads::default());
        let gate = Gate::new();
        let caller = {
            let (cache, loads, gate) = (cache.clone(), loads.clone(), gate.clone());
            tokio::spawn(async move { cache.get_with(1, loads.gated(&gate, 10)).await })
        };
        until(|| loads.started() == 1).await;
        cache.invalidate(&1);
        gate.open();
        // Its own caller gets the load's value; the cache does not.
        assert_eq!(*caller.await.unwrap().unwrap().value(), 10);
        assert_eq!(cache.peek(&1), None);
        // The next read loads anew.
        let read = cache.get_with(1, || async { 11 }).await.unwrap();
        assert_eq!((*read.value(), read.served()), (11, Served::Loaded));
        assert!(cache.len() == 1);
    });
}

#[test]
fn an_insert_during_a_load_wins_over_it() {
    run(async {
        let cache: C = Cache::builder().build();
        let loads = Arc::new(Loads::default());
        let gate = Gate::new();
        let caller = {
            let (cache, loads, gate) = (cache.clone(), loads.clone(), gate.clone());
            tokio::spawn(async move { cache.get_with(1, loads.gated(&gate, 10)).await })
        };
        until(|| loads.started() == 1).await;
        cache.insert(1, 99);
        // A read after the insert does not join the older load.
        assert_eq!(cache.get_with(1, never).await.unwrap().served(), Served::Fresh);
        gate.open();
        assert_eq!(*caller.await.unwrap().unwrap().value(), 10);
        assert_eq!(cache.peek(&1), Some(99));
    });
}

#[test]
fn eviction_under_a_small_capacity_never_strands_a_waiter() {
    run(async {
        let cache: C = Cache::builder().max_capacity(32).build();
        let loads = Arc::new(Loads::default());
        let mut tasks = Vec::new();
        for t in 0..8u32 {
            let (cache, loads) = (cache.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..400u32 {
                    let key = (i * 7 + t * 13) % 300;
                    let loads = loads.clone();
                    let read = cache
                        .get_with(key, move || async move {
                            let _running = loads.started.fetch_add(1, SeqCst);
                            tokio::task::yield_now().await;
                            u64::from(key) * 2
                        })
                        .await
                        .unwrap();
                    assert_eq!(*read.value(), u64::from(key) * 2);
                }
            }));
        }
        let threads: Vec<_> = (0..2u32)
            .map(|t| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    for i in 0..400u32 {
                        let key = (i * 11 + t) % 300;
                        let read = cache.get_with_blocking(key, move || u64::from(key) * 2).unwrap();
                        assert_eq!(*read.value(), u64::from(key) * 2);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(cache.loading(), 0);
        assert!(cache.counters().evictions > 0);
        assert!(cache.len() <= 64, "{} entries in a cache bounded at 32 (scc rounds up)", cache.len());
    });
}

#[test]
fn a_panicking_loader_releases_everyone_and_caches_nothing() {
    run(async {
        let cache: C = Cache::builder().build();
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
        let gate = Gate::new();
        let leader = {
            let (cache, open) = (cache.clone(), gate.wait());
            tokio::spawn(async move {
                cache
                    .get_with(1, move || async move {
                        entered_tx.send(()).unwrap();
                        open.await;
                        panic!("loader on fire")
                    })
                    .await
            })
        };
        entered_rx.await.unwrap();
        // Followers that have joined the load (each polled once), then handed to the runtime.
        let mut followers = Vec::new();
        for _ in 0..4 {
            let mut call = Box::pin(read_owned(cache.clone(), 1));
            assert!(poll_once(&mut call).is_pending());
            followers.push(tokio::spawn(call));
        }
        gate.open();
        // Loads are shared work: the panic is resumed in whichever caller was polling the load
        // (the one that started it, or a follower); every other caller gets `Aborted`.
        let (mut panicked, mut aborted) = (0, 0);
        for caller in std::iter::once(leader).chain(followers) {
            match caller.await {
                Err(join) => panicked += usize::from(join.is_panic()),
                Ok(read) => aborted += usize::from(read.unwrap_err().is_aborted()),
            }
        }
        assert_eq!((panicked, aborted), (1, 4));
        assert_eq!(cache.peek(&1), None);
        assert_eq!(cache.loading(), 0);
        assert_eq!(*cache.get_with(1, || async { 3 }).await.unwrap().value(), 3);
    });
}

#[test]
fn a_panicking_refresh_leaves_the_stale_value_and_the_reads_carry_on() {
    run(async {
        let clock = Arc::new(ManualClock::new());
        let cache: C = cache(&clock).refresh_after(5 * SEC).build();
        cache.insert(1, 10);
        clock.advance(6 * SEC);
        let read = cache.get_with(1, || async { panic!("refresh on fire") }).await.unwrap();
        assert_eq!((*read.value(), read.served()), (10, Served::Refreshing));
        assert_eq!(cache.peek(&1), Some(10));
        assert_eq!(cache.loading(), 0);
        clock.advance(5 * SEC);
        assert_eq!(*cache.get_with(1, || async { 12 }).await.unwrap().value(), 12);
    });
}

#[test]
fn the_soft_timeout_serves_stale_and_the_load_still_fills_the_cache() {
    run(async {
        let clock = Arc::new(ManualClock::new());
        let (soft, load) = (Gate::new(), Gate::new());
        let cache: C =
            cache(&clock).max_stale(60 * SEC).timer(GateTimer(soft.clone())).soft_timeout(SEC).build();
        let loads = Arc::new(Loads::default());
        cache.insert(1, 10);
        clock.advance(11 * SEC);
        let caller = {
            let (cache, loads, load) = (cache.clone(), loads.clone(), load.clone());
            tokio::spawn(async move { cache.get_with(1, loads.gated(&load, 11)).await })
        };
        until(|| loads.started() == 1).await;
        soft.open();
        let read = caller.await.unwrap().unwrap();
        assert_eq!((*read.value(), read.served()), (10, Served::StaleOnTimeout));
        // Nobody waits for the load now; the entry keeps it, and later reads drive it.
        load.open();
        loop {
            match cache.get_with(1, never).await {
                Ok(read) if *read.value() == 11 => break,
                _ => tokio::task::yield_now().await,
            }
        }
        assert_eq!(loads.started(), 1);
    });
}

#[test]
fn the_hard_timeout_gives_a_typed_error_and_the_load_goes_on_for_the_others() {
    run(async {
        let (hard, load) = (Gate::new(), Gate::new());
        let cache: C =
            Cache::builder().timer(GateTimer(hard.clone())).hard_timeout(SEC).spawner(OnTokio).build();
        let loads = Arc::new(Loads::default());
        let caller = {
            let (cache, loads, load) = (cache.clone(), loads.clone(), load.clone());
            tokio::spawn(async move { cache.get_with(1, loads.gated(&load, 11)).await })
        };
        until(|| loads.started() == 1).await;
        hard.open();
        assert!(caller.await.unwrap().unwrap_err().is_timed_out());
        load.open();
        until(|| cache.peek(&1) == Some(11)).await;
        assert_eq!(loads.started(), 1);
    });
}

#[test]
fn early_refresh_refreshes_a_hot_key_before_it_expires() {
    run(async {
        let clock = Arc::new(ManualClock::new());
        // -ln(0.000_01) is about 11.5: with a 1 s load and beta 1, reads start refreshing
        // about 11.5 s before the expiry.
        let cache: C = cache(&clock).time_to_live(100 * SEC).early_refresh(1.0).random(|| 0.000_01).build();
        let slow = {
            let clock = clock.clone();
            move || async move {
                clock.advance(SEC); // the load takes a second of the test's clock
                1
            }
        };
        let _ = cache.get_with(1, slow).await.unwrap();
        clock.advance(80 * SEC);
        assert_eq!(cache.get_with(1, never).await.unwrap().served(), Served::Fresh);
        clock.advance(10 * SEC); // 91 s: within 11.5 s of the expiry at 101 s
        let read = cache.get_with(1, || async { 2 }).await.unwrap();
        assert_eq!((*read.value(), read.served()), (1, Served::Refreshing));
        let read = cache.get_with(1, never).await.unwrap();
        assert_eq!((*read.value(), read.served()), (2, Served::Fresh));
        assert_eq!(cache.counters().refreshes, 1);
    });
}

#[test]
fn dropping_the_cache_cancels_a_refresh_kept_by_its_entry() {
    run(async {
        let clock = Arc::new(ManualClock::new());
        let cache: C = cache(&clock).refresh_after(5 * SEC).build();
        let loads = Arc::new(Loads::default());
        cache.insert(1, 10);
        clock.advance(6 * SEC);
        let gate = Gate::new();
        assert_eq!(cache.get_with(1, loads.gated(&gate, 11)).await.unwrap().served(), Served::Refreshing);
        assert_eq!(loads.running.load(SeqCst), 1);
        // The refresh's only owner is the entry: dropping the cache drops (cancels) it.
        drop(cache);
        assert_eq!(loads.running.load(SeqCst), 0);
        assert_eq!(loads.finished.load(SeqCst), 0);
    });
}

#[test]
fn a_blocking_read_past_refresh_after_returns_at_once_and_refreshes_on_a_thread() {
    let clock = Arc::new(ManualClock::new());
    let cache: C = cache(&clock).refresh_after(5 * SEC).build();
    cache.insert(1, 10);
    clock.advance(6 * SEC);
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let read = cache
        .get_with_blocking(1, move || {
            go_rx.recv().unwrap(); // the refresh waits for the test; the read does not
            11
        })
        .unwrap();
    assert_eq!((*read.value(), read.served()), (10, Served::Refreshing));
    assert_eq!(
        cache.get_with_blocking(1, || unreachable!("one refresh")).unwrap().served(),
        Served::Refreshing
    );
    go_tx.send(()).unwrap();
    common::until_blocking(|| cache.peek(&1) == Some(11));
    assert_eq!(cache.counters().loads, 1);
}

#[test]
fn the_cache_its_reads_and_its_errors_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let cache: C = Cache::builder().build();
    send_sync(&cache);
    let call = cache.get_with(1, || async { 1 });
    send(&call);
    let blocking_cache = cache.clone();
    let read = std::thread::spawn(move || blocking_cache.get_with_blocking(2, || 2)).join().unwrap();
    send_sync(&read);
    let err: coalescer::cache::Error<String> = coalescer::cache::Error::TimedOut;
    send_sync(&err);
    drop(call);
}

/// Loads and writes race for real (tasks, threads); every `invalidate` and `insert` bumps the
/// key's epoch first, and a load returns the epoch it read after it started. A load that an
/// `invalidate` or `insert` overtook must not write back: so the cache never holds an epoch
/// older than the last completed `invalidate` or `insert` (checked by the writer before each
/// of its operations), and once everyone is done it holds nothing or the last epoch.
#[test]
fn racing_invalidations_and_inserts_never_let_an_overtaken_load_write_back() {
    run(async {
        const KEYS: u32 = 2;
        const ROUNDS: u32 = 2_000;
        let cache: C = Cache::builder().build();
        let epochs: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
        let loader = |epochs: &Arc<Vec<AtomicU64>>, key: u32| {
            let epochs = epochs.clone();
            move || async move {
                let epoch = epochs[key as usize].load(SeqCst);
                for _ in 0..3 {
                    tokio::task::yield_now().await; // in the air for a while
                }
                epoch
            }
        };
        let mut tasks = Vec::new();
        for t in 0..2u32 {
            let (cache, epochs) = (cache.clone(), epochs.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..ROUNDS {
                    let key = (i + t) % KEYS;
                    let _ = cache.get_with(key, loader(&epochs, key)).await.unwrap();
                }
            }));
        }
        let readers: Vec<_> = (0..2u32)
            .map(|t| {
                let (cache, epochs) = (cache.clone(), epochs.clone());
                std::thread::spawn(move || {
                    for i in 0..ROUNDS {
                        let key = (i + t) % KEYS;
                        let epochs = epochs.clone();
                        let load = move || {
                            let epoch = epochs[key as usize].load(SeqCst);
                            std::thread::yield_now();
                            epoch
                        };
                        let _ = cache.get_with_blocking(key, load).unwrap();
                    }
                })
            })
            .collect();
        let writer = {
            let (cache, epochs) = (cache.clone(), epochs.clone());
            std::thread::spawn(move || {
                for i in 0..ROUNDS {
                    let key = i % KEYS;
                    let completed = epochs[key as usize].load(SeqCst);
                    if let Some(held) = cache.peek(&key) {
                        assert!(held >= completed, "key {key}: holds epoch {held}, overtaken at {completed}");
                    }
                    let epoch = epochs[key as usize].fetch_add(1, SeqCst) + 1;
                    if i % 3 == 0 {
                        cache.insert(key, epoch)
                    } else {
                        cache.invalidate(&key)
                    }
                    std::thread::yield_now();
                }
            })
        };
        for task in tasks {
            task.await.unwrap();
        }
        for thread in readers.into_iter().chain([writer]) {
            thread.join().unwrap();
        }
        until(|| cache.loading() == 0).await;
        for key in 0..KEYS {
            let last = epochs[key as usize].load(SeqCst);
            let held = cache.peek(&key);
            assert!(
                held.is_none() || held == Some(last),
                "key {key}: holds {held:?}, the last epoch is {last}"
            );
        }
    });
}

#[test]
fn read_driven_refreshes_keep_a_hot_key_fresh_cycle_after_cycle() {
    run(async {
        let clock = Arc::new(ManualClock::new());
        let cache: C = cache(&clock).refresh_after(5 * SEC).build();
        cache.insert(1, 0);
        for cycle in 1..=5u64 {
            clock.advance(6 * SEC);
            let gate = Gate::new();
            let loads = Arc::new(Loads::default());
            let read = cache.get_with(1, loads.gated(&gate, cycle)).await.unwrap();
            assert_eq!((*read.value(), read.served()), (cycle - 1, Served::Refreshing), "cycle {cycle}");
            gate.open();
            // Later reads drive the refresh to its end without waiting; then the key is fresh.
            loop {
                let read = cache.get_with(1, never).await.unwrap();
                assert!(read.served().is_cached(), "cycle {cycle}: {read:?}");
                if *read.value() == cycle {
                    break;
                }
                tokio::task::yield_now().await;
            }
            assert_eq!(loads.started(), 1, "cycle {cycle}");
        }
        let c = cache.counters();
        assert_eq!((c.refreshes, c.loads, c.misses), (5, 5, 0));
    });
}
