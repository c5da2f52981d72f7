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
