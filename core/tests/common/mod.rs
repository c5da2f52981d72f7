//! Helpers shared by the core's integration tests: a real multi-threaded runtime with a
//! watchdog (a hang fails the test instead of stalling CI), gates that order events without
//! timing, and a probe that counts executions and catches overlapping ones.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// How long a test may run before the watchdog fails it. Not a timing assertion: correct
/// runs take milliseconds; this only turns a deadlock into a failure.
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// Runs `test` on a two-worker multi-threaded tokio runtime, failing it if it hangs.
pub fn run<F: Future<Output = ()> + Send + 'static>(test: F) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        tokio::time::timeout(WATCHDOG, tokio::spawn(test))
            .await
            .expect("watchdog: the test hung")
            .expect("the test task panicked");
    });
}

/// Yields until `cond` holds (ordering events without sleeping for a guessed time).
pub async fn until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::task::yield_now().await;
    }
}

/// Spins a thread until `cond` holds.
pub fn until_blocking(mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < WATCHDOG, "watchdog: condition never held");
        std::thread::yield_now();
    }
}

/// A one-shot gate: `wait` resolves once `open` was called.
#[derive(Clone)]
pub struct Gate(tokio::sync::watch::Sender<bool>);

impl Gate {
    pub fn new() -> Self {
        Self(tokio::sync::watch::channel(false).0)
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }

    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            rx.wait_for(|open| *open).await.expect("gate dropped");
        }
    }
}

/// Counts executions of the work and records whether two ever ran at once.
#[derive(Default)]
pub struct Probe {
    running: AtomicUsize,
    runs: AtomicUsize,
    overlaps: AtomicUsize,
    drops: AtomicUsize,
}

impl Probe {
    /// Marks one execution as running until the returned guard is dropped (finished or
    /// cancelled).
    pub fn enter(&self) -> Running<'_> {
        self.runs.fetch_add(1, SeqCst);
        if self.running.fetch_add(1, SeqCst) > 0 {
            self.overlaps.fetch_add(1, SeqCst);
        }
        Running(self)
    }

    pub fn runs(&self) -> usize {
        self.runs.load(SeqCst)
    }

    pub fn running(&self) -> usize {
        self.running.load(SeqCst)
    }

    pub fn overlaps(&self) -> usize {
        self.overlaps.load(SeqCst)
    }

    /// Executions whose future was dropped (finished or not).
    pub fn drops(&self) -> usize {
        self.drops.load(SeqCst)
    }
}

pub struct Running<'a>(&'a Probe);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, SeqCst);
        self.0.drops.fetch_add(1, SeqCst);
    }
}

/// Polls `fut` once with a waker that does nothing: the caller is "polled once and then never
/// again" unless polled by hand later.
pub fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(Waker::noop()))
}

/// A spawner for detached work on the current tokio runtime whose task handle detaches when
/// dropped (the work runs to its end).
#[derive(Clone, Copy, Debug)]
pub struct Detach;

impl coalescer::Spawn for Detach {
    type Task = ();

    fn spawn<Fut: Future<Output = ()> + Send + 'static>(&self, task: Fut) {
        drop(tokio::spawn(task));
    }

    fn aborts_when_abandoned(&self) -> bool {
        false
    }
}

/// The mode of a test's group (a group's mode is its type; tests that run one scenario in
/// each mode go through [`AnyGroup`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Work,
    Shared,
    Detached,
}

/// A call's future, in any mode.
pub type Call<'a, V> =
    Pin<Box<dyn Future<Output = Result<coalescer::Outcome<V>, coalescer::Aborted>> + Send + 'a>>;

/// A group of `u32` keys in one of the three modes, with one `work` for all (the detached one
/// spawns with [`Detach`]).
pub enum AnyGroup<V> {
    Work(coalescer::Group<u32, V>),
    Shared(coalescer::SharedGroup<u32, V>),
    Detached(std::sync::Arc<coalescer::DetachedGroup<u32, V, Detach>>),
}

impl<V: Clone + Send + Sync + 'static> AnyGroup<V> {
    pub fn new(mode: Mode) -> std::sync::Arc<Self> {
        let group = coalescer::Group::new();
        std::sync::Arc::new(match mode {
            Mode::Work => Self::Work(group),
            Mode::Shared => Self::Shared(group.shared()),
            Mode::Detached => Self::Detached(std::sync::Arc::new(group.detached(Detach))),
        })
    }

    pub fn work<F, Fut>(&self, key: u32, work: F) -> Call<'_, V>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        match self {
            Self::Work(g) => Box::pin(async move { g.work(&key, work).await }),
            Self::Shared(g) => Box::pin(async move { g.work(&key, work).await }),
            Self::Detached(g) => Box::pin(async move { g.work(&key, work).await }),
        }
    }

    pub fn work_blocking(
        &self,
        key: u32,
        work: impl FnOnce() -> V,
    ) -> Result<coalescer::Outcome<V>, coalescer::Aborted> {
        match self {
            Self::Work(g) => g.work_blocking(&key, work),
            Self::Shared(g) => g.work_blocking(&key, work),
            Self::Detached(g) => g.work_blocking(&key, work),
        }
    }

    pub fn counters(&self) -> coalescer::Counters {
        match self {
            Self::Work(g) => g.counters(),
            Self::Shared(g) => g.counters(),
            Self::Detached(g) => g.counters(),
        }
    }

    pub fn is_idle(&self) -> bool {
        match self {
            Self::Work(g) => g.is_idle(),
            Self::Shared(g) => g.is_idle(),
            Self::Detached(g) => g.is_idle(),
        }
    }

    pub fn in_flight(&self) -> usize {
        match self {
            Self::Work(g) => g.in_flight(),
            Self::Shared(g) => g.in_flight(),
            Self::Detached(g) => g.in_flight(),
        }
    }

    pub fn forget(&self, key: u32) -> bool {
        match self {
            Self::Work(g) => g.forget(&key),
            Self::Shared(g) => g.forget(&key),
            Self::Detached(g) => g.forget(&key),
        }
    }
}

type Held = std::sync::Arc<std::sync::Mutex<Vec<Pin<Box<dyn Future<Output = ()> + Send>>>>>;

/// A detaching spawner (`coalescer::Spawn`) that keeps its tasks, boxed, for the test to poll
/// by hand.
#[derive(Clone, Default)]
pub struct Hold(Held);

impl coalescer::Spawn for Hold {
    type Task = ();
    fn spawn<Fut: Future<Output = ()> + Send + 'static>(&self, task: Fut) {
        self.0.lock().unwrap().push(Box::pin(task));
    }
    fn aborts_when_abandoned(&self) -> bool {
        false
    }
}

impl Hold {
    /// A spawner whose list of tasks has room for `n` (keeping them allocates nothing more).
    pub fn with_capacity(n: usize) -> Self {
        Self(Held::new(std::sync::Mutex::new(Vec::with_capacity(n))))
    }

    /// Polls the last task spawned to its end (its work is ready at once).
    pub fn run_task(&self) {
        let mut task = self.0.lock().unwrap().pop().expect("a task was spawned");
        let mut cx = Context::from_waker(Waker::noop());
        assert!(task.as_mut().poll(&mut cx).is_ready(), "the work is ready at once");
    }
}
